"""Inline SVG charts generated in Python: the report opens offline, with no script library or CDN.

Each function returns one `<svg>` element (viewBox-scaled, so it fits any width). Long series are
thinned to at most MAX_POINTS points, always keeping the first and last.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Sequence

import numpy as np

W, H = 900, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 26, 34
MAX_POINTS = 1500
COLORS = ("#1f5fbf", "#d9822b", "#6b7785", "#2e9e5b", "#c23b3b", "#7d4fb3")


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _thin(n: int) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.unique(np.append(np.linspace(0, n - 1, MAX_POINTS).astype(int), n - 1))


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= step * m)
    return [v for v in np.arange(math.ceil(lo / step) * step, hi + step * 1e-9, step)]


def _range(values: Sequence[np.ndarray], zero: bool = False) -> tuple[float, float]:
    finite = np.concatenate([v[np.isfinite(v)] for v in values] + [np.array([0.0] if zero else [])])
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


def _frame(
    title: str,
    body: str,
    y_lo: float,
    y_hi: float,
    fmt: str,
    extra: str = "",
    ticks: Sequence[tuple[float, str]] | None = None,
) -> str:
    """The chart's box: title, horizontal grid lines with labels (`ticks`: (y, label) pairs in the
    axis' own units, default: round values formatted with `fmt`), then `body` and `extra`."""
    ys = lambda v: TOP + (H - TOP - BOTTOM) * (1 - (v - y_lo) / (y_hi - y_lo))  # noqa: E731
    if ticks is None:
        ticks = [(v, format(v, fmt)) for v in _ticks(y_lo, y_hi)]
    grid = "".join(
        f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{ys(v):.1f}" y2="{ys(v):.1f}" class="grid"/>'
        f'<text x="{LEFT - 6}" y="{ys(v) + 4:.1f}" text-anchor="end">{_esc(label)}</text>'
        for v, label in ticks
    )
    return (
        f'<svg viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_esc(title)}">'
        f'<text x="{LEFT}" y="16" class="title">{_esc(title)}</text>{grid}{body}{extra}</svg>'
    )


def _log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Grid lines of a log10 axis spanning log10 values lo..hi: 1-2-5 steps over up to three
    decades, decades beyond; labels in the original units (0.5, 1, 2, 10, 100)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [(lo, format(10**lo, ".3g"))] if math.isfinite(lo) else []
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    steps = (1, 2, 5) if hi - lo <= 3 else (1,)
    values = [m * 10.0**d for d in decades for m in steps]
    if hi - lo < 0.5:  # a narrow range: round values of the original units
        values = [v for v in _ticks(10**lo, 10**hi) if v > 0]
    every = max(1, math.ceil(len([v for v in values if lo <= math.log10(v) <= hi]) / 8))
    inside = [v for v in values if lo <= math.log10(v) <= hi][::every]
    return [(math.log10(v), format(v, ".3g")) for v in inside]


def _time_axis(x: np.ndarray) -> tuple[callable, str]:
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo or 1.0
    xs = lambda v: LEFT + (W - LEFT - RIGHT) * (v - lo) / span  # noqa: E731
    anchors = ("start", "middle", "middle", "middle", "end")
    labels = "".join(
        f'<text x="{xs(v):.1f}" y="{H - 12}" '
        f'text-anchor="{a}">{dt.datetime.fromtimestamp(v, dt.timezone.utc):%Y-%m-%d}</text>'
        for v, a in zip(np.linspace(lo, hi, 5), anchors)
    )
    return xs, labels


