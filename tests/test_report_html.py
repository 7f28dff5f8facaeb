"""`batchpod report --format html`: the page a person opens the morning after, opened in a
real headless Chromium (tests/chromium.py): no console error, no request leaving the file,
the charts drawn where the screenshot shows them; for a real run with failures and for a
10,000-job results file."""

from __future__ import annotations

import io
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from chromium import INSTALL, Browser, browser, chromium_path
from conftest import results_of, run_cli, write_manifest
from PIL import Image

from batchpod.cli import main
from batchpod.report import load_results, render_html
from batchpod.report._charts import PHASE_COLOURS, STATUS_COLOURS
from batchpod.report._html import TABLE_ROWS
from batchpod.report._phases import Window, all_phases, occupancy
from batchpod.results import results_yaml
from batchpod.sandbox import SandboxSettings, SandboxThread

pytestmark = pytest.mark.usefixtures("clean_env")
needs_chromium = pytest.mark.skipif(chromium_path() is None, reason=INSTALL)

# On the Basic plan `producer` is refused (403); copy.wav is song.wav again (a duplicate,
# skipped); the sandbox fails about a third of the rest, and its rate limit makes retries.
JOBS = "".join(
    f"  - {{url: 'https://cdn.example.com/night/{n:02d}.mp3?duration={30 + 7 * n}', mode: two}}\n"
    for n in range(22)
) + (
    "  - {url: 'https://cdn.example.com/night/refused.mp3', mode: producer, name: refused}\n"
    "  - {file: song.wav, mode: four}\n"
    "  - {file: copy.wav, mode: four}\n"
)
SETTINGS = SandboxSettings(
    processing_s=(0.3, 2.5), plan="basic", failure_rate=0.3, rps_limit=6, seed=7
)
# Markup a job's name or an error message might carry: shown as text, never run or fetched.
HOSTILE = '<script>alert(1)</script><img src="http://127.0.0.1:9/x.png">"\'&'


@pytest.fixture(scope="module")
def chrome() -> Iterator[Browser]:
    if chromium_path() is None:
        pytest.skip(INSTALL)
    with browser() as running:
        yield running


def _report(results: Path, page: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["report", str(results), "--format", "html", "-o", str(page)], stdout=out, stderr=err
    )
    assert (code, err.getvalue()) == (0, ""), err.getvalue()
    assert out.getvalue() == f"report: {page}\n"


class _Tables(HTMLParser):
    """The text of every table cell, table by table, and every attribute seen."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.tags: Counter[str] = Counter()
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attributes += [(tag, name, value) for name, value in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parsed(text: str) -> _Tables:
    parser = _Tables()
    parser.feed(text)
    parser.close()
    return parser


def _self_contained(parsed: _Tables) -> None:
    """No script, and no attribute that could make the page fetch anything."""
    assert parsed.tags["script"] == 0
    assert parsed.tags["img"] == parsed.tags["link"] == parsed.tags["iframe"] == 0
    fetching = [(t, n, v) for t, n, v in parsed.attributes if n in ("src", "href", "xlink:href")]
    assert fetching == []


def _pixels(png: bytes, box: dict[str, float]) -> Counter[tuple[int, int, int]]:
    """How many pixels of each colour the screenshot has inside ``box`` (CSS px, scale 1)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    left, top = round(box["x"]), round(box["y"])
    crop = image.crop((left, top, left + round(box["width"]), top + round(box["height"])))
    return Counter({colour: n for n, colour in crop.getcolors(maxcolors=1 << 24) or ()})


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _page_is_clean(chrome: Browser, page: Path) -> Any:
    visit = chrome.visit(page)
    assert visit.errors == []
    assert visit.requests == [page.resolve().as_uri()]  # the file itself, and nothing more
    assert len(visit.svgs) == 2  # the timeline, then the spend
    return visit


