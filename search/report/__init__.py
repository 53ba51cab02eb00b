"""Stage 6, looking at studies: the report's data, figures and page, and optuna-dashboard."""
