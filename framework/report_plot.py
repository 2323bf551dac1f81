"""Loss curves as inline SVG, drawn from a run's `csv_logs/metrics.csv` (no plotting library needed).

`read_series(csv_path)` reads every numeric column of Lightning's CSV log as (step, value) pairs;
`curve_svg(name, points)` draws one series as a small chart: the values in a light line, their running
mean in a dark one once there are many points, a log-10 axis when the values are positive and span more
than two decades, the first and last step on the x axis. framework/report.py lays the charts out.
"""
from __future__ import annotations

import csv
import math
from html import escape
from pathlib import Path

WIDTH, HEIGHT = 320, 180
LEFT, RIGHT, TOP, BOTTOM = 54, 10, 24, 26  # margins for the axis labels and the title
MAX_POINTS = 600  # longer series are thinned to about this many points (every k-th one)
LOG_SPAN = 100.0  # max / min above which a positive series gets a log axis

Series = list[tuple[float, float]]


def read_series(csv_path: Path) -> dict[str, Series]:
    """{column: [(step, value), ...]} of every column with at least one finite number, rows without a
    step skipped, in file order. A missing or unreadable file gives {}."""
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    series: dict[str, Series] = {}
    for row in rows:
        step = number(row.get("step"))
        if step is None:
            continue
        for key, text in row.items():
            if key in (None, "step", "epoch"):
                continue
            value = number(text)
            if value is not None:
                series.setdefault(key, []).append((step, value))
    return series


def number(text: object) -> float | None:
    """A finite float from a CSV cell, else None (empty cells, nan, inf, words)."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def loss_names(series: dict[str, Series]) -> list[str]:
    """The training losses to plot: `train/loss` (the weighted total) first, then each `train/loss_<term>`."""
    names = [k for k in series if k == "train/loss" or k.startswith("train/loss_")]
    return sorted(names, key=lambda k: (k != "train/loss", k))


def thinned(points: Series, limit: int = MAX_POINTS) -> Series:
    """Every k-th point (the last one kept) so that at most about `limit` remain."""
    if len(points) <= limit:
        return points
    k = math.ceil(len(points) / limit)
    kept = points[::k]
    return kept if kept[-1] == points[-1] else [*kept, points[-1]]


def running_mean(values: list[float], window: int) -> list[float]:
    """The mean of each value and the `window - 1` before it (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def label(value: float) -> str:
    return f"{value:.3g}"


def curve_svg(name: str, points: Series) -> str:
    """One series as an SVG chart of WIDTH x HEIGHT (a 'no data' box for an empty series)."""
    title = f'<text x="{LEFT}" y="15" class="title">{escape(name)}</text>'
    if not points:
        body = f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="axis">no data</text>'
        return svg(title + body, name)
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    low, high = min(values), max(values)
    log = low > 0 and high / low > LOG_SPAN
    scale = (lambda v: math.log10(v)) if log else (lambda v: v)
    y0, y1 = scale(low), scale(high)
    if y1 - y0 < 1e-12:  # a constant series: a flat line in the middle
        y0, y1 = y0 - 1.0, y1 + 1.0
    x0, x1 = min(steps), max(steps)
    if x1 == x0:
        x0, x1 = x0 - 1.0, x1 + 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(step: float, value: float) -> str:
        x = LEFT + (step - x0) / (x1 - x0) * plot_w
        y = TOP + (1.0 - (scale(value) - y0) / (y1 - y0)) * plot_h
        return f"{x:.1f},{y:.1f}"

    shown = thinned(points)
    parts = [title, f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>']
    many = len(points) >= 50  # then the raw values are a light line under their running mean
    parts.append(f'<polyline class="{"raw" if many else "mean"}" points="{" ".join(xy(s, v) for s, v in shown)}"/>')
    if many:
        mean = running_mean(values, max(5, len(values) // 25))
        smooth = thinned(list(zip(steps, mean)))
        parts.append(f'<polyline class="mean" points="{" ".join(xy(s, v) for s, v in smooth)}"/>')
    elif len(points) < 10:
        parts += [f'<circle class="dot" r="2.5" cx="{c.split(",")[0]}" cy="{c.split(",")[1]}"/>' for c in (xy(s, v) for s, v in points)]
    top_value, bottom_value = (10**y1, 10**y0) if log else (y1, y0)
    parts += [
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end" class="axis">{label(top_value)}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" class="axis">{label(bottom_value)}</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 8}" class="axis">{label(x0 if len(set(steps)) > 1 else steps[0])}</text>',
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end" class="axis">step {label(max(steps))}</text>',
    ]
    if log:
        parts.append(f'<text x="{WIDTH - RIGHT}" y="15" text-anchor="end" class="axis">log scale</text>')
    parts.append(f'<text x="{WIDTH - RIGHT - 4}" y="{TOP + 14}" text-anchor="end" class="last">last {label(values[-1])}</text>')
    return svg("".join(parts), name)


def svg(body: str, name: str) -> str:
    return (
        f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(name)}">{body}</svg>'
    )


# The charts' look, for the page's <style> (framework/report.py).
CURVE_CSS = """
svg.curve { background: #fff; border: 1px solid #e3e6eb; border-radius: 6px; }
svg.curve .title { font: 600 12px system-ui, sans-serif; fill: #1d2330; }
svg.curve .axis { font: 10px system-ui, sans-serif; fill: #6b7280; }
svg.curve .last { font: 10px system-ui, sans-serif; fill: #1f4fbf; }
svg.curve .frame { fill: #fafbfc; stroke: #d6dae1; }
svg.curve .raw { fill: none; stroke: #9db7f0; stroke-width: 1; }
svg.curve .mean { fill: none; stroke: #1f4fbf; stroke-width: 1.8; }
svg.curve .dot { fill: #1f4fbf; }
"""