def line_chart(
    title: str,
    x: np.ndarray,
    series: dict[str, np.ndarray],
    fmt: str = ".2f",
    ticks: Sequence[float] = (),
    fill: bool = False,
    log: bool = False,
    areas: Sequence[str] = (),
) -> str:
    """Lines over time; `x` in epoch seconds; `ticks` are short light marks on the time axis (e.g.
    walk-forward fold starts: a full-height line per fold would curtain the chart). `log` draws the
    y axis on a log scale (equity curves that compound over decades); values <= 0 are not drawn.
    `fill` shades every series down to 0; `areas` names series drawn only as a light area from 0,
    behind the lines, so a line that coincides with it never hides it (gross under net exposure)."""
    keep = _thin(x.size)
    x = x[keep]
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            series = {name: np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan) for name, v in series.items()}
    y_lo, y_hi = _range([v[keep] for v in series.values()], zero=fill or bool(areas))
    xs, axis = _time_axis(x)
    ys = lambda v: TOP + (H - TOP - BOTTOM) * (1 - (v - y_lo) / (y_hi - y_lo))  # noqa: E731
    body, legend = [], []
    for i, (name, values) in enumerate(series.items()):
        v = values[keep]
        ok = np.isfinite(v)
        points = " ".join(f"{xs(a):.1f},{ys(b):.1f}" for a, b in zip(x[ok], v[ok]))
        color = COLORS[i % len(COLORS)]
        if (fill or name in areas) and ok.any():
            body.insert(
                0,
                f'<polygon points="{xs(x[ok][0]):.1f},{ys(0):.1f} {points} {xs(x[ok][-1]):.1f},{ys(0):.1f}" '
                f'fill="{color}" opacity="0.25"/>',
            )
        if name not in areas:
            body.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        legend.append(
            f'<text x="{W - RIGHT - 10 - 150 * i}" y="16" text-anchor="end" fill="{color}">■ {_esc(name)}</text>'
        )
    marks = "".join(
        f'<line x1="{xs(t):.1f}" x2="{xs(t):.1f}" y1="{H - BOTTOM - 7}" y2="{H - BOTTOM}" class="fold-tick"/>'
        for t in ticks
    )
    y_ticks = _log_ticks(y_lo, y_hi) if log else None
    return _frame(title, "".join(body) + marks, y_lo, y_hi, fmt, axis + "".join(legend), y_ticks)


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], fmt: str = ".3f") -> str:
    """Vertical bars from zero, negative bars in red."""
    v = np.array([np.nan if x is None else x for x in values], dtype=float)
    y_lo, y_hi = _range([v], zero=True)
    ys = lambda a: TOP + (H - TOP - BOTTOM) * (1 - (a - y_lo) / (y_hi - y_lo))  # noqa: E731
    slot = (W - LEFT - RIGHT) / max(len(labels), 1)
    bars = []
    for i, (label, value) in enumerate(zip(labels, v)):
        x = LEFT + i * slot + slot * 0.15
        if math.isfinite(value):
            top, bottom = sorted((ys(value), ys(0.0)))
            color = COLORS[0] if value >= 0 else COLORS[4]
            bars.append(
                f'<rect x="{x:.1f}" y="{top:.1f}" width="{slot * 0.7:.1f}" '
                f'height="{max(bottom - top, 0.5):.1f}" '
                f'fill="{color}"><title>{_esc(label)}: '
                f"{_esc(format(value, fmt))}</title></rect>"
            )
        bars.append(f'<text x="{x + slot * 0.35:.1f}" y="{H - 12}" text-anchor="middle">{_esc(label)}</text>')
    return _frame(title, "".join(bars), y_lo, y_hi, fmt)


def hbar_chart(title: str, labels: Sequence[str], values: Sequence[float]) -> str:
    """Horizontal bars (feature importance), largest first."""
    height = TOP + 18 * len(labels) + 10
    top = max(values) if values else 1.0
    label_w = 220
    rows = []
    for i, (label, value) in enumerate(zip(labels, values)):
        y = TOP + 18 * i
        width = (W - label_w - RIGHT - 60) * (value / top if top else 0)
        rows.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{_esc(label)}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{max(width, 0.5):.1f}" height="13" fill="{COLORS[0]}"/>'
            f'<text x="{label_w + width + 4:.1f}" y="{y + 12}">{value:.3g}</text>'
        )
    return (
        f'<svg viewBox="0 0 {W} {height}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_esc(title)}">'
        f'<text x="{LEFT}" y="16" class="title">{_esc(title)}</text>{"".join(rows)}</svg>'
    )


def heatmap(title: str, rows: Sequence[str], cols: Sequence[str], values: np.ndarray, fmt: str = ".1%") -> str:
    """A table of colored cells: green positive, red negative, white 0; NaN cells left blank."""
    cell_w, cell_h, label_w = (W - 80) / max(len(cols), 1), 22, 60
    height = TOP + 20 + cell_h * len(rows) + 8
    scale = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    cells = [
        f'<text x="{label_w + cell_w * (j + 0.5):.1f}" y="{TOP + 12}" text-anchor="middle">{_esc(c)}</text>'
        for j, c in enumerate(cols)
    ]
    for i, row in enumerate(rows):
        y = TOP + 20 + cell_h * i
        cells.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_esc(row)}</text>')
        for j in range(len(cols)):
            v = values[i, j]
            if not math.isfinite(v):
                continue
            a = min(abs(v) / scale, 1.0) if scale else 0.0
            color = f"rgba(46,158,91,{a:.2f})" if v >= 0 else f"rgba(194,59,59,{a:.2f})"
            x = label_w + cell_w * j
            cells.append(
                f'<rect x="{x:.1f}" y="{y}" width="{cell_w - 2:.1f}" '
                f'height="{cell_h - 2}" fill="{color}" stroke="#ddd"/>'
                f'<text x="{x + cell_w / 2:.1f}" y="{y + 15}" text-anchor="middle">{_esc(format(v, fmt))}</text>'
            )
    return (
        f'<svg viewBox="0 0 {W} {height}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_esc(title)}">'
        f'<text x="{LEFT}" y="16" class="title">{_esc(title)}</text>{"".join(cells)}</svg>'
    )