@needs_chromium
def test_report_of_a_run_with_failures_opens_clean_and_draws_its_charts(
    tmp_path: Path, chrome: Browser
) -> None:
    path = write_manifest(tmp_path, JOBS, concurrency=6)
    shutil.copy(tmp_path / "song.wav", tmp_path / "copy.wav")
    with SandboxThread(SETTINGS) as sb:
        code, _, err = run_cli(sb, path)
    assert code == 1, err
    doc = results_of(path)
    jobs = doc["jobs"]
    statuses = Counter(job["status"] for job in jobs)
    assert statuses["failed"] >= 2 and statuses["skipped"] == 1 and statuses["succeeded"] >= 5
    assert doc["run"]["requests"]["retries"], "the rate limit should have made retries"
    for job in jobs:  # this run saw every job to its end: its finish is in the run's window
        if job["status"] in ("succeeded", "failed"):
            assert doc["run"]["started_at"] <= job["finished_at"] <= doc["run"]["finished_at"]
            if job["completed_at"] is not None:
                assert job["completed_at"] <= job["finished_at"]

    page = tmp_path / "report.html"
    _report(path.with_name("jobs.results.yaml"), page)
    text = page.read_text(encoding="utf-8")
    parsed = _parsed(text)
    _self_contained(parsed)
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    causes, each = parsed.tables
    troubled = [job for job in jobs if job["status"] != "succeeded"]
    assert [row[1] for row in each[1:]] == [job["name"] for job in troubled]  # manifest order
    assert sum(int(row[2]) for row in causes[1:]) == len(troubled)
    refused = next(row for row in each if row[1] == "refused")
    assert refused[3].startswith("PermissionDenied (HTTP 403): ")
    cards = re.findall(r'<li class="card"><b>([^<]*)</b><span>(?:<i [^>]*></i>)?([^<]*)<', text)
    shown = {label: value for value, label in cards}
    assert shown["failed"] == str(statuses["failed"]) and shown["jobs"] == str(len(jobs))
    spent = doc["run"]["spent_cents"]
    assert shown["spent"] == f"${spent // 100}.{spent % 100:02d}"

    visit = _page_is_clean(chrome, page)
    assert visit.title == "batchpod report: jobs.yaml"
    timeline, spend = (_pixels(visit.screenshot, box) for box in visit.svgs)
    # A row per job that reached AudioPod: its bar in the at-AudioPod colour, and the failed
    # jobs' status squares in red.
    assert timeline[_rgb(PHASE_COLOURS["at_audiopod"])] > 2000
    assert timeline[_rgb(PHASE_COLOURS["waiting"])] > 100  # the concurrency made jobs wait
    assert timeline[_rgb(STATUS_COLOURS["failed"])] >= 20 * statuses["failed"]
    assert spend[_rgb(STATUS_COLOURS["succeeded"])] > 300  # the spend line
    (tmp_path / "report.png").write_bytes(visit.screenshot)


def _big_document(jobs: int) -> dict[str, Any]:
    """A results document as a 10,000-job run at concurrency 100 would leave: jobs submitted
    as places free up, 1 to 9 minutes at AudioPod, a few seconds downloading; 5% failed (some
    with markup in their message), 1% skipped as duplicates."""
    rng = random.Random(22)
    start = datetime(2026, 12, 4, 1, 0, tzinfo=UTC).timestamp()
    free = [start] * 100
    entries: list[dict[str, Any]] = []
    spent = 0
    for n in range(jobs):
        name = f"catalogue-{n:05d}" if n % 997 else f"{HOSTILE}-{n}"
        if n % 100 == 99:
            twin = "catalogue-00000"
            entries.append(
                {"name": name, "status": "skipped", "duplicate_of": twin,
                 "reason": f"same song, mode and stem as {twin}",
                 "submitted_at": None, "completed_at": None, "finished_at": None}
            )  # fmt: skip
            continue
        free.sort()
        submitted = free[0] + rng.uniform(0.1, 2)
        completed = submitted + rng.uniform(60, 540)
        finished = completed + rng.uniform(1, 8)
        free[0] = finished
        entry: dict[str, Any] = {
            "name": name,
            "status": "succeeded",
            "submitted_at": _iso(submitted),
            "completed_at": _iso(completed),
            "finished_at": _iso(finished),
            "cost_cents": 40,
            "estimated_cents": 40,
        }
        if n % 20 == 7:
            entry.update(
                status="failed", completed_at=None, finished_at=_iso(completed), cost_cents=0,
                error={"type": "RemoteJobFailed", "http_status": None,
                       "message": f"separation failed {HOSTILE}"},
            )  # fmt: skip
        spent += entry["cost_cents"]
        entries.append(entry)
    finished_at = max(f for f in free)
    run = {
        "batchpod_version": "0.1.0", "manifest": "/srv/catalogue/jobs.yaml", "sandbox": False,
        "started_at": _iso(start), "finished_at": _iso(finished_at), "exit_code": 1,
        "spent_cents": spent, "estimated_cents": 40 * jobs, "balance_before_cents": 500_000,
        "balance_after_cents": 500_000 - spent,
        "requests": {"api": 2 * jobs, "jobs_worked": jobs, "per_job": 2.0, "throttled": 0,
                     "retries": {"503": 12}},
    }  # fmt: skip
    return {"results_version": 1, "run": run, "jobs": entries}


