"""The report's figures: plotly drawings of the plain data that `report_data` collects.

Each function takes data and returns a figure; none reads trials or storage. A family keeps one
colour in every figure of a report.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.colors import qualitative, sequential
from plotly.subplots import make_subplots

from search.report.data import (
    STATES,
    Axis,
    ClassScore,
    Curves,
    History,
    Importances,
    Parallel,
    Slice,
    TrialPoint,
    count_text,
)

HEIGHT = 380
MAX_IMPORTANCE_BARS = 20
SLICE_COLUMNS = 2
STATE_COLORS = {
    "complete": "#2a6fdb",
    "pruned": "#e8833a",
    "fail": "#d62728",
    "running": "#2ca02c",
    "waiting": "#9e9e9e",
}
ACCURACY_AXIS = {"tickformat": ".1%", "title": "validation accuracy"}
MIN_ACCURACY_MARGIN = 0.01
MAX_UNIT_TICKS = 12  # an axis spanning fewer trials or epochs labels every one
# Slice markers coloured by trial number: Blues without its near-white end, so trial 0 stays visible on white.
TRIAL_COLORSCALE = [[i / (len(sequential.Blues[5:]) - 1), color] for i, color in enumerate(sequential.Blues[5:])]


def accuracy_range(values: list[float | None]) -> list[float]:
    """A validation-accuracy axis around `values` inside [0, 1], never a flat line's empty ±50%.

    A margin of a tenth of the spread (at least one point of accuracy) keeps markers off the edges.
    """
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return [0.0, 1.0]
    low, high = min(present), max(present)
    margin = max(0.1 * (high - low), MIN_ACCURACY_MARGIN)
    return [max(0.0, low - margin), min(1.0, high + margin)]


def step_axis(steps: list[int | None], title: str) -> dict:
    """An axis of whole numbers (trials, epochs) from half a step before the first to after the last: one trial is not -1 to 1."""
    present = [s for s in steps if s is not None]
    low, high = (min(present), max(present)) if present else (0, 1)
    margin = max(0.5, 0.02 * (high - low))
    axis = {"title": title, "range": [low - margin, high + margin], "tick0": 0}
    if high - low <= MAX_UNIT_TICKS:
        axis["dtick"] = 1  # else plotly picks round steps, and never halves of a trial
    return axis


def family_colors(families: list[str]) -> dict[str, str]:
    """A colour per family, stable for a given set of families (name order)."""
    palette = qualitative.D3
    return {family: palette[i % len(palette)] for i, family in enumerate(sorted(set(families)))}


def _layout(figure: go.Figure, height: int = HEIGHT, **kwargs) -> go.Figure:
    defaults = {
        "template": "plotly_white",
        "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        "font": {"size": 12},
    }
    figure.update_layout(height=height, **{**defaults, **kwargs})
    return figure


def history_figure(history: History, colors: dict[str, str]) -> go.Figure:
    """Each completed trial's validation accuracy by trial number, and the best so far."""
    figure = go.Figure()
    families = sorted(set(history.families))
    for family in families:
        picked = [i for i, f in enumerate(history.families) if f == family]
        figure.add_trace(
            go.Scatter(
                x=[history.numbers[i] for i in picked],
                y=[history.values[i] for i in picked],
                mode="markers",
                name=family if len(families) > 1 else "completed trial",
                marker={"color": colors.get(family), "size": 6, "opacity": 0.75},
                hovertemplate="trial %{x}<br>%{y:.2%}<extra>" + family + "</extra>",
            )
        )
    figure.add_trace(
        go.Scatter(
            x=history.numbers,
            y=history.best,
            mode="lines",
            line={"shape": "hv", "color": "#222", "width": 2},
            name="best so far",
            hoverinfo="skip",
        )
    )
    return _layout(
        figure,
        xaxis=step_axis(history.numbers, "trial"),
        yaxis={**ACCURACY_AXIS, "range": accuracy_range(history.values)},
    )


