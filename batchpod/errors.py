"""The batchpod exception tree: every condition batchpod reports to a person.

Foreign exceptions (yaml, aiohttp, sqlite3, OSError) are translated into these at their
module's seam with ``raise ... from exc``; nothing else escapes the library. The CLI is the one
place that prints them. Each class carries the exit code a command stopped by it ends with
(``exit_code``, an ``ExitCode``: the bracketed numbers below), inherited where none is shown;
this tree is the one table of them.

::

    BatchpodError                    [2]  root: anything batchpod raises on purpose
    ├── ManifestError                     the manifest cannot be used; carries every Problem
    ├── ConfigError                       a flag, environment variable or option is unusable
    ├── ApiError                     [69] talking to AudioPod failed (http_status, message,
    │   │                                 body_snippet); "AudioPod could not be used: ..."
    │   ├── AuthenticationError      [4]  401: the key is invalid or missing; stops the run
    │   │   └── KeyRevoked                403 about the key: revoked or expired (reason)
    │   ├── PermissionDenied              403 about the plan or mode (or a key's scopes):
    │   │                                 this job fails, the run goes on
    │   ├── InsufficientBalance           402 (required_cents, available_cents)
    │   ├── RequestRejected               400, 404, 413, 422, other 4xx: permanent for the job
    │   │   ├── JobNotFound               404 on a job's status or delete (job_id)
    │   │   ├── ApiKeyNotFound       [2]  404 on revoking an API key (key_id)
    │   │   └── UploadFileError           the local file to upload could not be read
    │   ├── RateLimited                   429 (retry_after_s)
    │   ├── ServerError                   5xx and 408 (retry_after_s)
    │   ├── TransportError                no usable HTTP exchange: refused, reset, DNS, TLS,
    │   │                                 timeout (sent)
    │   ├── InvalidResponse               a response batchpod cannot read: not JSON, wrong
    │   │                                 types, no id
    │   └── DownloadError                 a stem could not be fetched or written (transient)
    │       └── DownloadLinkExpired       403/404 from the storage host: fetch fresh links
    ├── MissingApiKey                [4]  the key's variable is unset or empty (variable)
    ├── BadApiKey                    [4]  the key's variable holds no ap_ key
    ├── KeyFileError                 [4]  the key file is missing, unreadable, readable by
    │                                     others, empty or holds no ap_ key (path, reason)
    ├── ResultsWriteError            [74] the results manifest could not be written
    ├── OutputError                  [74] the output folder cannot be created or written
    ├── StateError                        the state file is corrupt, foreign or unwritable
    ├── StateLocked                  [75] another run holds the state file's lock
    └── SourceFileError                   a local song in the manifest cannot be read

Each message says what is wrong and, where it can, how to fix it. No message, field or repr of
an ``ApiError`` holds the API key: server text passes through ``redact`` on the way in. Errors
about a key name where it came from (``source``: "AUDIOPOD_API_KEY", "key file PATH"), never
its value.

Two questions callers ask of an ``ApiError``: ``is_transient(exc)`` (may the same request
succeed if sent again later?) and ``outcome_unknown(exc)`` (may the server have acted on it,
so that a submit must be reconciled rather than sent again?).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import ClassVar


class ExitCode(IntEnum):
    """Exit codes of every batchpod command (documented in the README)."""

    OK = 0  # every job succeeded (or, for other commands, success)
    JOBS_FAILED = 1  # the run finished, but some jobs failed
    USAGE = 2  # a usage or manifest error: nothing was submitted
    BUDGET = 3  # stopped early: the budget or the wallet could not cover the next job
    AUTH = 4  # no key, or AudioPod refused it
    UNAVAILABLE = 69  # AudioPod could not be reached or answered wrongly before any work
    IO_ERROR = 74  # the results or stems could not be written (disk full, read-only, ...)
    LOCKED = 75  # another run holds this manifest's state: try again later
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


def exit_code_of(exc: BaseException) -> ExitCode | None:
    """The exit code that ``exc`` gives a command: the first ``BatchpodError`` (or Ctrl-C)
    found in it, task groups looked into; None when it is none of those (a bug)."""
    pending = [exc]
    while pending:
        item = pending.pop(0)
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        elif isinstance(item, BatchpodError):
            return item.exit_code
        elif isinstance(item, KeyboardInterrupt):
            return ExitCode.INTERRUPTED
    return None


class BatchpodError(Exception):
    """Root of every error batchpod raises on purpose."""

    #: The exit code of a command that this condition stops.
    exit_code: ClassVar[ExitCode] = ExitCode.USAGE
    #: Said before the message when it stops a command ("AudioPod could not be used: ").
    lead: ClassVar[str] = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One thing wrong with a manifest, at a 1-based line and column of its file (0: none)."""

    path: str
    line: int
    column: int
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        # Line 0 means the whole file (it could not be read or decoded at all).
        where = f"{self.path}:{self.line}:{self.column}" if self.line else self.path
        text = f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class ManifestError(BatchpodError):
    """The manifest has one or more problems; nothing may be submitted."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("ManifestError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{self.problems[0].path}: {len(self.problems)} {noun}")


class ConfigError(BatchpodError):
    """A command-line flag, environment variable or option value cannot be used."""


# -- talking to AudioPod ------------------------------------------------------------------

# `ap_` then the characters keys are made of, not preceded by a letter or digit (so words such
# as "map_size" are left alone). Keys are URL-safe tokens; dots, tildes and the base64
# punctuation are included so that no tail of an unusual key survives.
_KEY_PATTERN = re.compile(r"(?<![A-Za-z0-9])ap_[A-Za-z0-9_\-.~+/=]+")
_SNIPPET_CHARS = 200


def redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """``text`` with every AudioPod key in it (``ap_...`` and each of ``secrets``) as ``ap_***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "ap_***")
    return _KEY_PATTERN.sub("ap_***", text)


