"""Server-side SVG charts for the console: no CDN, no script, readable at any width (they scale to their box)."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Sequence

PALETTE = ("#2f6fb0", "#d9822b", "#3a9a5b", "#c0392b", "#8e44ad", "#7f8c8d", "#b7950b", "#16a085")
WIDTH, HEIGHT, PAD_L, PAD_B, PAD_T, PAD_R = 640, 220, 56, 28, 10, 12


def _label(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).strftime("%m-%d %H:%M")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _frame(title: str, y_max: float, y_unit: str, body: list[str], x_labels: list[tuple[float, str]]) -> str:
    plot_h = HEIGHT - PAD_B - PAD_T
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'preserveAspectRatio="xMidYMid meet"><title>{escape(title)}</title>']
    for i in range(5):
        y = PAD_T + plot_h * i / 4
        value = y_max * (4 - i) / 4
        parts.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
                     f'{value:,.0f}{escape(y_unit)}</text>')
    for x, label in x_labels:
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" class="axis" text-anchor="middle">{escape(label)}</text>')
    parts += body
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, points: Sequence[tuple[int, float]], y_unit: str = "") -> str:
    """`points`: (bucket start in epoch seconds, value), in time order."""
    if not points:
        return f'<p class="empty">{escape(title)}: no data yet</p>'
    y_max = _nice_max(max(v for _, v in points))
    first, last = points[0][0], points[-1][0]
    span = max(1, last - first)
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_B - PAD_T

    def xy(at: int, value: float) -> tuple[float, float]:
        return PAD_L + plot_w * (at - first) / span, PAD_T + plot_h * (1 - value / y_max)

    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(h, v) for h, v in points))
    body = [f'<polyline points="{path}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>']
    if len(points) == 1:
        x, y = xy(*points[0])
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{PALETTE[0]}"/>')
    labels = [(xy(first, 0)[0], _label(first))] + ([(xy(last, 0)[0], _label(last))] if last != first else [])
    return _frame(title, y_max, y_unit, body, labels)


def stacked_bars(title: str, hours: Sequence[int], series: dict[str, Sequence[int]]) -> str:
    """Per time bucket (`hours`: bucket starts in epoch seconds), one bar stacked by series (e.g. relabel
    triggers by cause), with a legend."""
    if not hours:
        return f'<p class="empty">{escape(title)}: none yet</p>'
    totals = [sum(values[i] for values in series.values()) for i in range(len(hours))]
    y_max = _nice_max(max(totals))
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_B - PAD_T
    slot = plot_w / len(hours)
    body = []
    for i in range(len(hours)):
        base = 0
        for colour, values in zip(PALETTE, series.values()):
            if values[i]:
                y0 = PAD_T + plot_h * (1 - (base + values[i]) / y_max)
                height = plot_h * values[i] / y_max
                body.append(f'<rect x="{PAD_L + i * slot + slot * 0.1:.1f}" y="{y0:.1f}" width="{slot * 0.8:.1f}" '
                            f'height="{height:.1f}" fill="{colour}"><title>{_label(hours[i])}: '
                            f'{values[i]}</title></rect>')
                base += values[i]
    labels = [(PAD_L + slot / 2, _label(hours[0]))]
    if len(hours) > 1:
        labels.append((PAD_L + (len(hours) - 0.5) * slot, _label(hours[-1])))
    chart = _frame(title, y_max, "", body, labels)
    legend = "".join(f'<span class="key"><i style="background:{colour}"></i>{escape(name)}</span>'
                     for colour, name in zip(PALETTE, series))
    return chart + f'<div class="legend">{legend}</div>'