def curves_figure(curves: dict[str, Curves]) -> go.Figure:
    """Validation accuracy per epoch of every trial, one colour per state, pruned trials included."""
    figure = go.Figure()
    for state, curve in curves.items():
        # Thin, translucent lines keep thousands of overlapping curves readable.
        opacity = 0.8 if curve.trials < 30 else 0.35
        figure.add_trace(
            go.Scatter(
                x=curve.epochs,
                y=curve.values,
                text=[None if n is None else f"trial {n}" for n in curve.numbers],
                mode="lines+markers" if curve.trials < 30 else "lines",
                name=f"{state} ({curve.trials})",
                line={"color": STATE_COLORS.get(state, "#777"), "width": 1.2},
                marker={"size": 4},
                opacity=opacity,
                connectgaps=False,
                hovertemplate="%{text}<br>step %{x}: %{y:.2%}<extra>" + state + "</extra>",
            )
        )
    epochs = [e for curve in curves.values() for e in curve.epochs]
    values = [v for curve in curves.values() for v in curve.values]
    return _layout(
        figure,
        xaxis=step_axis(epochs, "epoch, or rung (1, 3, 9: 1/9, 1/3, all of the images)"),
        yaxis={**ACCURACY_AXIS, "range": accuracy_range(values)},
    )


def importance_figure(importances: Importances) -> go.Figure:
    """Horizontal bars, the most important parameter on top."""
    names = importances.names[:MAX_IMPORTANCE_BARS][::-1]
    values = importances.values[:MAX_IMPORTANCE_BARS][::-1]
    figure = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker={"color": "#2a6fdb"},
            text=[f"{v:.2f}" for v in values],
            textposition="outside",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    height = 26 * len(names) + 90  # as tall as its bars: a few parameters make a short card, not a blank panel
    title = f"importance (PED-ANOVA, {importances.trials} completed trials)"
    return _layout(
        figure,
        height=height,
        xaxis={"title": title, "range": [0, max(values) * 1.15 if values else 1]},
        yaxis={"automargin": True},
    )


def log_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """Round ticks (1, 2, 5 times a power of ten, thinned to at most `most`) between low and high > 0."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks: list[float] = []
    for multipliers in ((1, 2, 5), (1, 3), (1,)):
        ticks = [float(f"{m * 10.0**k:.6g}") for k in decades for m in multipliers if low <= m * 10.0**k <= high]
        if len(ticks) <= most:
            break
    if len(ticks) > most:
        ticks = ticks[:: math.ceil(len(ticks) / most)]
    if len(ticks) < 2:  # a range inside one decade: label its ends too
        ticks = sorted({float(f"{low:.3g}"), *ticks, float(f"{high:.3g}")})
    return ticks


def tick_text(value: float) -> str:
    """Short tick labels: 1e-4, 0.01, 300, 20k, 3M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}".replace("e-0", "e-")


def _dimension(axis: Axis) -> dict:
    if axis.labels is not None:
        # every choice on the axis, sampled or not, or an unsampled one's tick falls off it
        return {
            "label": axis.name,
            "values": axis.values,
            "tickvals": axis.ticks,
            "ticktext": axis.labels,
            "range": [0, max(len(axis.labels) - 1, 1)],
        }
    if axis.log and min(axis.values) > 0:
        # Parcoords has no log axis: plot log10 and label the ticks with the real values. Its axis
        # line spans only the ticks, so the ends are ticks too.
        low, high = min(axis.values), max(axis.values)
        inner = [t for t in log_ticks(low, high) if low * 1.25 < t < high / 1.25]
        ticks = [low, *inner, high] if high > low else [low]
        return {
            "label": axis.name,
            "values": [math.log10(v) for v in axis.values],
            "tickvals": [math.log10(t) for t in ticks],
            "ticktext": [tick_text(float(f"{t:.2g}")) for t in ticks],
        }
    return {"label": axis.name, "values": axis.values}


