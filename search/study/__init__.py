"""Stage 3, one trial in a study: the objective, sampler and pruner, storage, artifacts and progress."""
