"""The report's charts, drawn as inline SVG text: a job timeline and the spend over time.

batchpod draws them itself rather than through a charting library: three kinds of shape
(bars, a stacked area, a step line) on a time axis are a few hundred lines, and the page
then needs no script at all, so it opens from disk or a mail attachment, offline, under a
Content-Security-Policy that forbids every fetch and every script.

Every text from the results file is escaped; every shape is drawn in a fixed-size view box
that the page scales. The number of shapes is bounded whatever the number of jobs: up to
``PER_JOB_MAX`` jobs get a row each; more are drawn as the number of jobs in each phase over
``SLICES`` slices of the run (``_phases.occupancy``), with the jobs finished so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any, TypeGuard

from batchpod.budget import usd
from batchpod.report._phases import PHASES, JobPhases, Window, epoch, finished_by, occupancy
from batchpod.report._values import line

#: Up to this many jobs the timeline has a row per job; above it, it is aggregated.
PER_JOB_MAX = 120
#: Slices of the run an aggregated timeline (and the spend line) is drawn in.
SLICES = 240

PHASE_COLOURS = {"waiting": "#c3c9d5", "at_audiopod": "#3d6fd6", "downloading": "#2f9e6e"}
PHASE_LABELS = {"waiting": "waiting", "at_audiopod": "at AudioPod", "downloading": "downloading"}
STATUS_COLOURS = {
    "succeeded": "#2f9e6e",
    "completed": "#5aa9a0",
    "failed": "#d64545",
    "skipped": "#9aa0aa",
    "interrupted": "#e07b30",
    "expired": "#d9a21b",
    "unknown": "#8a5cc7",
}
FINISHED_COLOUR = "#22262e"

_WIDTH = 960
_AXIS = 28  # below the plot: tick labels and the axis title
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def timeline_svg(phases: Sequence[JobPhases], span: Window) -> str:
    """The timeline of ``phases`` (see the module docstring for which kind)."""
    if len(phases) <= PER_JOB_MAX:
        return _per_job(phases, span)
    return _aggregated(phases, span)


def _per_job(phases: Sequence[JobPhases], span: Window) -> str:
    left, right, top = 190, 36, 6
    row = 16 if len(phases) <= 40 else 10 if len(phases) <= 80 else 7
    plot_w, plot_h = _WIDTH - left - right, max(row, row * len(phases))
    height = top + plot_h + _AXIS
    x = _scale(span.length, left, plot_w)
    parts = [_open(height, f"Timeline of {len(phases)} jobs: waiting, at AudioPod, downloading")]
    parts += _time_axis(span, x, top, plot_h)
    for n, job in enumerate(phases):
        y = top + n * row
        colour = STATUS_COLOURS.get(job.status, "#666")
        name = line(job.name)
        label = name if len(name) <= 28 else name[:27] + "\u2026"
        if row >= 10:
            parts.append(
                f'<text x="{left - 16}" y="{y + row * 0.72:.1f}" text-anchor="end" '
                f'font-size="{min(12, row - 2)}">{escape(label)}</text>'
            )
        parts.append(
            f'<rect x="{left - 11}" y="{y + row * 0.25:.1f}" width="6" height="{row * 0.5:.1f}" '
            f'fill="{colour}"><title>{escape(name)}: {escape(job.status)}</title></rect>'
        )
        for phase in PHASES:
            interval = job.span(phase)
            if interval is None:
                continue
            a, b = interval
            parts.append(
                f'<rect x="{x(a):.1f}" y="{y + 1}" width="{max(1.0, x(b) - x(a)):.1f}" '
                f'height="{row - 2}" fill="{PHASE_COLOURS[phase]}"><title>{escape(name)}: '
                f"{PHASE_LABELS[phase]} {_clock(a)} to {_clock(b)}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _aggregated(phases: Sequence[JobPhases], span: Window) -> str:
    """Two panels on one time axis: the jobs at AudioPod and downloading, stacked; below, the
    jobs waiting for their submit and the jobs finished, as lines."""
    left, right, top, gap, panel = 70, 36, 20, 34, 170
    plot_w = _WIDTH - left - right
    top2 = top + panel + gap
    height = top2 + panel + _AXIS
    x = _scale(span.length, left, plot_w)
    counts = occupancy(phases, span, SLICES)
    width = span.length / SLICES
    mids = [(k + 0.5) * width for k in range(SLICES)]
    parts = [_open(height, f"Timeline of {len(phases)} jobs, aggregated")]
    parts += _time_axis(span, x, top, top2 + panel - top)
    # In flight, stacked: at AudioPod below, downloading above.
    low = counts["at_audiopod"]
    high = [a + b for a, b in zip(low, counts["downloading"], strict=True)]
    peak = _ceiling(max(max(high, default=0.0), 1.0))
    y1 = _scale_down(peak, top, panel)
    parts += _count_axis(peak, y1, left, plot_w, "in flight")
    parts.append(_area(mids, [0.0] * SLICES, low, x, y1, "at_audiopod"))
    parts.append(_area(mids, low, high, x, y1, "downloading"))
    # Waiting (not yet submitted) and finished, out of every job drawn.
    total = _ceiling(max(float(len(phases)), 1.0))
    y2 = _scale_down(total, top2, panel)
    parts += _count_axis(total, y2, left, plot_w, "jobs")
    waiting = counts["waiting"]
    parts.append(_steps(mids, waiting, x, y2, PHASE_COLOURS["waiting"], "waiting", 3))
    finished = [float(n) for n in finished_by(phases, span, SLICES)]
    ends = [(k + 1) * width for k in range(SLICES)]
    parts.append(_steps(ends, finished, x, y2, FINISHED_COLOUR, "finished", 2))
    parts.append("</svg>")
    return "".join(parts)


def spend_svg(jobs: Sequence[Mapping[str, Any]], run: Mapping[str, Any], span: Window) -> str:
    """The run's spend over time: the sum of the jobs' charges, each counted when the run
    saw its job done at AudioPod (its ``completed_at``; the run's start for a job done
    before it), as a step line, with the estimate and the spending cap as dashed lines."""
    charges = sorted(
        (_at(job, span), job["cost_cents"]) for job in jobs if _cents(job.get("cost_cents"))
    )
    estimate, cap = run.get("estimated_cents"), run.get("max_spend_cents")
    marks = {
        label: float(value)
        for label, value in (("estimated", estimate), ("cap", cap))
        if _cents(value) and value > 0
    }
    spent = sum(cents for _, cents in charges)
    top_cents = _ceiling(max(float(spent), *marks.values(), 1.0))
    left, right, top, panel = 70, 36, 20, 180
    x = _scale(span.length, left, _WIDTH - left - right)
    y = _scale_down(top_cents, top, panel)
    parts = [_open(top + panel + _AXIS, f"Spend over time: {usd(spent)}")]
    parts += _time_axis(span, x, top, panel)
    parts += _count_axis(top_cents, y, left, _WIDTH - left - right, "spent", money=True)
    for label, value in marks.items():
        parts.append(
            f'<line x1="{left}" x2="{_WIDTH - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="#888" stroke-dasharray="5 4"/><text x="{_WIDTH - right - 4}" '
            f'y="{y(value) - 4:.1f}" text-anchor="end" font-size="11" fill="#555">{label} '
            f"{usd(int(value))}</text>"
        )
    # One step per slice at most: a 10,000-job run draws as many points as a 100-job one.
    width = span.length / SLICES
    totals = [0] * SLICES
    for at, cents in charges:
        totals[min(int(at / width), SLICES - 1)] += cents
    points, running = [(x(0.0), y(0.0))], 0
    for k, cents in enumerate(totals):
        if cents:
            points.append((x(k * width), y(float(running))))
            running += cents
            points.append((x(k * width), y(float(running))))
    points.append((x(span.length), y(float(running))))
    path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    parts.append(
        f'<polyline points="{path}" fill="none" stroke="{STATUS_COLOURS["succeeded"]}" '
        f'stroke-width="2.5"><title>spent {usd(spent)}</title></polyline>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _cents(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an amount of cents the chart can draw (an int a float holds)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**15


def _at(job: Mapping[str, Any], span: Window) -> float:
    """When job ``job``'s charge is drawn: its completion (or end), in seconds of the run."""
    for key in ("completed_at", "finished_at", "submitted_at"):
        moment = epoch(job.get(key))
        if moment is not None:
            return min(max(moment - span.start, 0.0), span.length)
    return span.length


