"""Dead-man's-switch pings: ``URL/start`` when a run starts, ``URL`` when it ends with exit
code 0, ``URL/fail`` otherwise (Healthchecks.io's convention, which Cronitor, Uptime Kuma's
push monitors and borgmatic's hooks follow too).

Owns building and sending the pings. A ping is one POST with a plain-text body (the exit code
and the run's counts and spend, as ``batchpod run`` prints them); it carries no header but
the User-Agent and the body's type, so never the API key, and the caller puts nothing in the
body that holds a signed link. A ping that cannot be sent is logged (the first failure only:
a ping server that is down is one problem) and changes nothing in the run or its exit code.
Blocking: the CLI sends them before and after the run, off its event loop.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from batchpod._version import __version__

log = logging.getLogger("batchpod")

#: How long one ping may take before it is given up.
PING_TIMEOUT_S = 10.0
#: A body longer than this is cut (Healthchecks keeps the first 100 kB of one).
MAX_BODY_BYTES = 10_000


def check_ping_url(url: str) -> str:
    """``url`` if it can take pings (http or https, with a host); else ``ValueError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return url


def why_unsent(exc: BaseException) -> str:
    """Why urllib could not send a request, in a few words (never the URL: it may hold a
    check's secret)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return getattr(reason, "strerror", None) or str(reason)
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Pinger:
    """Pings to one check's URL (see the module docstring)."""

    def __init__(self, url: str, *, timeout_s: float = PING_TIMEOUT_S) -> None:
        self.url = check_ping_url(url)
        self.timeout_s = timeout_s
        self.sent: list[str] = []  # the kinds of the pings that were answered
        self._warned = False

    def start(self, body: str = "") -> bool:
        """The run has started."""
        return self._send("start", "/start", body)

    def finish(self, exit_code: int, body: str = "") -> bool:
        """The run ended with ``exit_code``: a success ping for 0, else a failure ping with
        the exit code on the body's first line."""
        if exit_code == 0:
            return self._send("success", "", body)
        return self._send("fail", "/fail", f"exit code {exit_code}\n{body}")

    def address(self, suffix: str) -> str:
        """The check's URL with ``suffix`` added to its path (its query kept)."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix))

    def _send(self, kind: str, suffix: str, body: str) -> bool:
        data = body.encode("utf-8")[:MAX_BODY_BYTES]
        request = urllib.request.Request(
            self.address(suffix),
            data=data,
            method="POST",
            headers={
                "User-Agent": f"batchpod/{__version__}",
                "Content-Type": "text/plain; charset=utf-8",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read(MAX_BODY_BYTES)
        except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
            if not self._warned:
                self._warned = True
                log.warning(
                    "the %s ping to %s failed: %s (the run's outcome is unchanged; later ping "
                    "failures are not logged)",
                    kind,
                    urlsplit(self.url).hostname,
                    why_unsent(exc),
                )
            return False
        self.sent.append(kind)
        return True