def _snippet(text: str | None) -> str | None:
    """A short, single-line, redacted excerpt of a response body for an error record."""
    if not text:
        return None
    flat = " ".join(redact(text).split())
    if len(flat) > _SNIPPET_CHARS:
        flat = flat[: _SNIPPET_CHARS - 1] + "…"
    return flat or None


class ApiError(BatchpodError):
    """A request to AudioPod, or a download of its results, did not give a usable answer.

    ``message`` says what happened and how to fix it; ``http_status`` is the response's status
    (``None`` when there was no response); ``body_snippet`` is a short redacted excerpt of the
    response body, for error records.
    """

    exit_code = ExitCode.UNAVAILABLE
    lead = "AudioPod could not be used: "

    def __init__(
        self, message: str, *, http_status: int | None = None, body_snippet: str | None = None
    ) -> None:
        self.message = redact(message)
        self.http_status = http_status
        self.body_snippet = _snippet(body_snippet)
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(http_status={self.http_status!r}, message={self.message!r})"


class AuthenticationError(ApiError):
    """The API key was refused: missing, wrong, revoked or expired. No request can succeed.

    ``source`` says where the refused key came from, for people ("AUDIOPOD_API_KEY", "key
    file /run/secrets/audiopod"); ``None`` when unknown. It never holds the key.
    """

    exit_code = ExitCode.AUTH
    lead = ""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        http_status: int | None = None,
        body_snippet: str | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, body_snippet=body_snippet)
        self.source = source


class KeyRevoked(AuthenticationError):
    """A 403 about the key itself: revoked or expired (api-keys.mdx), not about the plan.

    ``reason`` is ``"revoked"`` or ``"expired"`` when AudioPod's answer said which, else
    ``None`` (a 403 that named neither the key nor the plan, outside a submit).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        source: str | None = None,
        http_status: int | None = 403,
        body_snippet: str | None = None,
    ) -> None:
        super().__init__(message, source=source, http_status=http_status, body_snippet=body_snippet)
        self.reason = reason


class PermissionDenied(ApiError):
    """The key works, but its plan (a gated mode) or its scopes may not do what is asked."""


class InsufficientBalance(ApiError):
    """The wallet (and any plan credits) cannot pay for the job (402)."""

    def __init__(
        self,
        message: str,
        *,
        required_cents: int | None = None,
        available_cents: int | None = None,
        http_status: int | None = 402,
        body_snippet: str | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, body_snippet=body_snippet)
        self.required_cents = required_cents
        self.available_cents = available_cents


class RequestRejected(ApiError):
    """AudioPod refused the request as it stands; sending it again will not help."""


class JobNotFound(RequestRejected):
    """The job does not exist for this key (deleted, never created, or another key's)."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        http_status: int | None = 404,
        body_snippet: str | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, body_snippet=body_snippet)
        self.job_id = job_id