def _open(height: int, title: str) -> str:
    return (
        f'<svg viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" role="img" '
        f'font-family="system-ui, sans-serif"><title>{escape(title)}</title>'
    )


def _scale(length: float, left: float, width: float) -> Callable[[float], float]:
    return lambda seconds: left + width * seconds / length


def _scale_down(peak: float, top: float, height: float) -> Callable[[float], float]:
    return lambda value: top + height - height * value / peak


def _time_axis(span: Window, x: Callable[[float], float], top: float, height: float) -> list[str]:
    # A few gridlines whatever the length: a run of days (or a merged window, or a file with
    # an odd timestamp) gets round steps of its own, never thousands of ticks.
    step = next((s for s in _TIME_STEPS if span.length / s <= 8), None) or _nice_step(span.length)
    parts, tick = [], 0.0
    while tick <= span.length + 1e-9:
        px = x(tick)
        parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{top + height}" stroke="#e3e6eb"/>'
            f'<text x="{px:.1f}" y="{top + height + 14}" text-anchor="middle" font-size="11" '
            f'fill="#555">{_clock(tick)}</text>'
        )
        tick += step
    parts.append(
        f'<text x="{x(span.length):.1f}" y="{top + height + 26}" text-anchor="end" '
        f'font-size="11" fill="#555">time since the run started (h:mm:ss)</text>'
    )
    return parts


