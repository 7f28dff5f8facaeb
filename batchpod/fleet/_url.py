"""A PostgreSQL state's address: recognised, and named for people without its password.

The URL goes to libpq unchanged, so the password may come from the URL, ``PGPASSWORD`` or
``~/.pgpass`` exactly as for ``psql``. Everything batchpod prints, logs or writes names the
database by ``DatabaseUrl.where`` (user, host, port and database, never the password), and
every message from the driver is passed through ``DatabaseUrl.scrub`` before it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SCHEMES = ("postgresql", "postgres")


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
        try:
            urlsplit(self.url).port  # noqa: B018 -- a bad port raises here, not later
        except ValueError as exc:
            raise ValueError(f"not a valid database URL ({exc})") from None

    @property
    def where(self) -> str:
        """``postgresql://user@host:port/db``: what a person needs to find the database."""
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        user = f"{unquote(parts.username)}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        database = parts.path.lstrip("/")
        return f"postgresql://{user}{host}{port}/{database}"

    @property
    def password(self) -> str | None:
        parts = urlsplit(self.url)
        return unquote(parts.password) if parts.password else None

    def scrub(self, text: str) -> str:
        """``text`` with the URL and its password taken out (driver messages may echo them)."""
        text = text.replace(self.url, self.where)
        secret = self.password
        if secret:
            text = text.replace(secret, "***")
        return text

    def __str__(self) -> str:
        return self.where
