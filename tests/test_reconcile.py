"""Reconciliation: its matching rules on rows the server sends (no server needed), and its
search of the sandbox's job list while other clients create and delete jobs between the
pages it reads."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from batchpod.client import ApiClient, RemoteJob, RemoteStatus
from batchpod.models import Job, Mode, Source
from batchpod.poller import PAGE_SIZE, read_job_list
from batchpod.reconcile import matches, search
from batchpod.sandbox import SandboxHandle

OTHER = "https://example.com/music/other.mp3?duration=60&n={}"
MINE = "https://example.com/music/mine.mp3?duration=60"


def _url_job(url: str) -> Job:
    return Job(name="song", source=Source(url=url), mode=Mode.TWO)


def test_a_row_naming_the_same_url_matches_in_any_spelling() -> None:
    row = RemoteJob(
        id="7",
        status=RemoteStatus.PROCESSING,
        source_type="URL",
        input_path="https://E.com:443/a.mp3#x",
    )
    assert matches(_url_job("https://e.com/a.mp3"), row)


def test_a_row_whose_url_cannot_be_read_is_not_the_job() -> None:
    """A hostile or broken input_path (an unclosed IPv6 bracket) is no match, not a crash."""
    row = RemoteJob(
        id="7", status=RemoteStatus.PROCESSING, source_type="URL", input_path="https://[::1"
    )
    assert not matches(_url_job("https://e.com/a.mp3"), row)


class _Busy:
    """The real client, with another client's work done between page reads: ``between``
    runs after the n-th ``list_jobs`` (0-based) for each n it has an action for."""

    def __init__(
        self, api: ApiClient, between: dict[int, Callable[[list[RemoteJob]], Awaitable[None]]]
    ) -> None:
        self.api, self.between, self.reads = api, between, 0

    async def status(self, job_id: str) -> RemoteJob:
        return await self.api.status(job_id)

    async def list_jobs(self, *, skip: int = 0, limit: int = 50) -> list[RemoteJob]:
        rows = await self.api.list_jobs(skip=skip, limit=limit)
        action = self.between.get(self.reads)
        self.reads += 1
        if action is not None:
            await action(rows)
        return rows


async def _catalogue(api: ApiClient, *, before: int, after: int) -> str:
    """``before`` other jobs, then the job searched for, then ``after`` others (the job ends
    up ``after`` rows from the top of the list); returns its id."""
    for n in range(before):
        await api.submit_url(OTHER.format(n), mode="two", stem=None)
    mine = (await api.submit_url(MINE, mode="two", stem=None)).id
    for n in range(after):
        await api.submit_url(OTHER.format(before + n), mode="two", stem=None)
    return mine


def _create(api: ApiClient, count: int) -> Callable[[list[RemoteJob]], Awaitable[None]]:
    async def create(_rows: list[RemoteJob]) -> None:
        for n in range(count):
            await api.submit_url(OTHER.format(f"new{n}"), mode="two", stem=None)

    return create


def _delete(api: ApiClient, count: int) -> Callable[[list[RemoteJob]], Awaitable[None]]:
    async def delete(rows: list[RemoteJob]) -> None:
        for row in [r for r in rows if "mine" not in (r.input_path or "")][:count]:
            await api.delete_job(row.id)

    return delete


@pytest.mark.anyio
async def test_jobs_created_between_pages_do_not_make_one_job_two(sandbox: SandboxHandle) -> None:
    """Jobs created while the list is read push rows onto the next page: the job near the
    first page's end is read twice, and is still one candidate, not an ambiguous pair."""
    async with ApiClient(base_url=sandbox.base_url, api_key=sandbox.api_key) as api:
        mine = await _catalogue(api, before=60, after=PAGE_SIZE - 12)
        busy = _Busy(api, {0: _create(api, 30)})
        found = await search(busy, _url_job(MINE), intent_at=time.time() - 60, claimed=())
    assert busy.reads >= 2
    assert [c.id for c in found.candidates] == [mine]
    assert found.doubtful == 0


@pytest.mark.anyio
async def test_jobs_deleted_between_pages_do_not_hide_the_job(sandbox: SandboxHandle) -> None:
    """Jobs deleted among the rows already read pull the rows below them up past the next
    page's offset: the pages overlap, so the job just below the first page is still found
    (read without the overlap, it was missed, and the song would have been sent again)."""
    async with ApiClient(base_url=sandbox.base_url, api_key=sandbox.api_key) as api:
        mine = await _catalogue(api, before=50, after=PAGE_SIZE + 2)
        busy = _Busy(api, {0: _delete(api, 5)})
        found = await search(busy, _url_job(MINE), intent_at=time.time() - 60, claimed=())
    assert [c.id for c in found.candidates] == [mine]
    assert found.doubtful == 0


@pytest.mark.anyio
async def test_more_deletions_than_the_overlap_start_the_walk_again(sandbox: SandboxHandle) -> None:
    """Deletions past what the overlap absorbs leave two pages sharing no row: the walk
    starts again from the top and still finds the job; deletions that never stop make the
    answer doubtful, never "no job"."""
    async with ApiClient(base_url=sandbox.base_url, api_key=sandbox.api_key) as api:
        mine = await _catalogue(api, before=150, after=PAGE_SIZE + 5)
        once = _Busy(api, {0: _delete(api, 25)})
        found = await search(once, _url_job(MINE), intent_at=time.time() - 60, claimed=())
        assert [c.id for c in found.candidates] == [mine]
        assert found.doubtful == 0
        assert once.reads >= 3  # the gap was seen and the walk began again
        # Every first page read is followed by 15 deletions: every second page has a gap.
        restless = _Busy(api, {n: _delete(api, 15) for n in range(0, 12, 2)})
        listed = await read_job_list(restless, max_pages=50)
        assert not listed.complete
        answer = await search(
            _Busy(api, {n: _delete(api, 15) for n in range(0, 12, 2)}),
            _url_job(MINE),
            intent_at=time.time() - 60,
            claimed=(),
        )
    assert answer.doubtful >= 1
    assert len({r.id for r in listed.rows}) == len(listed.rows)
