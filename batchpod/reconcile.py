"""Finding the remote job of a submit whose outcome is unknown, without guessing.

A submit that timed out, was reset after sending, or got a 5xx may have created a job (and a
charge). Before submitting again, AudioPod's job list is searched for a job that:

- was created after the submit intent was recorded (less a small allowance for the two
  clocks disagreeing),
- is not already held by another job in the state file,
- matches the job's source as far as the contract documents it on a job object:
  ``source_type`` (URL or FILE), and ``input_path`` / ``display_name`` naming the URL or the
  uploaded file's name,
- and, once it has stems, has stem names that the job's mode can produce.

A candidate still running is waited for until it ends, so that its stems can be checked
against the mode. Exactly one such job is adopted. More than one, or rows that might be the
job but cannot be told apart, leave the job ``unknown`` and reported, never guessed. None
means the submit never landed, and only then is it sent again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from batchpod.client import RemoteJob
from batchpod.identity import normalize_url
from batchpod.models import Job, Mode
from batchpod.poller import StatusApi, read_job_list
from batchpod.templates import DOCUMENTED_STEMS

#: How far AudioPod's clock may lag ours and a matching job still count as "after the intent".
CLOCK_ALLOWANCE_S = 120.0
#: How deep into the job list to look (newest first) before calling the answer doubtful.
MAX_PAGES = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class Search:
    """What the job list showed: the matching candidates, and whether that is the whole truth."""

    candidates: tuple[RemoteJob, ...]
    # Rows that could be the job but cannot be told apart (no source fields, no date), or a
    # list too long to reach the intent's time: the answer must not be read as "no job".
    doubtful: int = 0


def identity(job: Job) -> str:
    """What reconciliation can tell a job's remote rows by: the song's name.

    Two sources with the same name (``a/song.mp3`` and ``b/song.mp3``) look alike in a row
    whose fields hold only the name; the caller serializes their submits on this identity.
    """
    if job.source.url is not None:
        return "url:" + _last_segment(job.source.url).lower()
    assert job.source.file is not None
    return "file:" + job.source.file.name.lower()


async def search(api: StatusApi, job: Job, *, intent_at: float, claimed: Collection[str]) -> Search:
    """Look through the newest jobs for the ones this job's unknown submit may have created.

    AudioPod lists jobs newest first (as the sandbox does, and as the contract's examples
    show), so the search stops at the first row created before the intent (less the clock
    allowance). A list that never gets that far within ``MAX_PAGES`` pages, or that other
    clients' deletions kept shifting (``poller.read_job_list``), is doubtful. Each job counts
    once, however often the shifting list showed it.
    """
    since = intent_at - CLOCK_ALLOWANCE_S

    def older(row: RemoteJob) -> bool:
        return row.created_at is not None and row.created_at.timestamp() < since

    listed = await read_job_list(api, max_pages=MAX_PAGES, until=older)
    found: list[RemoteJob] = []
    doubtful = 0 if listed.complete else 1
    for row in listed.rows:
        if row.id in claimed:
            continue
        if row.created_at is None or not (row.input_path or row.display_name):
            doubtful += 1  # might be ours; cannot say
        elif matches(job, row):
            found.append(row)
    return Search(candidates=tuple(found), doubtful=doubtful)


def matches(job: Job, row: RemoteJob) -> bool:
    """Whether ``row`` could be the remote job of ``job``'s submit (see the module docstring)."""
    kind = (row.source_type or "").upper()
    if job.source.url is not None:
        if kind and kind != "URL":
            return False
        url = job.source.url
        if row.input_path and row.input_path.startswith(("http://", "https://")):
            # The row names its URL: nothing less than the same URL will do (and a URL
            # that cannot even be read, such as an unclosed IPv6 bracket, is not ours).
            try:
                if normalize_url(row.input_path) != normalize_url(url):
                    return False
            except ValueError:
                return False
        else:
            # The contract does not say what input_path and display_name hold for a URL job
            # on the real service; the likeliest are a storage key or the name the URL ends
            # in, so the name is compared (and like-named songs are submitted one at a time).
            name = _last_segment(url)
            path_name = PurePosixPath(unquote(row.input_path or "")).name
            if not name or name not in (row.display_name, path_name):
                return False
    else:
        assert job.source.file is not None
        if kind and kind != "FILE":
            return False
        name = job.source.file.name
        path = row.input_path or ""
        if row.display_name != name and PurePosixPath(unquote(path)).name != name:
            return False
    return _stems_fit(job, row)


def _stems_fit(job: Job, row: RemoteJob) -> bool:
    stems = set(row.download_urls) or set(row.quality_scores)
    if not stems:
        return True  # still running: its stems are not known yet
    if job.mode is Mode.SINGLE:
        return job.stem is not None and job.stem.value in stems
    allowed = DOCUMENTED_STEMS.get(job.mode)
    return allowed is None or stems <= set(allowed)


def _last_segment(url: str) -> str:
    segments = [s for s in urlsplit(url).path.split("/") if s]
    return unquote(segments[-1]) if segments else ""
