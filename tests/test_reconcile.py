"""Reconciliation's matching rules on rows the server sends, with no server."""

from __future__ import annotations

from batchpod.client import RemoteJob, RemoteStatus
from batchpod.models import Job, Mode, Source
from batchpod.reconcile import matches


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
