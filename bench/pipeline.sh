#!/usr/bin/env bash
# The whole pipeline on the Kaggle files within a wall-clock budget: now one `digit-search auto` call.
#
#   bench/pipeline.sh [DATA_DIR] [more auto options]   # default DATA_DIR ../shared/data/digit-recognizer
#
# Environment overrides: BUDGET [1h], STORAGE [sqlite:///studies/pipeline.db], OUT [bench/out/submission.csv].
set -euo pipefail

data_dir=$(realpath -m "${1:-$(dirname "$0")/../../shared/data/digit-recognizer}")  # before cd: $1 is the caller's
shift || true
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/submission.csv}
mkdir -p "$(dirname "$OUT")"
exec .venv/bin/digit-search auto --budget "${BUDGET:-1h}" --data "$data_dir" \
    --storage "${STORAGE:-sqlite:///studies/pipeline.db}" --out "$OUT" "$@"
