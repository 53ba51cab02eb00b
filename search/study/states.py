"""Trial states as the project counts and shows them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what --trials counts
# Every state, in the order reports and summaries show them.
STATES = ("complete", "pruned", "fail", "running", "waiting")


def state_name(state: TrialState) -> str:
    return state.name.lower()


def count_states(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Number of trials in each state, every state in STATES present (zero if none)."""
    counts = Counter(state_name(t.state) for t in trials)
    return {state: counts.get(state, 0) for state in STATES}
