"""Stage 5, from trials to a submission: candidates, selection, saved ensembles, the submission, predictions."""