def parallel_figure(parallel: Parallel) -> go.Figure:
    """Parallel coordinates: the objective, then each param, lines coloured by the objective."""
    dimensions = [{"label": "val accuracy", "values": parallel.objective, "tickformat": ".1%"}] + [
        _dimension(a) for a in parallel.axes
    ]
    figure = go.Figure(
        go.Parcoords(
            dimensions=dimensions,
            line={
                "color": parallel.objective,
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": "val acc", "tickformat": ".0%"},
            },
            labelangle=-20,
            labelside="bottom",
        )
    )
    return _layout(figure, height=HEIGHT + 40, margin={"l": 70, "r": 70, "t": 40, "b": 90})


def slice_figure(slices: list[Slice]) -> go.Figure:
    """One panel per param: validation accuracy against the param's value, coloured by trial number."""
    columns = min(SLICE_COLUMNS, len(slices))
    rows = math.ceil(len(slices) / columns)
    figure = make_subplots(
        rows=rows, cols=columns, shared_yaxes=True, horizontal_spacing=0.04, vertical_spacing=min(0.3, 0.5 / rows)
    )
    last_number = max(max(s.numbers) for s in slices)
    for i, part in enumerate(slices):
        row, col = i // columns + 1, i % columns + 1
        figure.add_trace(
            go.Scatter(
                x=part.axis.values,
                y=part.objective,
                mode="markers",
                marker={
                    "size": 5,
                    "color": part.numbers,
                    "colorscale": TRIAL_COLORSCALE,
                    "cmin": 0,
                    "cmax": max(last_number, 1),
                    "showscale": i == 0,
                    "colorbar": {"title": "trial"},
                    "line": {"width": 0.5, "color": "#555"},
                },
                text=[f"trial {n}" for n in part.numbers],
                hovertemplate="%{text}<br>%{x}: %{y:.2%}<extra></extra>",
                showlegend=False,
            ),
            row=row,
            col=col,
        )
        xaxis: dict = {"title": {"text": part.axis.name, "font": {"size": 11}}}
        if part.axis.labels is not None:
            xaxis.update(tickvals=part.axis.ticks, ticktext=part.axis.labels)
        elif part.axis.log and min(part.axis.values) > 0:
            ticks = log_ticks(min(part.axis.values), max(part.axis.values), most=4)  # plotly's own crowd a small panel
            xaxis.update(type="log", tickvals=ticks, ticktext=[tick_text(t) for t in ticks])
        figure.update_xaxes(row=row, col=col, **xaxis)
    figure.update_yaxes(tickformat=".0%", range=accuracy_range([v for part in slices for v in part.objective]))
    figure.update_yaxes(title_text="val accuracy", col=1)
    return _layout(figure, height=max(HEIGHT, 240 * rows + 60))


def best_family_figure(best: list[TrialPoint], colors: dict[str, str]) -> go.Figure:
    """The best validation accuracy each family reached, labelled with its trial."""
    figure = go.Figure(
        go.Bar(
            x=[p.family for p in best],
            y=[p.value for p in best],
            marker={"color": [colors.get(p.family) for p in best]},
            text=[f"{p.value:.2%}" for p in best],
            textposition="outside",
            customdata=[[p.label, count_text(p.params)] for p in best],
            hovertemplate="%{x}: %{y:.2%}<br>%{customdata[0]}, %{customdata[1]} parameters<extra></extra>",
        )
    )
    # bars start at 0, or their heights would misstate the gaps; the labels carry the differences
    return _layout(figure, xaxis={"title": "family"}, yaxis={**ACCURACY_AXIS, "range": [0.0, 1.08]})


