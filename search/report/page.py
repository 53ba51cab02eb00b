"""One self-contained HTML page: plotly.js inlined once, every figure, the tables and the digit gallery.

The page loads nothing from the network, so it can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from html import escape

import numpy as np
import plotly.graph_objects as go
import plotly.offline
from PIL import Image

from search.report import figures as draw
from search.report.data import EnsembleData, StudyData, TrialPoint, best_per_family, by_family

PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class Report:
    """What the page shows; everything in it is already collected."""

    generated: str  # UTC time
    storage: str  # redacted URL
    studies: list[StudyData]
    points: list[TrialPoint]  # completed trials of every study
    compute: dict[str, dict[str, float]]  # study -> state -> seconds
    ensemble: EnsembleData | None
    ensemble_note: str  # why there is no ensemble section, or where it came from
    table_file: str  # the CSV written beside the page


def render_page(report: Report) -> str:
    """The whole page as one HTML string."""
    families = [p.family for p in report.points]
    colors = draw.family_colors(families)
    figures = _Figures()
    body = [
        _header(report),
        _overview(report, colors, figures),
        _ensemble_section(report.ensemble, report.ensemble_note, figures),
        *(_study_section(study, colors, figures) for study in report.studies),
    ]
    title = f"digit-search report {report.generated}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{escape(title)}</title>\n'
        f'<style>{STYLE}</style>\n<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>\n</head>\n'
        f"<body>\n<main>\n{''.join(body)}</main>\n</body>\n</html>\n"
    )


class _Figures:
    """Turns figures into divs with unique ids (plotly.js is on the page once, in the head)."""

    def __init__(self) -> None:
        self.count = 0

    def div(self, figure: go.Figure) -> str:
        self.count += 1
        return figure.to_html(
            full_html=False, include_plotlyjs=False, div_id=f"figure-{self.count}", config=PLOT_CONFIG
        )


def _card(title: str, content: str, caption: str = "", wide: bool = False) -> str:
    caption_html = f'<p class="caption">{escape(caption)}</p>' if caption else ""
    return f'<div class="card{" wide" if wide else ""}"><h3>{escape(title)}</h3>{caption_html}{content}</div>\n'


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    numeric = ' class="num"'
    head = "".join(f"<th{numeric if i >= numeric_from else ''}>{escape(h)}</th>" for i, h in enumerate(header))
    lines = []
    for row in rows:
        cells = "".join(f"<td{numeric if i >= numeric_from else ''}>{cell}</td>" for i, cell in enumerate(row))
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _header(report: Report) -> str:
    links = ['<a href="#overview">across studies</a>', '<a href="#ensemble">ensemble</a>']
    links += [f'<a href="#{_anchor(s.name)}">{escape(s.name)}</a>' for s in report.studies]
    return (
        "<header><h1>digit-search report</h1>"
        f'<p class="meta">{escape(report.storage)} &middot; generated {escape(report.generated)} &middot; '
        f'{len(report.studies)} studies &middot; trials table: <a href="{escape(report.table_file)}">{escape(report.table_file)}</a></p>'
        f"<nav>{' '.join(links)}</nav></header>\n"
    )


def _anchor(name: str) -> str:
    return "study-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _overview(report: Report, colors: dict[str, str], figures: _Figures) -> str:
    rows = []
    for study in report.studies:
        counts, best = study.counts, study.best
        spent = sum(report.compute.get(study.name, {}).values())
        attrs = study.attrs
        rows.append(
            [
                f'<a href="#{_anchor(study.name)}">{escape(study.name)}</a>',
                escape(str(attrs.get("space", "?"))),
                escape(_data_summary(attrs)),
                str(counts["complete"]),
                str(counts["pruned"]),
                str(counts["fail"]),
                "&ndash;" if best is None else f"{best[1]:.2%} (trial {best[0]})",
                _duration(spent),
            ]
        )
    table = _table(
        ["study", "space", "data", "complete", "pruned", "failed", "best val accuracy", "trial time"],
        rows,
        numeric_from=3,
    )
    cards = [_card("Studies", table, wide=True)]
    if report.points:
        best = best_per_family(report.points)
        groups = by_family(report.points)
        cards += [
            _card(
                "Best validation accuracy per family",
                figures.div(draw.best_family_figure(best, colors)),
                "the best completed trial of each family over all studies",
            ),
            _card(
                "Accuracy against parameter count",
                figures.div(draw.accuracy_scatter_figure(groups, colors, "params", "parameters (log)")),
            ),
            _card(
                "Accuracy against training time",
                figures.div(draw.accuracy_scatter_figure(groups, colors, "train_seconds", "training seconds (log)")),
            ),
        ]
    else:
        cards.append(
            _card(
                "Accuracy by family",
                _note("no study has a completed trial yet; run digit-search run to fill these figures"),
            )
        )
    counts = {s.name: s.counts for s in report.studies}
    if any(sum(c.values()) for c in counts.values()):
        cards.append(
            _card(
                "Trial states",
                figures.div(draw.states_figure(counts)),
                "complete, pruned (screened out on a cheap rung, or stopped at an epoch), or failed",
            )
        )
        cards.append(
            _card(
                "Compute spent",
                figures.div(draw.compute_figure(report.compute)),
                "wall-clock time of finished trials, by how they ended",
            )
        )
    else:
        cards.append(_card("Trial states and compute", _note("the studies have no trials yet")))
    return f'<section id="overview"><h2>Across studies</h2><div class="grid">{"".join(cards)}</div></section>\n'


def _ensemble_section(ensemble: EnsembleData | None, note: str, figures: _Figures) -> str:
    if ensemble is None:
        return f'<section id="ensemble"><h2>Ensemble</h2>{_note(note)}</section>\n'
    header = (
        f'<p class="meta">{escape(ensemble.directory)} &middot; {escape(ensemble.method)}'
        f"{' with test-time augmentation' if ensemble.tta else ''} &middot; created {escape(ensemble.created)} &middot; "
        f"validation accuracy <b>{ensemble.accuracy:.2%}</b> on {ensemble.digits} digits ({ensemble.wrong} wrong)</p>"
    )
    if note:
        header += _note(note)
    members = _table(
        ["study", "trial", "family", "weight", "val accuracy"],
        [
            [
                escape(m.study),
                str(m.trial),
                escape(m.family),
                f"{m.weight:.3f}",
                "&ndash;" if m.val_accuracy is None else f"{m.val_accuracy:.2%}",
            ]
            for m in ensemble.members
        ],
        numeric_from=3,
    )
    scores = _table(
        ["digit", "precision", "recall", "F1", "support"],
        [
            [str(s.digit), _percent(s.precision), _percent(s.recall), _percent(s.f1), str(s.support)]
            for s in ensemble.scores
        ],
    )
    cards = [
        _card(
            "Confusion matrix",
            figures.div(draw.confusion_figure(ensemble.confusion)),
            "validation digits: true class (rows) against the ensemble's prediction (columns)",
        ),
        _card("Per-class precision, recall and F1", figures.div(draw.class_scores_figure(ensemble.scores))),
        _card(
            "Members",
            members,
            "ensemble weights (they sum to 1); a trial picked twice by greedy selection has twice the weight",
        ),
        _card("Per-class scores", scores),
        _card(
            "Misclassified validation digits",
            _gallery(ensemble),
            f"the {len(ensemble.mistakes)} most confident of {ensemble.wrong} mistakes: true label, prediction and its probability",
            wide=True,
        ),
    ]
    return f'<section id="ensemble"><h2>Ensemble</h2>{header}<div class="grid">{"".join(cards)}</div></section>\n'


def _gallery(ensemble: EnsembleData) -> str:
    if not ensemble.mistakes:
        return _note("no validation digit is misclassified")
    tiles = []
    for mistake, image in zip(ensemble.mistakes, ensemble.mistake_images):
        tiles.append(
            f'<figure class="digit"><img alt="validation digit {mistake.index}" src="{png_data_uri(image)}">'
            f'<figcaption><span class="true">{mistake.label}</span> &rarr; <span class="wrong">{mistake.predicted}</span> '
            f"{mistake.probability:.0%}<br><small>p({mistake.label}) {mistake.label_probability:.0%} &middot; #{mistake.index}</small></figcaption></figure>"
        )
    return f'<div class="gallery">{"".join(tiles)}</div>'


def png_data_uri(image: np.ndarray) -> str:
    """A (28, 28) uint8 image as an inline PNG (the page scales it up, pixelated)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _study_section(study: StudyData, colors: dict[str, str], figures: _Figures) -> str:
    missing = study.missing
    attrs = study.attrs
    counts = ", ".join(f"{n} {state}" for state, n in study.counts.items() if n) or "no trials"
    best = study.best
    meta = (
        f"space {escape(str(attrs.get('space', '?')))} &middot; {escape(counts)}"
        + ("" if best is None else f" &middot; best {best[1]:.2%} (trial {best[0]})")
        + f" &middot; data {escape(str(attrs.get('data_hash', '?'))[:12])}, split {escape(str(attrs.get('split', '?')))}"
    )
    parts = [
        ("history", "Optimisation history", lambda: draw.history_figure(study.history, colors), "", False),
        (
            "curves",
            "Learning curves",
            lambda: draw.curves_figure(study.curves),
            "validation accuracy per epoch, or per rung with --pruner rungs; pruned trials stop early",
            False,
        ),
        (
            "parallel",
            "Parallel coordinates",
            lambda: draw.parallel_figure(study.parallel),
            "completed trials over the most important parameters that every trial has; drag along an axis to filter",
            True,
        ),
        ("importances", "Hyperparameter importances", lambda: draw.importance_figure(study.importances), "", False),
        (
            "slices",
            "Slice plot",
            lambda: draw.slice_figure(study.slices),
            "validation accuracy against each of the most important parameters",
            False,
        ),
    ]
    drawn = {key for key, *_ in parts if getattr(study, key)}
    cards = [
        _card(title, figures.div(draw_part()), caption, wide)
        for key, title, draw_part, caption, wide in parts
        if key in drawn
    ]
    # A figure with nothing to draw is one line under the cards, not a card as tall as its neighbours.
    absent = _absent([(title, missing.get(key, "nothing to show")) for key, title, *_ in parts if key not in drawn])
    return f'<section id="{_anchor(study.name)}"><h2>Study {escape(study.name)}</h2><p class="meta">{meta}</p><div class="grid">{"".join(cards)}</div>{absent}</section>\n'


