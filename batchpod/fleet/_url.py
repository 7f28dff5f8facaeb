"""A PostgreSQL state's address: recognised, and named for people without its password.

The URL goes to libpq unchanged, so the password may come from the URL, ``PGPASSWORD`` or
``~/.pgpass`` exactly as for ``psql`` (several hosts, ``h1:5432,h2:5433``, and query
parameters included). Everything batchpod prints, logs or writes names the database by
``DatabaseUrl.where`` (user, hosts and database, never the password), and every message
from the driver is passed through ``DatabaseUrl.scrub`` before it is shown.

A URL whose password is not percent-encoded is refused before libpq sees it, with a message
that does not repeat it: libpq would read ``user:pa/ss@host`` as host ``user``, port ``pa``
and a database named ``ss@host``, and echo those parts in its errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

SCHEMES: Final = ("postgresql", "postgres")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODE_ADVICE: Final = (
    "percent-encode its password ('/' as %2F, '?' as %3F, '#' as %23, '@' as %40, '%' as "
    "%25), or leave the password out of the URL and give it in PGPASSWORD or ~/.pgpass"
)


def is_database_url(text: str) -> bool:
    """Whether ``--state`` names a PostgreSQL database rather than an SQLite file."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    """A ``postgresql://`` URL; ``str()`` and ``repr()`` never show the password."""

    url: str = field(repr=False)

    def __post_init__(self) -> None:
        if not is_database_url(self.url):
            raise ValueError("not a postgresql:// URL")
        netloc, rest = self._parts()
        if "@" not in netloc and "@" in rest:
            # An '@' after the first '/', '?' or '#': an unencoded password holding one.
            raise ValueError(f"the URL cannot be read as it is: {_ENCODE_ADVICE}")
        if _BAD_ESCAPE.search(netloc.rpartition("@")[0]):
            raise ValueError(f"the URL's user or password is badly encoded: {_ENCODE_ADVICE}")

    def _parts(self) -> tuple[str, str]:
        """The authority (``user:password@hosts``) and the rest (path, query, fragment)."""
        after = self.url.partition("://")[2]
        end = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
        return after[:end], after[end:]

    @property
    def _userinfo(self) -> str:
        netloc, _ = self._parts()
        return netloc.rpartition("@")[0]

    @property
    def where(self) -> str:
        """``postgresql://user@host:port/db``: what a person needs to find the database."""
        netloc, rest = self._parts()
        hosts = netloc.rpartition("@")[2] or "localhost"
        user = unquote(self._userinfo.partition(":")[0])
        database = unquote(rest.partition("?")[0].partition("#")[0].lstrip("/"))
        return f"postgresql://{user + '@' if user else ''}{hosts}/{database}"

    @property
    def password(self) -> str | None:
        raw = self._userinfo.partition(":")[2]
        return unquote(raw) if raw else None

    def scrub(self, text: str) -> str:
        """``text`` with the URL and its password taken out (driver messages may echo them)."""
        text = text.replace(self.url, self.where)
        raw = self._userinfo.partition(":")[2]
        for secret in {raw, unquote(raw)} - {""}:
            text = text.replace(secret, "***")
        return text

    def __str__(self) -> str:
        return self.where
