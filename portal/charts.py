"""Server-drawn SVG charts for the admin dashboard: no script, no third-party assets."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

from portal.store.dashboard import DayCounts

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28
NICE_STEPS = (1, 2, 3, 4, 5, 6, 8)


def nice_ceiling(value: int) -> int:
    """Return the least round number (1, 2, 3, 4, 5, 6 or 8 times a power of ten) >= `value`."""
    scale = 1
    while True:
        for step in NICE_STEPS:
            if step * scale >= value:
                return step * scale
        scale *= 10


def daily_chart(series: Sequence[DayCounts]) -> Markup:
    """Draw submissions as one bar per day, and verified and failed as lines with a point each.

    The numbers are shown as a table next to it (templates/admin/dashboard.html): the SVG's
    title and desc only summarise them.
    """
    top = nice_ceiling(max((max(d.submitted, d.verified, d.failed) for d in series), default=0))
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_width / max(len(series), 1)

    def x(index: int) -> float:
        return LEFT + step * (index + 0.5)

    def y(value: int) -> float:
        return TOP + plot_height * (1 - value / top)

    parts = [_header(series), *_grid(top, y)]
    parts.append('<g class="chart-bars">')
    for index, day in enumerate(series):
        parts.append(
            f'<rect class="bar bar-submitted" x="{x(index) - step * 0.35:.1f}" '
            f'y="{y(day.submitted):.1f}" width="{step * 0.7:.1f}" '
            f'height="{plot_height * day.submitted / top:.1f}">'
            f"<title>{day.day.isoformat()}: {day.submitted} submitted</title></rect>"
        )
    parts.append("</g>")
    # Failed is drawn dashed and with smaller points over verified, so where the two are equal
    # both stay visible, and they differ by more than colour.
    for name, radius in (("verified", 3.5), ("failed", 2.5)):
        points = [(x(i), y(getattr(day, name))) for i, day in enumerate(series)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline class="line line-{name}" fill="none" points="{path}"/>')
        parts.append(f'<g class="chart-points points-{name}">')
        for (px, py), day in zip(points, series, strict=True):
            parts.append(
                f'<circle class="point point-{name}" cx="{px:.1f}" cy="{py:.1f}" r="{radius}">'
                f"<title>{day.day.isoformat()}: {getattr(day, name)} {name}</title></circle>"
            )
        parts.append("</g>")
    parts.extend(_x_labels(series, x))
    parts.append("</svg>")
    # Safe to mark as markup here, the one place it is: the SVG holds only numbers, ISO dates
    # and fixed words, and the title/desc text goes through escape() in _header.
    return Markup("".join(parts))


def _header(series: Sequence[DayCounts]) -> str:
    first = series[0].day.isoformat() if series else ""
    last = series[-1].day.isoformat() if series else ""
    title = f"Submissions and outcomes per day, {first} to {last}"
    desc = (
        f"{sum(d.submitted for d in series)} submitted, {sum(d.verified for d in series)} "
        f"verified and {sum(d.failed for d in series)} failed over {len(series)} days. "
        "Bars are submissions; lines are verified and failed decisions. "
        "The table after the chart has every number."
    )
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'role="img" aria-labelledby="chart-title chart-desc">'
        f'<title id="chart-title">{escape(title)}</title>'
        f'<desc id="chart-desc">{escape(desc)}</desc>'
    )


def _grid(top: int, y: Callable[[int], float]) -> list[str]:
    # A middle line only where it is a whole number: 0, 2, 5 would space the labels unevenly.
    ticks = [0, top // 2, top] if top % 2 == 0 else [0, top]
    parts = ['<g class="chart-grid">']
    for tick in ticks:
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    parts.append("</g>")
    return parts


def _x_labels(series: Sequence[DayCounts], x: Callable[[int], float]) -> list[str]:
    if not series:
        return []
    picks = sorted({0, len(series) // 2, len(series) - 1})
    parts = ['<g class="chart-axis">']
    for index in picks:
        parts.append(
            f'<text x="{x(index):.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
            f"{series[index].day.strftime('%b %d')}</text>"
        )
    parts.append("</g>")
    return parts
