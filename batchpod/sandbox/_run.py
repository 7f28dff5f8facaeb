"""Running the sandbox: in-process (`serve`) or on its own loop in a thread (`SandboxThread`).

Imports nothing from batchpod.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from aiohttp import web

from ._app import STATE, make_app
from ._settings import SandboxSettings
from ._state import SandboxState

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8765


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxHandle:
    """A running sandbox: where it listens, a key that works, and its live state."""

    base_url: str  # scheme://host:port, no trailing slash; the API lives at its root
    api_key: str
    settings: SandboxSettings
    state: SandboxState  # touch only from the sandbox's event loop

    def stats(self) -> dict[str, Any]:
        """The counters of `GET /_sandbox/stats`, as plain data."""
        return self.state.stats()


def is_loopback_host(host: str) -> bool:
    """Whether `host` names only this machine: `localhost` or a loopback IP literal."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket; OSError (port in use, bad address) propagates to the caller."""
    host = host.strip("[]")
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def serve(
    settings: SandboxSettings | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    clock: Callable[[], float] | None = None,
    allow_remote: bool = False,
) -> AsyncIterator[SandboxHandle]:
    """Serve a sandbox on `host:port` (0 picks a free port) for the life of the block.

    Refuses a non-loopback host (ValueError) unless `allow_remote`: the sandbox has no real
    security and is meant for this machine only.
    """
    settings = settings or SandboxSettings()
    if not allow_remote and not is_loopback_host(host):
        raise ValueError(
            f"refusing to serve the sandbox on {host!r}: it is not a loopback address "
            "(pass allow_remote=True / --allow-remote to override)"
        )
    sock = _bind(host, port)
    app = make_app(settings, clock=clock)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    handle = SandboxHandle(
        base_url=f"http://{shown}:{bound_port}",
        api_key=settings.api_key,
        settings=settings,
        state=app[STATE],
    )
    try:
        yield handle
    finally:
        await runner.cleanup()


class SandboxThread:
    """A sandbox on its own event loop in a daemon thread, for synchronous callers.

    ``with SandboxThread(settings) as sb:`` starts it and waits until it accepts connections;
    leaving the block stops it. Startup errors (port in use, bad host) are raised by
    ``__enter__``. The state lives on the sandbox's loop, so read it through `stats()`.
    """

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        clock: Callable[[], float] | None = None,
        allow_remote: bool = False,
    ) -> None:
        self._settings = settings or SandboxSettings()
        self._host = host
        self._port = port
        self._clock = clock
        self._allow_remote = allow_remote
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._handle: SandboxHandle | None = None
        self._error: BaseException | None = None

    @property
    def handle(self) -> SandboxHandle:
        """The running sandbox; only valid inside the `with` block."""
        if self._handle is None:
            raise RuntimeError("the sandbox thread is not running")
        return self._handle

    @property
    def base_url(self) -> str:
        """Scheme, host and port of the API."""
        return self.handle.base_url

    @property
    def api_key(self) -> str:
        """A ready `ap_` key."""
        return self.handle.api_key

    def __enter__(self) -> SandboxThread:
        if self._thread is not None:
            raise RuntimeError("a SandboxThread can be started once")
        self._thread = threading.Thread(target=self._run, name="batchpod-sandbox", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join()
        self._handle = None

    def call(self, fn: Callable[[SandboxState], Any]) -> Any:
        """Run `fn(state)` on the sandbox's loop and return its result (thread-safe)."""
        if self._loop is None:
            raise RuntimeError("the sandbox thread is not running")
        state = self.handle.state

        async def run() -> Any:
            return fn(state)

        future: Future[Any] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(timeout=30)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters, taken on the sandbox's loop."""
        return dict(self.call(SandboxState.stats))

    def reset_counters(self) -> None:
        """Zero the counters (see `SandboxState.reset_counters`)."""
        self.call(SandboxState.reset_counters)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__; a daemon thread has no one else
            if not self._ready.is_set():
                self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._settings,
            host=self._host,
            port=self._port,
            clock=self._clock,
            allow_remote=self._allow_remote,
        ) as handle:
            self._handle = handle
            self._ready.set()
            await self._stop.wait()
