"""A results document as one self-contained HTML page: what a person looks at the morning after.

The page holds everything it shows: its style inline, its charts as inline SVG
(``_charts``), no script, no font, image or link to fetch. A Content-Security-Policy in the
page itself forbids any request and any script, so even a name or an error message that
tried to smuggle markup in (they are all escaped anyway) could fetch nothing. It opens from
disk and as a mail attachment, offline.

Sections, in order: the run's header (manifest, times, exit code, why it stopped), the
counts by status and the money (spent, estimated, cap, wallet, API requests), the timeline
(``_charts.timeline_svg``), the spend over time, and the jobs that did not succeed (failed,
expired, unknown, interrupted, skipped) with their errors: first counted by cause, then one
row each in manifest order, up to ``TABLE_ROWS`` rows (the CSV report lists every job).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from batchpod._version import __version__
from batchpod.errors import ExitCode
from batchpod.models import JobStatus
from batchpod.report import _charts
from batchpod.report._phases import PHASES, all_phases, window
from batchpod.report._values import line, money, number, seconds_between

#: The most jobs listed one by one in the table of jobs that did not succeed.
TABLE_ROWS = 500
#: The statuses of that table, in the order their counts are shown.
_NOT_DONE = ("failed", "expired", "unknown", "interrupted", "skipped")
#: What the page may load: nothing. Inline style only; no script, no fetch, no frame.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'"
)

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #22262e; margin: 24px auto;
       max-width: 1000px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.meta { color: #555; margin: 0; } code { font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 18px 0 0; padding: 0; }
.card { list-style: none; border: 1px solid #dde1e7; border-radius: 6px; padding: 8px 12px;
        min-width: 110px; }
.card b { display: block; font-size: 20px; }
.card span { color: #555; font-size: 12px; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
       margin-right: 5px; vertical-align: -1px; }
.legend { margin: 0 0 6px; padding: 0; } .legend li { display: inline; margin-right: 16px; }
svg { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e6e8ec;
         vertical-align: top; }
th { background: #f4f5f7; } td.n { text-align: right; }
td.msg { word-break: break-word; } td.st { white-space: nowrap; }
.note { color: #555; font-size: 13px; }
footer { color: #777; font-size: 12px; margin-top: 32px; }
"""


def render_html(doc: Mapping[str, Any], *, title: str | None = None) -> str:
    """Results document ``doc`` as one HTML page (see the module docstring); ``title``
    names it (default: the manifest's file name). Every value from the document is escaped;
    the same document always gives the same page."""
    run: Mapping[str, Any] = doc.get("run") or {}
    jobs: Sequence[Mapping[str, Any]] = doc.get("jobs") or []
    manifest = str(run.get("manifest") or "")
    name = title or manifest.rsplit("/", 1)[-1] or "results"
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>batchpod report: {escape(name)}</title><style>{_STYLE}</style></head><body>",
        *_header(run, name),
        *_cards(run, jobs),
        *_timeline(run, jobs),
        *_not_done(jobs),
        f"<footer>batchpod {escape(__version__)} report of {escape(line(manifest))}. "
        "The page holds everything it shows; it runs no script and loads nothing.</footer>",
        "</body></html>\n",
    ]
    return "".join(parts)


def _header(run: Mapping[str, Any], name: str) -> list[str]:
    elapsed = seconds_between(run.get("started_at"), run.get("finished_at"))
    took = f" ({_duration(elapsed)})" if elapsed is not None else ""
    code = run.get("exit_code")
    known = {int(c): c.name.lower().replace("_", " ") for c in ExitCode}
    meaning = f" ({known[code]})" if isinstance(code, int) and code in known else ""
    facts = [
        f"{escape(line(run.get('started_at')))} to {escape(line(run.get('finished_at')))}{took}",
        f"exit code {escape(line(code))}{escape(meaning)}",
    ]
    if run.get("sandbox"):
        facts.append("against the sandbox")
    if isinstance(run.get("shard"), Mapping):
        facts.append(f"shard {escape(line(run['shard'].get('index')))}/"
                     f"{escape(line(run['shard'].get('count')))}")  # fmt: skip
    if run.get("worker"):
        facts.append(f"worker {escape(line(run['worker']))}")
    out = [
        f"<header><h1>batchpod run of {escape(name)}</h1>",
        f'<p class="meta"><code>{escape(line(run.get("manifest")))}</code></p>',
        f'<p class="meta">{" · ".join(facts)}</p>',
    ]
    if run.get("stopped"):
        out.append(f'<p class="meta">stopped early: {escape(line(run["stopped"]))}</p>')
    out.append("</header>")
    return out


