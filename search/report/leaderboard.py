"""`digit-search leaderboard`: the studies and their best trials in the terminal, best first, or as JSON for scripts.

The standings are plain data built from the trials the report reads (`load_studies`) and ranked as
the report ranks families (`best_by`); this module only lays them out.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from search.config import LeaderboardSpec
from search.report.build import LoadedStudy, load_studies
from search.report.data import TrialPoint, best_by, count_text, plain_float, trial_points
from search.study.states import STATES, count_states
from search.study.storage import parse_storage_url, redacted


@dataclass(frozen=True)
class Standing:
    """One study: its trial counts by state and its best completed trial (None before one completes)."""

    study: str
    space: str | None
    counts: dict[str, int]
    best: TrialPoint | None

    def as_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "study": self.study,
            "space": self.space,
            "counts": dict(self.counts),
            "best": None
            if best is None
            else {
                "trial": best.number,
                "family": best.family,
                "val_accuracy": float(plain_float(best.value)),  # 0.7725, not float32's 0.7724999785423279
                "params": best.params,
                "train_seconds": best.train_seconds,
            },
        }


@dataclass(frozen=True)
class Leaderboard:
    """The standings of the studies in one database, best first; studies without a completed trial last."""

    storage: str  # redacted URL
    standings: list[Standing]

    def as_dict(self) -> dict[str, Any]:
        return {"storage": self.storage, "studies": [s.as_dict() for s in self.standings]}

    def to_json(self) -> str:
        """One JSON document (one line) for scripts."""
        return json.dumps(self.as_dict())

    def table(self) -> str:
        """An aligned text table, one line per study, for the terminal."""
        header = ["study", "trial", "family", "val acc", "params", "train s", *STATES]
        rows = []
        for standing in self.standings:
            best = standing.best
            if best is None:
                cells = [standing.study, "-", "-", "-", "-", "-"]
            else:
                seconds = "?" if best.train_seconds is None else f"{best.train_seconds:.0f}"
                cells = [
                    standing.study,
                    f"#{best.number}",
                    best.family,
                    f"{best.value:.2%}",
                    count_text(best.params),
                    seconds,
                ]
            rows.append([*cells, *(str(standing.counts[state]) for state in STATES)])
        return aligned(header, rows, text_columns=3)


def standings(studies: list[LoadedStudy]) -> list[Standing]:
    """Each study's counts and best trial, the study with the best validation accuracy first."""
    ranked = best_by(trial_points({s.name: s.trials for s in studies}), lambda p: p.study)
    order = {point.study: i for i, point in enumerate(ranked)}
    best = {point.study: point for point in ranked}
    found = [Standing(s.name, s.attrs.get("space"), count_states(s.trials), best.get(s.name)) for s in studies]
    return sorted(found, key=lambda s: (order.get(s.study, len(order)), s.study))


def aligned(header: list[str], rows: list[list[str]], text_columns: int) -> str:
    """Columns padded to their widest cell: the first `text_columns` left-aligned, numbers right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "  ".join(padded).rstrip()

    return "".join(f"{line(cells)}\n" for cells in [header, *rows])


def run_leaderboard(spec: LeaderboardSpec, out: TextIO | None = None) -> Leaderboard:
    """Read the studies (default: all) once, print their standings as a table or JSON, and return them."""
    out = out or sys.stdout
    board = Leaderboard(redacted(parse_storage_url(spec.storage)), standings(load_studies(spec)))
    out.write(board.to_json() + "\n" if spec.as_json else board.table())
    return board
