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
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest

from batchpod.sandbox import SandboxHandle, SandboxSettings, SandboxThread, serve

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