def _cards(run: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    counts = Counter(str(job.get("status")) for job in jobs)
    cards = [_card(f"{len(jobs):,}", "jobs")]
    for status in JobStatus:
        if counts[status.value]:
            colour = _charts.STATUS_COLOURS[status.value]
            cards.append(_card(f"{counts[status.value]:,}", status.value, colour))
    spent = run.get("spent_cents")
    cards.append(_card(money(spent) if spent is not None else "none", "spent"))
    cards.append(_card(money(run.get("estimated_cents")), "estimated"))
    if run.get("max_spend_cents") is not None:
        cards.append(_card(money(run["max_spend_cents"]), "spending cap"))
    before, after = run.get("balance_before_cents"), run.get("balance_after_cents")
    cards.append(_card(f"{money(before)} → {money(after)}", "wallet before → after"))
    requests = run.get("requests")
    if isinstance(requests, Mapping):
        per_job = requests.get("per_job")
        detail = f"API requests, {line(per_job)} a job" if per_job is not None else "API requests"
        api = requests.get("api")
        cards.append(_card(f"{api:,}" if isinstance(api, int) else line(api), detail))
        retries = requests.get("retries") or {}
        if isinstance(retries, Mapping) and retries:
            shown = ", ".join(
                f"{line(k)}: {line(v)}"
                for k, v in sorted(retries.items(), key=lambda kv: str(kv[0]))
            )
            cards.append(_card(f"{sum(v for v in retries.values() if isinstance(v, int)):,}",
                               f"retries ({shown})"))  # fmt: skip
    return ['<ul class="cards">', *cards, "</ul>"]


def _card(value: str, label: str, colour: str | None = None) -> str:
    dot = f'<i class="dot" style="background:{colour}"></i>' if colour else ""
    return f'<li class="card"><b>{escape(value)}</b><span>{dot}{escape(label)}</span></li>'


def _timeline(run: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    span = window(run, jobs)
    if span is None:
        return ["<h2>Timeline</h2>", '<p class="note">The results record no start time.</p>']
    phases = all_phases(jobs, span)
    legend = "".join(
        f'<li><i class="dot" style="background:{_charts.PHASE_COLOURS[p]}"></i>'
        f"{_charts.PHASE_LABELS[p]}</li>"
        for p in PHASES
    )
    out = ["<h2>Timeline</h2>"]
    if not phases:
        out.append('<p class="note">No job reached AudioPod in this run.</p>')
    else:
        if len(phases) > _charts.PER_JOB_MAX:
            legend += (
                f'<li><i class="dot" style="background:{_charts.FINISHED_COLOUR}"></i>finished</li>'
            )
            out.append(
                f'<p class="note">{len(phases):,} jobs reached AudioPod: above, how many were '
                "at AudioPod or downloading at each moment; below, how many were still "
                "waiting for their submit and how many were finished.</p>"
            )
        else:
            out.append(
                f'<p class="note">{len(phases):,} jobs reached AudioPod, one row each in '
                "manifest order; the square before a row is its final status.</p>"
            )
        out += [f'<ul class="legend">{legend}</ul>', _charts.timeline_svg(phases, span)]
    out += ["<h2>Spend over time</h2>", _charts.spend_svg(jobs, run, span)]
    return out


def _not_done(jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [(i, job) for i, job in enumerate(jobs) if job.get("status") in _NOT_DONE]
    out = ["<h2>Jobs that did not succeed</h2>"]
    if not rows:
        return [*out, '<p class="note">None: every job succeeded.</p>']
    causes = Counter((str(job.get("status")), _cause(job)) for _, job in rows)
    out.append("<table><tr><th>status</th><th>cause</th><th class=n>jobs</th></tr>")
    for (status, cause), n in sorted(causes.items(), key=lambda item: (-item[1], item[0])):
        out.append(
            f"<tr><td class=st>{_status(status)}</td><td class=msg>{escape(cause)}</td>"
            f"<td class=n>{n:,}</td></tr>"
        )
    out.append("</table><h2>Each of them</h2>")
    if len(rows) > TABLE_ROWS:
        out.append(
            f'<p class="note">The first {TABLE_ROWS:,} of {len(rows):,}, in manifest order; '
            "<code>batchpod report --format csv</code> lists every job.</p>"
        )
    out.append("<table><tr><th>#</th><th>job</th><th>status</th><th>error or reason</th></tr>")
    for index, job in rows[:TABLE_ROWS]:
        out.append(
            f"<tr><td class=n>{index + 1}</td><td>{escape(line(job.get('name')))}</td>"
            f"<td class=st>{_status(str(job.get('status')))}</td>"
            f"<td class=msg>{escape(_detail(job))}</td></tr>"
        )
    out.append("</table>")
    return out


def _status(status: str) -> str:
    colour = _charts.STATUS_COLOURS.get(status, "#666")
    return f'<i class="dot" style="background:{colour}"></i>{escape(status)}'


def _cause(job: Mapping[str, Any]) -> str:
    """What a table of causes groups job ``job`` under: its error's type and HTTP status,
    or why it was skipped (a duplicate's twin not named, so that they group)."""
    error = job.get("error")
    if isinstance(error, Mapping):
        status = error.get("http_status")
        return line(error.get("type")) + (f" (HTTP {line(status)})" if status is not None else "")
    if job.get("duplicate_of"):
        return "the same song, mode and stem as another job"
    return line(job.get("reason") or "no error recorded")


def _detail(job: Mapping[str, Any]) -> str:
    error = job.get("error")
    if isinstance(error, Mapping):
        return f"{_cause(job)}: {line(error.get('message'))}"
    return line(job.get("reason") or "no error recorded")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{number(seconds)} s"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
