#!/usr/bin/env bash
# Here, where pip reaches PyPI: what bench/gpu.sh needs on the GPU machine, in two git-ignored folders
# of the checkout that a device `run` carries (the checkout's untracked-but-ignored files never travel
# otherwise, nor does ../shared):
#   .whl/       cp312 manylinux wheels of the packages the GPU machine lacks, at this venv's versions
#               (its image has torch, numpy, pandas, pillow, safetensors, MarkupSafe, PyYAML, tqdm,
#               typing_extensions, packaging and narwhals, per /work/.library/device/KINDS.md; plotly
#               only because `import search.api` loads the report stage);
#   .gpu-data/  Kaggle's train.csv(.gz) and test.csv(.gz), from DATA_DIR.
# Then it checks that the tree, the wheels and the data stay under the 64 MiB that travels.
#
#   bash bench/gpu_prepare.sh [DATA_DIR]        # default /work/shared/data/digit-recognizer
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${1:-/work/shared/data/digit-recognizer}
PACKAGES=(optuna SQLAlchemy alembic Mako colorlog plotly)  # SQLAlchemy 2.1 needs greenlet only for asyncio
LIMIT_BYTES=$((64 * 1024 * 1024))

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for folder in /.whl/ /.gpu-data/; do
  grep -qxF "$folder" "$exclude" 2>/dev/null || echo "$folder" >> "$exclude"
done

pins=()
for package in "${PACKAGES[@]}"; do
  version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$package") \
    || { echo "gpu_prepare.sh: error: $package is not installed in $PYTHON's environment" >&2; exit 2; }
  pins+=("$package==$version")
done
rm -rf .whl
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"

mkdir -p .gpu-data
for name in train test; do
  source=""
  for suffix in .csv.gz .csv; do
    if [ -f "$DATA_DIR/$name$suffix" ]; then source="$DATA_DIR/$name$suffix"; break; fi
  done
  [ -n "$source" ] || { echo "gpu_prepare.sh: error: no $name.csv(.gz) in $DATA_DIR" >&2; exit 2; }
  cp "$source" .gpu-data/
done

# what a `run` sends: tracked and untracked-not-ignored files, plus the carried folders
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
wheels=$(du -sb .whl | cut -f1)
data=$(du -sb .gpu-data | cut -f1)
total=$((tree + wheels + data))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
ls -1 .whl .gpu-data
echo "travels: tree $(mib "$tree") + .whl $(mib "$wheels") + .gpu-data $(mib "$data") = $(mib "$total") of $(mib "$LIMIT_BYTES")"
if [ "$total" -ge "$LIMIT_BYTES" ]; then
  echo "gpu_prepare.sh: error: over the 64 MiB a device run carries" >&2
  exit 1
fi
