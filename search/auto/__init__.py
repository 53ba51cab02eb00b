"""Stage 7, the budgeted `auto` command: references, a search that shares the budget by results, the ensemble, the final training."""