def _absent(parts: list[tuple[str, str]]) -> str:
    """Figures not drawn and why, one line per reason (a study without trials gives five figures one reason)."""
    by_reason: dict[str, list[str]] = {}
    for title, reason in parts:
        by_reason.setdefault(reason, []).append(title)
    lines = [f"<li><b>{escape(', '.join(titles))}</b>: {escape(reason)}</li>" for reason, titles in by_reason.items()]
    return f'<div class="absent note"><ul>{"".join(lines)}</ul></div>' if lines else ""


def _data_summary(attrs: dict) -> str:
    if "data_source" not in attrs:
        return "not recorded"
    return f"{attrs['data_source']}, {attrs.get('train_rows', '?')} train / {attrs.get('val_rows', '?')} val"


def _percent(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:.2%}"


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes / 60:.1f} h" if minutes >= 120 else f"{minutes:.1f} min"


STYLE = """
body { margin: 0; background: #f4f5f7; color: #1d1f23; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
main { max-width: 1440px; margin: 0 auto; padding: 0 20px 40px; }
header { position: sticky; top: 0; z-index: 10; background: #f4f5f7; padding: 14px 0 8px; border-bottom: 1px solid #d9dce1; }
h1 { margin: 0; font-size: 22px; }
h2 { margin: 28px 0 6px; font-size: 19px; }
h3 { margin: 0 0 4px; font-size: 15px; }
nav a { margin-right: 12px; }
a { color: #1f5fc4; text-decoration: none; } a:hover { text-decoration: underline; }
.meta { color: #555; margin: 2px 0 10px; }
/* auto-fill, not auto-fit: a figure drawn while the page is still parsing must already get its final column width */
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 14px; align-items: start; }  /* a short card stays short */
.card { background: #fff; border: 1px solid #dfe2e6; border-radius: 8px; padding: 12px 14px; min-width: 0; }
.card.wide { grid-column: 1 / -1; }
.caption { color: #666; margin: 0 0 6px; font-size: 12.5px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 10px 12px; margin: 6px 0; }
.absent { margin-top: 14px; } .absent ul { margin: 0; padding-left: 18px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eceef1; text-align: left; }
td.num, th.num { text-align: right; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.digit { margin: 0; width: 92px; text-align: center; font-size: 12px; }
.digit img { width: 84px; height: 84px; image-rendering: pixelated; border-radius: 4px; display: block; margin: 0 auto 2px; }
.digit .true { color: #2ca02c; font-weight: 600; } .digit .wrong { color: #d62728; font-weight: 600; }
.digit small { color: #777; }
"""