def _iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


@needs_chromium
def test_report_of_10000_jobs_stays_readable_and_bounded(tmp_path: Path, chrome: Browser) -> None:
    results = tmp_path / "jobs.results.yaml"
    results.write_text(results_yaml(_big_document(10_000)), encoding="utf-8")
    doc = load_results(results)
    page = tmp_path / "report.html"
    started = time.perf_counter()
    _report(results, page)  # read, checked, rendered and written
    made_s = time.perf_counter() - started
    text = page.read_text(encoding="utf-8")
    parsed = _parsed(text)
    _self_contained(parsed)
    # Aggregated: the timeline's shapes do not grow with the jobs, and the table stops at
    # TABLE_ROWS rows with a note saying where the rest are.
    timeline = text[text.index("<h2>Timeline</h2>") : text.index("<h2>Spend over time</h2>")]
    assert timeline.count("<polygon") == 2 and timeline.count("<rect") == 0
    assert timeline.count("<polyline") == 2
    troubled = [job for job in doc["jobs"] if job["status"] != "succeeded"]
    assert len(troubled) > TABLE_ROWS
    causes, each = parsed.tables
    assert len(each) == 1 + TABLE_ROWS
    assert f"The first {TABLE_ROWS:,} of {len(troubled):,}" in text
    assert {row[1]: int(row[2]) for row in causes[1:]} == {
        "RemoteJobFailed": sum(job["status"] == "failed" for job in doc["jobs"]),
        "the same song, mode and stem as another job": 100,
    }
    assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert len(text) < 1_000_000

    visit = _page_is_clean(chrome, page)  # the markup in names and messages fetched nothing
    print(
        f"10,000-job report: made in {made_s:.2f} s, {len(text):,} bytes, "
        f"Chromium load {visit.load_s:.2f} s"
    )
    (tmp_path / "report.png").write_bytes(visit.screenshot)
    drawn = _pixels(visit.screenshot, visit.svgs[0])
    assert drawn[_rgb(PHASE_COLOURS["at_audiopod"])] > 20_000  # about 100 jobs in flight
    assert drawn[_rgb(PHASE_COLOURS["downloading"])] > 0


def test_the_checker_sees_a_request_and_a_script_error(tmp_path: Path) -> None:
    """The Chromium checks above can fail: a page that fetches and throws is caught."""
    if chromium_path() is None:
        pytest.skip(INSTALL)
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><title>bad</title><img src="http://127.0.0.1:9/x.png">'
        "<script>no_such_function()</script>",
        encoding="utf-8",
    )
    with browser() as chrome:
        visit = chrome.visit(page)
    assert "http://127.0.0.1:9/x.png" in visit.requests
    assert any("no_such_function" in error for error in visit.errors)


