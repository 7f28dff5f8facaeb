"""Headless Chromium for the tests, driven over the DevTools protocol (CDP) on loopback.

``Browser`` starts Debian's ``chromium`` (``--headless``, a throwaway profile, a DevTools
port the browser picks and writes to ``DevToolsActivePort``) and ``visit`` opens one file
in a new tab and reports what happened there: every console message and uncaught exception
of level error (a Content-Security-Policy violation is one), every URL the page requested
(the document's own ``file:`` URL included), how long the load took, the size of each
``<svg>`` on the page and a PNG screenshot of the whole page. The protocol runs over an
aiohttp WebSocket; nothing here is mocked.

``chromium_path`` is None when no Chromium is installed; the tests then skip, saying how
to install it (CI does: ``.ci/run``).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, WSMsgType

FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root in a container
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
INSTALL = "Debian's chromium is not installed (apt-get install -y chromium; CI installs it)"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Visit:
    """What opening one page showed."""

    errors: list[str] = field(default_factory=list)  # console errors and exceptions
    requests: list[str] = field(default_factory=list)  # every URL requested, in order
    load_s: float = 0.0  # navigation to the load event
    svgs: list[dict[str, float]] = field(default_factory=list)  # each <svg>'s box, in CSS px
    screenshot: bytes = b""  # PNG of the whole page at device scale 1
    title: str = ""


class Browser:
    """One headless Chromium for a test module's visits."""

    def __init__(self, executable: str) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="batchpod-chromium-")
        self._process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        self.port = int(port_file.read_text().splitlines()[0])

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._profile.cleanup()

    def visit(self, page: Path, *, width: int = 1100, timeout: float = 60) -> Visit:
        """Open ``page`` (a file) in a new tab ``width`` CSS pixels wide and report on it."""
        return asyncio.run(asyncio.wait_for(self._visit(page.resolve().as_uri(), width), timeout))

    async def _visit(self, url: str, width: int) -> Visit:
        base = f"http://127.0.0.1:{self.port}"
        async with ClientSession() as http:
            async with http.put(f"{base}/json/new?about:blank") as reply:
                target = await reply.json()
            try:
                async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    return await _Tab(ws).visit(url, width)
            finally:
                async with http.get(f"{base}/json/close/{target['id']}") as reply:
                    await reply.read()


class _Tab:
    """One page target's protocol session: commands by id, events gathered as they come."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._loaded = asyncio.Event()
        self.result = Visit()

    async def visit(self, url: str, width: int) -> Visit:
        reader = asyncio.create_task(self._read())
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                await self._call(f"{domain}.enable")
            await self._call(
                "Emulation.setDeviceMetricsOverride",
                width=width, height=900, deviceScaleFactor=1, mobile=False,
            )  # fmt: skip
            started = time.monotonic()
            await self._call("Page.navigate", url=url)
            await self._loaded.wait()
            self.result.load_s = time.monotonic() - started
            boxes = await self._call(
                "Runtime.evaluate",
                expression=(
                    "JSON.stringify({title: document.title, svgs: [...document.querySelectorAll"
                    "('body > svg')].map(e => { const r = e.getBoundingClientRect(); return "
                    "{x: r.x, y: r.y + window.scrollY, width: r.width, height: r.height}; })})"
                ),
                returnByValue=True,
            )
            found = json.loads(boxes["result"]["value"])
            self.result.svgs, self.result.title = found["svgs"], found["title"]
            metrics = await self._call("Page.getLayoutMetrics")
            size = metrics["cssContentSize"]
            shot = await self._call(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
            self.result.screenshot = base64.b64decode(shot["data"])
            return self.result
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        reply = self._waiting[ident] = asyncio.get_running_loop().create_future()
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        return await reply

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"])
                if "error" in data:
                    future.set_exception(RuntimeError(f"CDP: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            else:
                self._event(data["method"], data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Network.requestWillBeSent":
            self.result.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            self.result.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            thrown = details.get("exception", {}).get("description", "")
            self.result.errors.append(f"exception: {details.get('text')} {thrown}".strip())
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.result.errors.append(f"{entry.get('source')}: {entry.get('text')}")


@contextmanager
def browser() -> Iterator[Browser]:
    """A running ``Browser``; the caller has checked ``chromium_path()``."""
    executable = chromium_path()
    assert executable is not None
    running = Browser(executable)
    try:
        yield running
    finally:
        running.close()