def _count_axis(
    peak: float, y: Callable[[float], float], left: float, width: float, title: str,
    *, money: bool = False,
) -> list[str]:  # fmt: skip
    step = _nice_step(peak)
    parts, value = [], 0.0
    while value <= peak + 1e-9:
        py = y(value)
        label = usd(int(value)) if money else f"{value:,.0f}"
        parts.append(
            f'<line x1="{left}" x2="{left + width}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e3e6eb"/>'
            f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#555">{label}</text>'
        )
        value += step
    parts.append(
        f'<text x="{left - 6}" y="{y(peak) - 9:.1f}" text-anchor="end" font-size="11" '
        f'fill="#555">{title}</text>'
    )
    return parts


def _ceiling(value: float) -> float:
    """``value`` rounded up to a whole number of its axis's steps (the top gridline)."""
    step = _nice_step(value)
    return math.ceil(value / step - 1e-9) * step


def _nice_step(peak: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving 2 to 5 gridlines up to ``peak``."""
    step = 1.0
    while peak / step > 5:
        for factor in (2, 2.5, 2):  # 1 -> 2 -> 5 -> 10
            step *= factor
            if peak / step <= 5:
                break
    return step


def _area(
    xs: Sequence[float], low: Sequence[float], high: Sequence[float],
    x: Callable[[float], float], y: Callable[[float], float], phase: str,
) -> str:  # fmt: skip
    upper = [f"{x(a):.1f},{y(b):.1f}" for a, b in zip(xs, high, strict=True)]
    lower = [f"{x(a):.1f},{y(b):.1f}" for a, b in zip(reversed(xs), reversed(low), strict=True)]
    return (
        f'<polygon points="{" ".join(upper + lower)}" fill="{PHASE_COLOURS[phase]}">'
        f"<title>{PHASE_LABELS[phase]}</title></polygon>"
    )


def _steps(
    xs: Sequence[float], values: Sequence[float], x: Callable[[float], float],
    y: Callable[[float], float], colour: str, title: str, stroke: float,
) -> str:  # fmt: skip
    points = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(xs, values, strict=True))
    return (
        f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{stroke}">'
        f"<title>{title}</title></polyline>"
    )


def _clock(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
