"""Stage 4, running a study's trials: in this process, or on Ray workers; the `run` command."""
