#!/usr/bin/env bash
# bench/gpu.py on the GPU machine, which has torch but not Optuna, SQLAlchemy or plotly and reaches no
# package index: installs the wheels carried in .whl/ (bench/gpu_prepare.sh fetched them) into a
# --target folder, puts it and the checkout on PYTHONPATH, then runs gpu.py with these arguments.
#
#   bash bench/gpu.sh --out "$OUT"                    # the full run, ~7.5 min on one H200
#   bash bench/gpu.sh --out /tmp/dry --device cpu --quick    # the dry run, here
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi  # the GPU machine's python3 holds torch
fi
SITE=${DIGIT_SEARCH_SITE:-/tmp/digit-search-site}

if ! "$PYTHON" -c "import optuna, sqlalchemy, plotly" 2>/dev/null; then
  shopt -s nullglob
  wheels=(.whl/*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "gpu.sh: error: optuna, sqlalchemy or plotly is not importable and .whl/ holds no wheels; run bench/gpu_prepare.sh where pip works and carry .whl" >&2
    exit 2
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" \
    || { echo "gpu.sh: error: installing the ${#wheels[@]} wheels of .whl/ into $SITE failed (see above)" >&2; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" bench/gpu.py "$@"
