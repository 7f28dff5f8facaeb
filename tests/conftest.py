"""Shared fixtures: the AudioPod sandbox, served over real loopback sockets.

- ``anyio_backend``: "asyncio" (aiohttp is asyncio-only). Async tests use ``@pytest.mark.anyio``.
- ``FakeClock`` / ``fake_clock``: a clock (Unix seconds) that only moves when told, to walk a
  job through PENDING -> PROCESSING -> COMPLETED/FAILED, expire URLs or refill rate limits
  without sleeping. Pass it as ``clock=`` to a factory below.
- ``FAST``: settings for tests: jobs finish 0.05-0.2 s after submit, no injected faults.
- ``sandbox``: an in-process sandbox with ``FAST`` settings on 127.0.0.1 and a free port; a
  ``SandboxHandle`` with ``.base_url``, ``.api_key``, ``.state`` and ``.stats()``.
- ``sandbox_factory``: ``async with sandbox_factory(clock=..., **knobs) as sb:`` for a sandbox
  with other knobs (``FAST`` overridden by ``knobs``).
- ``sandbox_thread``: a ``SandboxThread`` with ``FAST`` settings, for synchronous callers such
  as ``batchpod.cli.main([...])`` or the official SDK; read counters with ``.stats()``.
- ``http``: an ``aiohttp.ClientSession`` closed after the test.
- ``clean_env``: no ``AUDIOPOD_*`` variable leaks in from the environment running the tests
  (``pytestmark = pytest.mark.usefixtures("clean_env")`` in a module that wants it).
- ``Quiet``: a Reporter that reports nothing.
- ``postgres``: one real PostgreSQL server for the session (``tests/pg.py``), on loopback
  with a password; ``pg_url``: a ``postgresql://`` URL of a fresh database for one test.
- ``write_manifest(folder, body, **top)``, ``run_cli(sb, path, *args)``, ``results_of(path)``:
  a manifest (with ``song.wav`` beside it), ``batchpod run`` against a ``SandboxThread`` with
  its key, and the results file's data.
"""

from __future__ import annotations

import dataclasses
import io
import os
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from pg import PgServer

from batchpod.cli import main
from batchpod.models import Job, JobResult
from batchpod.sandbox import SandboxHandle, SandboxSettings, SandboxThread, serve

SONG = Path(__file__).resolve().parent.parent / "examples" / "audio" / "chords.wav"

FAST = SandboxSettings(processing_s=(0.05, 0.2))

SandboxFactory = Callable[..., AbstractAsyncContextManager[SandboxHandle]]


class FakeClock:
    """A settable clock in Unix seconds; call it to read, `advance()` to move it."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`."""
        self.now += seconds


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A PostgreSQL server from the pgserver wheel, for every test of the session."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres: PgServer) -> str:
    """A fresh, empty database's URL (with its password) for one test."""
    return postgres.url(postgres.database())


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AudioPod variables leak in from the environment running the tests."""
    for name in list(os.environ):
        if name.startswith("AUDIOPOD_"):
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio, the only loop aiohttp supports."""
    return "asyncio"


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fresh FakeClock at 2026-01-01T00:00:00Z."""
    return FakeClock()


@pytest.fixture
async def sandbox(anyio_backend: str) -> AsyncIterator[SandboxHandle]:
    """A sandbox with FAST settings on a free loopback port."""
    async with serve(FAST) as sb:
        yield sb


@pytest.fixture
def sandbox_factory(anyio_backend: str) -> SandboxFactory:
    """Build `serve(...)` contexts with FAST settings overridden by keyword knobs."""

    def factory(
        *, clock: Callable[[], float] | None = None, **knobs: Any
    ) -> AbstractAsyncContextManager[SandboxHandle]:
        return serve(dataclasses.replace(FAST, **knobs), clock=clock)

    return factory


@pytest.fixture
def sandbox_thread() -> Iterator[SandboxThread]:
    """A sandbox with FAST settings on its own thread, for synchronous code."""
    with SandboxThread(FAST) as sb:
        yield sb


@pytest.fixture
async def http(anyio_backend: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session for talking to a sandbox."""
    async with aiohttp.ClientSession() as session:
        yield session


def write_manifest(folder: Path, body: str, **top: Any) -> Path:
    """``folder/jobs.yaml`` with ``top`` keys and the ``body`` job lines; ``song.wav`` beside."""
    (folder / "song.wav").write_bytes(SONG.read_bytes())
    head = "".join(f"{key}: {value}\n" for key, value in top.items())
    path = folder / "jobs.yaml"
    path.write_text("version: 1\n" + head + "jobs:\n" + textwrap.dedent(body), encoding="utf-8")
    return path


def run_cli(sb: SandboxThread, path: Path, *args: str) -> tuple[int, str, str]:
    """``batchpod run PATH ARGS`` against ``sb`` with its key: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.get("AUDIOPOD_API_KEY")
    os.environ["AUDIOPOD_API_KEY"] = sb.api_key
    try:
        code = main(["run", str(path), "--base-url", sb.base_url, *args], stdout=out, stderr=err)
    finally:
        if saved is None:
            os.environ.pop("AUDIOPOD_API_KEY", None)
        else:
            os.environ["AUDIOPOD_API_KEY"] = saved
    return code, out.getvalue(), err.getvalue()


def results_of(path: Path) -> dict[str, Any]:
    """The data of the results file beside manifest ``path`` (YAML)."""
    data: dict[str, Any] = yaml.safe_load(path.with_name(f"{path.stem}.results.yaml").read_text())
    return data


class Quiet:
    """A Reporter that reports nothing."""

    def job_event(self, job: Job, event: str, detail: str = "") -> None:
        pass

    def job_finished(self, result: JobResult) -> None:
        pass

    def spent(self, cents: int) -> None:
        pass
