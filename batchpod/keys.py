"""Where the API key comes from, and the pre-flight check that AudioPod accepts it.

Owns reading a key from an environment variable or from a key file (as secret managers mount
them), describing that place for messages ("AUDIOPOD_API_KEY", "key file /run/secrets/x"),
and ``check_key``, the cheapest authenticated call. It must not know argparse, terminals or
exit codes (the CLI picks the source and reports the errors), nor HTTP (``ApiClient`` does).

No message, field or repr here ever holds a key or any part of a key file's content::

    KeySource(kind="env" | "file", name=)  frozen; .env(VAR), .file(PATH), .describe()
    read_key(source, environ=None) -> str  the key; MissingApiKey, BadApiKey or KeyFileError
    KeyCheck                               what check_key learnt (frozen)
    async check_key(api) -> KeyCheck       GET /api-wallet/balance with the client's key
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from batchpod.client import DEFAULT_KEY_SOURCE, ApiClient, is_key_shaped
from batchpod.errors import BadApiKey, KeyFileError, MissingApiKey

#: The environment variable batchpod reads the key from unless told otherwise.
DEFAULT_KEY_VARIABLE: Final = DEFAULT_KEY_SOURCE
#: A key is ~40 bytes; a key file far larger than that is the wrong file.
MAX_KEY_FILE_BYTES: Final = 4096
# Refused in a key file's mode: any access by group or others (read, write or execute).
_SHARED_BITS: Final = 0o077

KeySourceKind = Literal["env", "file"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySource:
    """Where to read the key: an environment variable (``kind="env"``, ``name`` the variable)
    or a file (``kind="file"``, ``name`` its path). Holds no key."""

    kind: KeySourceKind
    name: str

    def __post_init__(self) -> None:
        if self.kind not in ("env", "file"):
            raise ValueError(f"a key source is 'env' or 'file', got {self.kind!r}")
        if not isinstance(self.name, str) or not self.name or "\0" in self.name:
            raise ValueError("a key source needs a variable name or a file path")
        if self.kind == "env" and "=" in self.name:
            raise ValueError(f"{self.name!r} cannot be an environment variable's name")

    @classmethod
    def env(cls, variable: str = DEFAULT_KEY_VARIABLE) -> KeySource:
        """The key in environment variable ``variable``."""
        return cls(kind="env", name=variable)

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> KeySource:
        """The key in the file at ``path`` (alone, maybe with a trailing newline)."""
        return cls(kind="file", name=os.fspath(path))

    def describe(self) -> str:
        """How messages name this place: ``AUDIOPOD_API_KEY`` or ``key file PATH``; pass it
        to ``ApiClient(key_source=...)``."""
        return self.name if self.kind == "env" else f"key file {self.name}"

    def __str__(self) -> str:
        return self.describe()


def read_key(source: KeySource, environ: Mapping[str, str] | None = None) -> str:
    """The API key at ``source``, with surrounding whitespace (a trailing newline) removed.

    From the environment (``environ``, default ``os.environ``): ``MissingApiKey`` when the
    variable is unset or blank, ``BadApiKey`` when it holds something that is not an ``ap_``
    key. From a file: ``KeyFileError`` when the file is missing, unreadable, not a regular
    file, open to group or others (mode ``& 0o077``; the message says ``chmod 600 PATH``),
    empty, larger than ``MAX_KEY_FILE_BYTES`` or not one ``ap_`` key. The file's mode is
    checked on the opened file before a byte is read. No error holds the content.
    """
    if source.kind == "env":
        env = os.environ if environ is None else environ
        value = env.get(source.name, "").strip()
        if not value:
            raise MissingApiKey(variable=source.name)
        if not is_key_shaped(value):
            raise BadApiKey(variable=source.name)
        return value
    return _read_key_file(Path(source.name))


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCheck:
    """What ``check_key`` learnt: which key answered and the wallet it reads.

    ``source`` is the key that answered (``ApiClient.key_source``); ``switched_to`` is set
    when the client's first key was refused and its fallback answered instead.

    On low-balance warnings the contract (§6.1) has two fields, neither of which says whether
    a user *configured* a warning: the current docs' ``low_balance_warning`` (a boolean, read
    as "the balance is under the warning threshold"; the docs do not define it) and the
    Dec-2025 docs' ``warning_threshold_cents`` (500 in their example). Each is ``None`` when
    the balance answer does not carry it.
    """

    source: str
    balance_cents: int
    low_balance_warning: bool | None = None
    warning_threshold_cents: int | None = None
    switched_to: str | None = None


async def check_key(api: ApiClient) -> KeyCheck:
    """Test the client's key with ``GET /api/v1/api-wallet/balance`` (the docs' own "test
    your key" call, §6.1) and return what the balance says.

    A refused key raises ``AuthenticationError`` (401: "invalid or missing key: check
    SOURCE") or its subclass ``KeyRevoked`` (403: "key revoked or expired: create a new key
    and put it in SOURCE"), naming where the key came from, never the key. With a fallback
    key the client switches to it first (see ``ApiClient``). One request, no retries: wrap it
    in ``batchpod.flow.with_retries`` to ride out transient failures.
    """
    balance = await api.balance()
    return KeyCheck(
        source=api.key_source,
        balance_cents=balance.balance_cents,
        low_balance_warning=balance.low_balance_warning,
        warning_threshold_cents=balance.warning_threshold_cents,
        switched_to=api.switched_to,
    )


# -- key files ---------------------------------------------------------------------------------


def _read_key_file(path: Path) -> str:
    """The key in ``path``; see ``read_key``. Opened once: the checks and the read concern
    the same file, whatever is renamed over the path meanwhile."""
    # O_NONBLOCK: opening a FIFO planted at the path must not hang the run; it is refused
    # below as not a regular file. It changes nothing for a regular file.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KeyFileError(
            path=path, reason="no such file: check the path (or that the secret is mounted)"
        ) from None
    except OSError as exc:
        raise KeyFileError(path=path, reason=f"cannot open it ({_why(exc)})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(path=path, reason="not a regular file: give the key file itself")
        mode = stat.S_IMODE(info.st_mode)
        # Windows has no such bits (its modes say only read-only or not): nothing to check.
        if os.name == "posix" and mode & _SHARED_BITS:
            raise KeyFileError(
                path=path,
                reason=(
                    f"other users can read or change it (mode {mode:04o}); make it private "
                    f"to you: chmod 600 {shlex.quote(str(path))}"
                ),
            )
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(
                path=path,
                reason=f"{info.st_size} bytes is too large for a key file: is it the right file?",
            )
        raw = _read_at_most(fd, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(path=path, reason=f"cannot read it ({_why(exc)})") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_KEY_FILE_BYTES:  # grew between fstat and read
        raise KeyFileError(path=path, reason="too large for a key file: is it the right file?")
    try:
        text = raw.decode("utf-8-sig")  # a BOM, as some editors write, is not part of the key
    except UnicodeDecodeError:
        text = None
    key = text.strip() if text is not None else None
    if key == "":
        raise KeyFileError(path=path, reason="it is empty: write the API key into it")
    if key is None or not is_key_shaped(key):
        raise KeyFileError(
            path=path,
            reason=(
                "it does not hold one AudioPod API key (a single ap_... token): write the key "
                "alone into it, copied from the AudioPod dashboard"
            ),
        )
    return key


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _why(exc: OSError) -> str:
    """The OS's reason, without the file name or anything else from the exception."""
    return exc.strerror or type(exc).__name__
