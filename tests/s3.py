"""A real S3 protocol server on loopback for the tests: ``moto`` in server mode, in a child
process of its own, with a fault-injecting proxy in front of it.

``S3Server`` starts ``moto``'s threaded server on 127.0.0.1 and a free port (its smallest
multipart part lowered to 64 KiB, so that stems of a few hundred KB go up in several parts,
as S3 itself would take 5 MiB ones). ``FaultProxy`` forwards every request to it, byte for
byte, and on the way: answers 503 to the first attempt of the part uploads it is told to
fail, may hold each part upload a while (so that a kill lands in the middle of one), counts
what it forwarded, and looks for a given secret (the AudioPod key) in every request line,
header and body. ``boto3`` clients talk to the server directly, to see what it holds.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from aiohttp import ClientSession, web

ACCESS_KEY = "AKIATESTBATCHPOD0001"
SECRET_KEY = "s3-secret-Key-batchpod-tests-9c1e"  # scanned for in what batchpod writes
REGION = "us-east-1"

_SERVE = """
import os, sys, time
os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(64 * 1024)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the test closes it
server.stop()
"""


class S3Server:
    """moto's S3 server in a child process; ``url`` is its http://127.0.0.1:PORT."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self._proc.kill()
            raise RuntimeError(f"moto's server did not start: {line!r}")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        """A boto3 S3 client on the server itself (not through any proxy)."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def environment() -> dict[str, str]:
    """The AWS variables a batchpod run reads its credentials from."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        # Never the metadata server: credentials come from the variables above only.
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@dataclass
class Seen:
    """What the proxy forwarded."""

    requests: int = 0
    part_puts: int = 0  # part uploads begun (each attempt)
    faults: int = 0  # 503s answered in place of the server
    completes: int = 0  # multipart uploads completed
    refused: int = 0  # requests answered 403 by ``refuse``
    secret_hits: list[str] = field(default_factory=list)  # where the secret was seen
    methods: Counter[str] = field(default_factory=Counter)


class FaultProxy:
    """An HTTP proxy to ``upstream`` on loopback, in a thread of its own (see the module
    docstring). ``fail(key, part)`` says whether the first attempt of that part upload is
    answered 503 (with ``every_attempt``, every attempt)."""

    def __init__(
        self,
        upstream: str,
        *,
        secret: str,
        fail: Callable[[str, int], bool] = lambda key, part: False,
        part_delay_s: float = 0.0,
        every_attempt: bool = False,
        refuse: Callable[[str, str, Mapping[str, str]], bool] = lambda method, path, query: False,
    ) -> None:
        self.upstream = upstream
        self.secret = secret.encode()
        self.fail = fail
        self.part_delay_s = part_delay_s
        self.every_attempt = every_attempt  # fail every attempt, not only the first
        self.refuse = refuse  # (method, path, query): answer 403 AccessDenied in its place
        self.seen = Seen()
        self._failed: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        self.url = f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with ClientSession(auto_decompress=False) as self._session:
            self._ready.set()
            await self._stop.wait()
        await runner.cleanup()

    def _look(self, where: str, data: bytes) -> None:
        if self.secret in data:
            with self._lock:
                self.seen.secret_hits.append(where)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self._look(f"{request.method} {request.path_qs}", request.path_qs.encode())
        for name, value in request.headers.items():
            self._look(f"header {name}", value.encode())
        self._look(f"body of {request.method} {request.path}", body)
        if self.refuse(request.method, request.path, request.query):
            with self._lock:
                self.seen.refused += 1
            denied = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            return web.Response(status=403, text=denied, content_type="application/xml")
        part = request.query.get("partNumber")
        with self._lock:
            self.seen.requests += 1
            self.seen.methods[request.method] += 1
            if request.method == "POST" and "uploadId" in request.query:
                self.seen.completes += 1
        if request.method == "PUT" and part is not None:
            with self._lock:
                self.seen.part_puts += 1
                attempt = (request.path, int(part))
                first = attempt not in self._failed
                self._failed.add(attempt)
            if self.part_delay_s:
                await asyncio.sleep(self.part_delay_s)
            if (first or self.every_attempt) and self.fail(request.path, int(part)):
                with self._lock:
                    self.seen.faults += 1
                return web.Response(status=503, text="SlowDown")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as answer:
            payload = await answer.read()
            skip = {"content-length", "transfer-encoding", "content-encoding", "connection"}
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in skip}
            if request.method == "HEAD":
                # No body, but the object's length, which a HEAD answer exists to give.
                reply = web.StreamResponse(status=answer.status, headers=kept)
                reply.content_length = int(answer.headers.get("Content-Length", 0))
                await reply.prepare(request)
                return reply
            return web.Response(status=answer.status, headers=kept, body=payload)

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class Lister:
    """Lists a bucket over and over in a thread, checking that every object it sees is
    whole: ``check(key, size)`` returns what is wrong with it, or None."""

    def __init__(self, client: Any, bucket: str, check: Callable[[str, int], str | None]) -> None:
        self.client = client
        self.bucket = bucket
        self.check = check
        self.rounds = 0
        self.objects_seen = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _objects(self) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        for page in pages:
            yield from page.get("Contents", [])

    def _run(self) -> None:
        while not self._stop.is_set():
            for item in self._objects():
                self.objects_seen += 1
                wrong = self.check(item["Key"], item["Size"])
                if wrong is not None:
                    self.problems.append(wrong)
            self.rounds += 1
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
