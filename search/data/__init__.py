"""Stage 1, the digits: Kaggle's CSV files or the embedded sample, their cache, the validation split, and single images."""