class ApiKeyNotFound(RequestRejected):
    """No API key with this id belongs to the account (never made, or another account's)."""

    exit_code = ExitCode.USAGE
    lead = ""

    def __init__(
        self,
        message: str,
        *,
        key_id: str | None = None,
        http_status: int | None = 404,
        body_snippet: str | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, body_snippet=body_snippet)
        self.key_id = key_id


class UploadFileError(RequestRejected):
    """The local file to upload could not be opened or read; nothing was sent."""


class RateLimited(ApiError):
    """AudioPod asked us to slow down (429); ``retry_after_s`` is its hint, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        http_status: int | None = 429,
        body_snippet: str | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, body_snippet=body_snippet)
        self.retry_after_s = retry_after_s


class ServerError(ApiError):
    """AudioPod or a proxy in front of it failed (5xx, or 408).

    ``transient`` for 408, 500, 502, 503 and 504, which usually pass; other 5xx (501 Not
    Implemented, 505, ...) say the request will not work as it stands.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
        body_snippet: str | None = None,
        transient: bool = True,
    ) -> None:
        super().__init__(message, http_status=http_status, body_snippet=body_snippet)
        self.retry_after_s = retry_after_s
        self.transient = transient


class TransportError(ApiError):
    """No usable HTTP exchange: connection refused or reset, DNS, TLS, or a timeout.

    ``sent`` is ``False`` when the request certainly never reached the server (it could not
    connect), ``True`` when it may have (the connection broke or timed out after sending), and
    ``None`` when unknown (treat as ``True``). A submit with ``sent`` not ``False`` may have
    created a job.
    """

    def __init__(
        self,
        message: str,
        *,
        sent: bool | None = None,
        http_status: int | None = None,
        body_snippet: str | None = None,
        timed_out: bool = False,
        transient: bool = True,
    ) -> None:
        super().__init__(message, http_status=http_status, body_snippet=body_snippet)
        self.sent = sent
        self.timed_out = timed_out  # a time limit ran out (connect, read or total)
        self.transient = transient  # False for a TLS failure: a certificate will not heal

    def __repr__(self) -> str:
        return f"TransportError(sent={self.sent!r}, message={self.message!r})"


class InvalidResponse(ApiError):
    """AudioPod answered with something batchpod cannot use: not JSON, wrong types, no id."""


class DownloadError(ApiError):
    """A stem could not be downloaded or written: storage host trouble, size mismatch, disk.

    ``transient`` is ``True`` when the same URL may work if fetched again (a dropped or
    short transfer, a timeout, a 5xx from storage); a disk error or an oversized body is not.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        transient: bool = False,
        body_snippet: str | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, body_snippet=body_snippet)
        self.transient = transient


class DownloadLinkExpired(DownloadError):
    """The storage host refused the link (403/404): fetch the job's status for fresh links."""


def is_transient(exc: BaseException) -> bool:
    """Whether the request that raised ``exc`` may succeed if sent again later.

    True for ``RateLimited``, and for a ``ServerError``, ``TransportError`` or ``DownloadError``
    marked transient (408, 500, 502, 503, 504; connection trouble and timeouts, but not TLS).
    Whether retrying is *safe* is another question: see ``outcome_unknown``.
    """
    if isinstance(exc, DownloadError):
        return exc.transient and not isinstance(exc, DownloadLinkExpired)
    if isinstance(exc, ServerError | TransportError):
        return exc.transient
    return isinstance(exc, RateLimited)


def outcome_unknown(exc: BaseException) -> bool:
    """Whether the server may have acted on the request that raised ``exc``.

    For a submit this means the job may exist (and be charged) although no id came back:
    a transport failure after sending, a 5xx (a proxy may give up on a backend that carries
    on), or an unreadable answer. A caller reconciles (lists jobs) before submitting again.
    """
    if isinstance(exc, TransportError):
        return exc.sent is not False
    if isinstance(exc, ServerError):
        return exc.http_status != 408  # the server gave up *receiving* the request
    return isinstance(exc, InvalidResponse)


