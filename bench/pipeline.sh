#!/usr/bin/env bash
# The whole pipeline on the Kaggle files within a wall-clock budget: one pruned search per space,
# then a greedy ensemble of their top trials -> submission.csv. Prints the validation accuracy of
# the best single trial next to the ensemble's.
#
#   bench/pipeline.sh [DATA_DIR]          # default ../shared/data/digit-recognizer (from the repo root)
#
# Environment overrides (defaults in brackets):
#   BUDGET_MINUTES [60]  wall clock for everything, searches and ensemble
#   SPACES ["cnn resnet stn vit"]  searched in this order; a space's unused time passes to the next
#   EPOCHS [6]  most epochs per trial (Hyperband prunes the rest)
#   LIMIT []  keep only the first LIMIT training rows (smoke runs)
#   THREADS [2]  CPU threads per search
#   RESERVE_SECONDS [180]  kept back for the ensemble step
#   TRIAL_SHARE [30]  % of a space's slot one trial may train before it is pruned (--trial-timeout)
#   STORAGE [sqlite:///studies/pipeline.db]   OUT [bench/out/submission.csv]   TTA [] (1: --tta)
set -euo pipefail

data_dir=$(realpath -m "${1:-$(dirname "$0")/../../shared/data/digit-recognizer}")  # before cd: $1 is the caller's
cd "$(dirname "$0")/.."

BUDGET_MINUTES=${BUDGET_MINUTES:-60}
SPACES=${SPACES:-cnn resnet stn vit}
EPOCHS=${EPOCHS:-6}
LIMIT=${LIMIT:-}
THREADS=${THREADS:-2}
STORAGE=${STORAGE:-sqlite:///studies/pipeline.db}
OUT=${OUT:-bench/out/submission.csv}
TTA=${TTA:-}
PYTHON=.venv/bin/python
RESERVE_SECONDS=${RESERVE_SECONDS:-180}  # kept back for the ensemble step
START_SHARE=70        # % of a space's slot in which new trials may start; the rest lets the last one finish
TRIAL_SHARE=${TRIAL_SHARE:-30}  # an oversized sampled model (a full-resolution resnet) once took a whole slot

limit_args=()
[ -n "$LIMIT" ] && limit_args=(--limit "$LIMIT")
mkdir -p "$(dirname "$OUT")"
budget=$((BUDGET_MINUTES * 60))
read -r -a spaces <<<"$SPACES"
started=$SECONDS

for i in "${!spaces[@]}"; do
    space=${spaces[$i]}
    left=$((budget - RESERVE_SECONDS - (SECONDS - started)))
    slot=$((left / (${#spaces[@]} - i)))
    if [ "$slot" -lt 30 ]; then
        echo "== $space: skipped, the budget is spent"
        continue
    fi
    echo "== $space: ${slot}s (new trials for the first $((slot * START_SHARE / 100))s, each pruned after $((slot * TRIAL_SHARE / 100))s)"
    # --timeout stops starting trials; `timeout` interrupts a trial still running when the slot ends
    # (Ctrl-C semantics: finished trials stay in the study, the run resumes next time).
    timeout --signal=INT --kill-after=30 "$slot" \
        "$PYTHON" -m search.cli run --space "$space" --trials 1000 --epochs "$EPOCHS" --data "$data_dir" \
        "${limit_args[@]}" --storage "$STORAGE" --threads "$THREADS" --timeout "$((slot * START_SHARE / 100))" \
        --trial-timeout "$((slot * TRIAL_SHARE / 100))" \
        || echo "== $space: run ended with exit $? (124 or 130: its slot ran out)"
done

# Only studies holding a completed trial can take part.
studies=$("$PYTHON" - "$STORAGE" "${spaces[@]}" <<'EOF'
import sys, warnings
import optuna
warnings.simplefilter("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)
storage, names = sys.argv[1], sys.argv[2:]
known = set(optuna.get_all_study_names(storage))
done = [n for n in names if n in known and any(t.state.name == "COMPLETE" for t in optuna.load_study(study_name=n, storage=storage).trials)]
print(",".join(done))
EOF
)
if [ -z "$studies" ]; then
    echo "no study completed a trial within ${BUDGET_MINUTES} minutes; raise BUDGET_MINUTES or set LIMIT" >&2
    exit 1
fi

tta_args=()
[ -n "$TTA" ] && tta_args=(--tta)
echo "== ensemble of $studies"
"$PYTHON" -m search.cli ensemble --studies "$studies" --data "$data_dir" "${limit_args[@]}" --storage "$STORAGE" \
    --threads "$THREADS" --out "$OUT" "${tta_args[@]}"

"$PYTHON" - "$OUT" "$((SECONDS - started))" <<'EOF'
import json, sys
from pathlib import Path
lineage = json.loads(Path(sys.argv[1]).with_suffix(".json").read_text())
v = lineage["validation"]
print(f"\npipeline: {int(sys.argv[2]) // 60} min, studies {', '.join(lineage['studies'])}, {v['digits']} validation digits")
print(f"  best single trial  val accuracy {v['best']['accuracy']:.4%}  log-loss {v['best']['log_loss']:.4f}")
print(f"  uniform average    val accuracy {v['average']['accuracy']:.4%}  log-loss {v['average']['log_loss']:.4f}")
print(f"  greedy ensemble    val accuracy {v['greedy']['accuracy']:.4%}  log-loss {v['greedy']['log_loss']:.4f}  ({len(lineage['members'])} member(s))")
print(f"  submission: {sys.argv[1]} ({lineage['rows']} rows)")
EOF