def accuracy_scatter_figure(
    groups: dict[str, list[TrialPoint]], colors: dict[str, str], attribute: str, title: str
) -> go.Figure:
    """Validation accuracy against a trial attribute (parameter count, training seconds), log x."""
    figure = go.Figure()
    for family, points in groups.items():
        having = [p for p in points if getattr(p, attribute) is not None]
        if not having:
            continue
        figure.add_trace(
            go.Scatter(
                x=[getattr(p, attribute) for p in having],
                y=[p.value for p in having],
                mode="markers",
                name=family,
                marker={"color": colors.get(family), "size": 7, "opacity": 0.75},
                text=[p.label for p in having],
                hovertemplate="%{text}<br>%{x:,.0f}: %{y:.2%}<extra>" + family + "</extra>",
            )
        )
    xs = [getattr(p, attribute) for points in groups.values() for p in points if getattr(p, attribute)]
    xaxis = {"title": title, "type": "log"}
    if xs and min(xs) > 0:
        ticks = log_ticks(min(xs), max(xs), most=6)
        xaxis.update(tickvals=ticks, ticktext=[tick_text(t) for t in ticks])
    values = [p.value for points in groups.values() for p in points if getattr(p, attribute) is not None]
    return _layout(figure, xaxis=xaxis, yaxis={**ACCURACY_AXIS, "range": accuracy_range(values)})


def states_figure(counts: dict[str, dict[str, int]]) -> go.Figure:
    """Stacked bars: trials per state, one bar per study."""
    studies = list(counts)
    figure = go.Figure()
    for state in STATES:
        values = [counts[s].get(state, 0) for s in studies]
        if any(values):
            figure.add_trace(
                go.Bar(
                    x=studies,
                    y=values,
                    name=state,
                    marker={"color": STATE_COLORS[state]},
                    hovertemplate="%{x}: %{y} " + state + "<extra></extra>",
                )
            )
    return _layout(figure, barmode="stack", xaxis={"title": "study"}, yaxis={"title": "trials"})


def compute_figure(seconds: dict[str, dict[str, float]]) -> go.Figure:
    """Stacked bars: wall-clock time the trials of each study took, by how they ended."""
    studies = list(seconds)
    largest = max((sum(parts.values()) for parts in seconds.values()), default=0.0)
    unit, scale = ("hours", 3600.0) if largest >= 3 * 3600 else ("minutes", 60.0)
    figure = go.Figure()
    for state in ("complete", "pruned", "fail"):
        values = [seconds[s].get(state, 0.0) / scale for s in studies]
        if any(values):
            figure.add_trace(
                go.Bar(
                    x=studies,
                    y=values,
                    name=state,
                    marker={"color": STATE_COLORS[state]},
                    hovertemplate="%{x}: %{y:.1f} " + unit + " " + state + "<extra></extra>",
                )
            )
    return _layout(figure, barmode="stack", xaxis={"title": "study"}, yaxis={"title": f"trial time ({unit})"})


def confusion_figure(confusion: list[list[int]]) -> go.Figure:
    """Counts of true class (rows) against predicted class (columns); the diagonal is correct."""
    digits = [str(d) for d in range(len(confusion))]
    figure = go.Figure(
        go.Heatmap(
            z=confusion,
            x=digits,
            y=digits,
            colorscale="Blues",
            texttemplate="%{z}",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
            showscale=False,
        )
    )
    return _layout(
        figure,
        height=460,
        xaxis={"title": "predicted", "side": "top", "constrain": "domain"},
        yaxis={"title": "true", "autorange": "reversed", "scaleanchor": "x"},
        margin={"l": 60, "r": 20, "t": 60, "b": 20},
    )


def class_scores_figure(scores: list[ClassScore]) -> go.Figure:
    """Precision, recall and F1 per digit."""
    digits = [str(s.digit) for s in scores]
    figure = go.Figure()
    for name, color in (("precision", "#2a6fdb"), ("recall", "#e8833a"), ("f1", "#2ca02c")):
        values = [getattr(s, name) for s in scores]
        figure.add_trace(
            go.Bar(
                x=digits,
                y=values,
                name=name,
                marker={"color": color},
                hovertemplate="digit %{x}: %{y:.2%}<extra>" + name + "</extra>",
            )
        )
    # bars start at 0, or a class at 84% would look like a failure beside one at 99%; the table beside gives the figures
    return _layout(
        figure, height=460, barmode="group", xaxis={"title": "digit"}, yaxis={"tickformat": ".0%", "range": [0.0, 1.0]}
    )