# -- the run's own conditions ---------------------------------------------------------------


class MissingApiKey(BatchpodError):
    """No API key in the environment variable batchpod was told to read."""

    exit_code = ExitCode.AUTH

    def __init__(self, *, variable: str) -> None:
        self.variable = variable
        super().__init__(
            f"no API key: set {variable} (or try batchpod without an account: --sandbox)"
        )


class ResultsWriteError(BatchpodError):
    """The results manifest, or a report of it, could not be written (disk full, read-only
    folder, ...); ``what`` names which."""

    exit_code = ExitCode.IO_ERROR

    def __init__(self, *, path: Path, reason: str, what: str = "the results") -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot write {what} to {path}: {reason}")


class StateError(BatchpodError):
    """The state file cannot be used: corrupt, foreign, unreadable or unwritable."""

    def __init__(self, *, path: Path, reason: str, during_run: bool = False) -> None:
        self.path = path
        self.reason = reason
        if during_run:
            advice = (
                "jobs may be in flight: fix the cause (disk space, permissions) and re-run "
                "the same command, which picks up from the state"
            )
        else:
            advice = (
                "nothing was changed; a fresh state (--state PATH) would submit, and pay "
                "for, every job again"
            )
        super().__init__(f"state file {path}: {reason}; {advice}")


class StateLocked(BatchpodError):
    """Another run holds the state file's lock."""

    exit_code = ExitCode.LOCKED

    def __init__(self, *, path: Path, holder_pid: str | None) -> None:
        self.path = path
        self.holder_pid = holder_pid  # None: runs of another shard layout are reading it
        holder = f"pid {holder_pid}" if holder_pid else "of another shard layout"
        super().__init__(
            f"another batchpod run ({holder}) is using this state ({path}); "
            "try again when it has finished"
        )


class SourceFileError(BatchpodError):
    """A local song listed in the manifest cannot be read (to hash or upload it)."""

    def __init__(self, *, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read {path}: {reason}")


class BadApiKey(BatchpodError):
    """The key in the environment is not shaped like an AudioPod key (``ap_...``)."""

    exit_code = ExitCode.AUTH

    def __init__(self, *, variable: str) -> None:
        self.variable = variable
        super().__init__(
            f"the key in {variable} is not an AudioPod API key (those start with ap_): "
            "copy it again from the AudioPod dashboard"
        )


class KeyFileError(BatchpodError):
    """The key file cannot be used: missing, unreadable, open to other users, empty, or not
    holding an ``ap_`` key. ``reason`` says which and how to fix it; nothing here ever holds
    the file's content."""

    exit_code = ExitCode.AUTH

    def __init__(self, *, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"key file {path}: {reason}")


class OutputError(BatchpodError):
    """The output folder (or bucket) cannot be created or written."""

    exit_code = ExitCode.IO_ERROR

    def __init__(self, *, path: Path | str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot write stems to {path}: {reason}")


class FleetStateError(BatchpodError):
    """A PostgreSQL state that batchpod cannot use: written by another batchpod (an unknown
    schema version), not batchpod's tables, or refused by the server. ``where`` names the
    database without its password."""

    def __init__(self, *, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"state database {where}: {reason}; nothing was changed")


class DatabaseUnavailable(BatchpodError):
    """The PostgreSQL state could not be reached (no server, refused login, network)."""

    exit_code = ExitCode.UNAVAILABLE
    lead = "the state database could not be used: "

    def __init__(self, *, where: str, reason: str, during_run: bool = False) -> None:
        self.where = where
        self.reason = reason
        advice = (
            "jobs may be in flight: when it is back, run the same command again"
            if during_run
            else "nothing was submitted"
        )
        super().__init__(f"cannot reach {where}: {reason}; {advice}")


class LeaseLost(BatchpodError):
    """This worker's lease lapsed while it worked: its jobs are other workers' to take over."""

    exit_code = ExitCode.LOCKED

    def __init__(self, *, where: str, jobs: int) -> None:
        self.where = where
        self.jobs = jobs
        super().__init__(
            f"this worker's lease in {where} lapsed, so its jobs are other workers' to take "
            "over; it stopped so as not to work them twice"
        )
