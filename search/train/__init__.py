"""Stage 2, training one model: the trainer, batched augmentation, devices, and the data as device tensors."""