def test_occupancy_counts_jobs_in_each_slice_exactly() -> None:
    """Whole slices, partial ends and intervals inside one slice all add up."""
    span = Window(start=1000.0, length=10.0)
    doc_jobs = [
        {"name": "a", "status": "succeeded", "submitted_at": "1970-01-01T00:16:40Z",
         "completed_at": "1970-01-01T00:16:50Z", "finished_at": "1970-01-01T00:16:50Z"},
        {"name": "b", "status": "succeeded", "submitted_at": "1970-01-01T00:16:43Z",
         "completed_at": "1970-01-01T00:16:46Z", "finished_at": "1970-01-01T00:16:49Z"},
        {"name": "c", "status": "skipped", "submitted_at": None},
    ]  # fmt: skip
    phases = all_phases(doc_jobs, span)
    assert [p.name for p in phases] == ["a", "b"]  # c never reached AudioPod
    counts = occupancy(phases, span, 5)  # slices of 2 s
    assert counts["at_audiopod"] == [1.0, 1.5, 2.0, 1.0, 1.0]
    assert counts["waiting"] == [1.0, 0.5, 0.0, 0.0, 0.0]  # b waited 3 s for its submit
    assert counts["downloading"] == [0.0, 0.0, 0.0, 1.0, 0.5]


def test_report_output_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    results = tmp_path / "jobs.results.yaml"
    results.write_text(results_yaml(_big_document(20)), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "no-such-folder" / "report.html"
    code = main(
        ["report", str(results), "--format", "html", "-o", str(target)], stdout=out, stderr=err
    )
    assert code == 74
    assert err.getvalue() == (
        f"batchpod: error: cannot write the report to {target}: No such file or directory\n"
    )
    assert out.getvalue() == ""
    # To standard output without -o: the same page as render_html gives.
    out = io.StringIO()
    assert main(["report", str(results), "--format", "html"], stdout=out) == 0
    assert out.getvalue() == render_html(load_results(results))


def test_odd_documents_give_a_small_page_with_everything_escaped() -> None:
    """A run whose window is millennia long, charges too big for a float, retries keyed by
    numbers and words, and names and statuses carrying markup, drawn a row per job: the
    page stays small, and no markup from the file gets through."""
    base = "2026-12-04T00:00:{:02d}Z"
    jobs = [
        {"name": f"{HOSTILE}{n}", "status": "failed" if n % 2 else "succeeded",
         "submitted_at": base.format(n), "completed_at": base.format(n + 1),
         "finished_at": "9999-12-31T23:59:59-12:00" if n == 0 else base.format(n + 2),
         "cost_cents": 10**400 if n == 1 else 5,
         "error": {"type": HOSTILE, "http_status": HOSTILE, "message": HOSTILE}}
        for n in range(10)
    ]  # fmt: skip
    jobs.append({"name": "x", "status": HOSTILE, "submitted_at": base.format(3)})
    retries = {429: 2, "timeout": 1}
    run = {"started_at": "0001-01-01T00:00:00+01:00", "estimated_cents": 10**400,
           "requests": {"api": 30, "retries": retries}, "manifest": HOSTILE}  # fmt: skip
    text = render_html({"run": run, "jobs": jobs})
    assert len(text) < 60_000
    assert HOSTILE not in text and "<script" not in text and "<img" not in text
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 20  # rows, titles, table


def test_the_checker_sees_what_the_pages_policy_refuses(tmp_path: Path) -> None:
    """Under the report's own Content-Security-Policy a fetch that markup asked for is still
    reported as a request (then refused), and the refusal is a console error: the checks
    above would see either."""
    if chromium_path() is None:
        pytest.skip(INSTALL)
    from batchpod.report._html import CSP

    page = tmp_path / "refused.html"
    page.write_text(
        f'<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<title>refused</title><img src="http://127.0.0.1:9/x.png"><script>1</script>',
        encoding="utf-8",
    )
    with browser() as chrome:
        visit = chrome.visit(page)
    assert "http://127.0.0.1:9/x.png" in visit.requests
    assert visit.errors, "the policy's refusals are console errors"
