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

Exactly one such job is adopted. More than one leaves the job ``unknown`` and reported,
never guessed. None means the submit never landed, and only then is it sent again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from batchpod.client import RemoteJob
from batchpod.manifest import normalize_url
from batchpod.models import Job, Mode
from batchpod.poller import PAGE_SIZE, StatusApi

#: How far AudioPod's clock may lag ours and a matching job still count as "after the intent".
CLOCK_ALLOWANCE_S = 120.0
#: How deep into the job list to look (newest first): the job must be among the newest.
MAX_PAGES = 5

# The stem names each mode is known to produce (AudioPod's docs and the sandbox); modes not
# listed ("up to N" stems whose names are not all documented) are not checked by name.
_MODE_STEMS: dict[Mode, frozenset[str]] = {
    Mode.TWO: frozenset({"vocals", "no_vocals", "instrumental"}),
    Mode.FOUR: frozenset({"vocals", "drums", "bass", "other"}),
    Mode.SIX: frozenset({"vocals", "drums", "bass", "other", "guitar", "piano"}),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Search:
    """What the job list showed: the matching candidates."""

    candidates: tuple[RemoteJob, ...]

    @property
    def adopted(self) -> RemoteJob | None:
        """The one match, when there is exactly one."""
        return self.candidates[0] if len(self.candidates) == 1 else None


async def search(api: StatusApi, job: Job, *, intent_at: float, claimed: Collection[str]) -> Search:
    """Look through the newest jobs for the ones this job's unknown submit may have created."""
    found: list[RemoteJob] = []
    since = intent_at - CLOCK_ALLOWANCE_S
    for page in range(MAX_PAGES):
        rows = await api.list_jobs(skip=page * PAGE_SIZE, limit=PAGE_SIZE)
        older = False
        for row in rows:
            created = row.created_at.timestamp() if row.created_at else None
            if created is not None and created < since:
                older = True
                continue
            if row.id not in claimed and matches(job, row):
                found.append(row)
        if older or len(rows) < PAGE_SIZE:
            break
    return Search(candidates=tuple(found))


def matches(job: Job, row: RemoteJob) -> bool:
    """Whether ``row`` could be the remote job of ``job``'s submit (see the module docstring)."""
    kind = (row.source_type or "").upper()
    if job.source.url is not None:
        if kind and kind != "URL":
            return False
        # The contract does not say what input_path and display_name hold for a URL job; the
        # likeliest are the URL itself or the name it ends in. Anything else is no match.
        url = job.source.url
        names = {url, normalize_url(url), _last_segment(url)}
        fields = {row.input_path, row.display_name} - {None, ""}
        if row.input_path and row.input_path.startswith(("http://", "https://")):
            fields.add(normalize_url(row.input_path))
        if not fields & names:
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
    allowed = _MODE_STEMS.get(job.mode)
    return allowed is None or stems <= allowed


def _last_segment(url: str) -> str:
    segments = [s for s in urlsplit(url).path.split("/") if s]
    return unquote(segments[-1]) if segments else ""
