"""The submit form: url/mode/stem fields and a streamed `file` part, validated (§3.1).

Uploads are never held in memory: the `file` part is read in chunks, counted against the plan's
cap (413 as soon as it is passed) and only its first bytes are kept, for the WAV header.
Imports nothing from batchpod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import BodyPartReader, web

from ._audio import HEADER_PREFIX_BYTES, safe_filename
from ._contract import MODES, PLAN_TITLES, SINGLE_STEMS
from ._records import detail
from ._validation import invalid, missing, not_one_of, value_error

UPLOAD_CHUNK_BYTES: Final = 256 * 1024
FORM_FIELD_MAX_BYTES: Final = 64 * 1024


class Upload:
    """A streamed upload: its sanitised file name, first bytes and total size."""

    __slots__ = ("filename", "prefix", "size")

    def __init__(self, filename: str, prefix: bytes, size: int) -> None:
        self.filename = filename
        self.prefix = prefix
        self.size = size


def validated_submit(
    fields: Mapping[str, str], upload: Upload | None
) -> tuple[str, str | None, str | None]:
    """mode, stem and url of a submit, or the 422 FastAPI would give (§3.1)."""
    errors: list[dict[str, Any]] = []
    mode = fields.get("mode")
    if mode is None:
        errors.append(missing("body", "mode"))
    elif mode not in MODES:
        errors.append(not_one_of("body", "mode", mode, MODES))
    stem = fields.get("stem") or None
    if stem is not None and stem not in SINGLE_STEMS:
        errors.append(not_one_of("body", "stem", stem, SINGLE_STEMS))
    elif stem is None and mode == "single":
        errors.append(value_error(["body", "stem"], "stem is required when mode is 'single'"))
    url = fields.get("url") or None
    if url is not None and upload is not None:
        errors.append(value_error(["body"], "provide either file or url, not both"))
    elif url is None and upload is None:
        errors.append(value_error(["body"], "provide either file or url"))
    elif url is not None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            errors.append(value_error(["body", "url"], "url must be an http(s) URL", url))
    if errors:
        raise invalid(*errors)
    assert mode is not None
    return mode, (stem if mode == "single" else None), url


async def read_submit_form(
    request: web.Request, *, cap: int, plan: str
) -> tuple[dict[str, str], Upload | None]:
    """The text fields and the (streamed, never buffered) `file` part of a submit."""
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request, cap=cap, plan=plan)
    if request.content_type == "application/x-www-form-urlencoded":
        fields: dict[str, str] = {}
        for name, value in (await request.post()).items():
            if isinstance(value, str):
                fields.setdefault(name, value)
        return fields, None
    return {}, None  # a JSON or empty body has no form fields: FastAPI reports them missing


async def _read_multipart(
    request: web.Request, *, cap: int, plan: str
) -> tuple[dict[str, str], Upload | None]:
    fields: dict[str, str] = {}
    upload: Upload | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart is not part of the contract; the reader skips it
        if part.filename is not None:
            if part.name == "file" and upload is None and part.filename:
                upload = await _stream_upload(part, cap=cap, plan=plan)
            else:
                await part.release()
            continue
        raw = bytearray()
        while chunk := await part.read_chunk(FORM_FIELD_MAX_BYTES):
            raw += chunk
            if len(raw) > FORM_FIELD_MAX_BYTES:
                raise detail(413, f"Form field {part.name!r} is too large")
        fields.setdefault(part.name or "", raw.decode("utf-8", "replace"))
    return fields, upload


async def _stream_upload(part: BodyPartReader, *, cap: int, plan: str) -> Upload:
    """Count an upload's bytes and keep only its head; 413 as soon as it passes `cap`."""
    size = 0
    prefix = bytearray()
    while chunk := await part.read_chunk(UPLOAD_CHUNK_BYTES):
        size += len(chunk)
        if size > cap:
            # Answering before the body ends is what a size-limited proxy does; aiohttp then
            # drains the rest of the upload (lingering close) so the client reads the 413.
            raise detail(
                413,
                f"File too large: the {PLAN_TITLES[plan]} plan accepts uploads up to "
                f"{_human_bytes(cap)}.",
            )
        if len(prefix) < HEADER_PREFIX_BYTES:
            prefix += chunk[: HEADER_PREFIX_BYTES - len(prefix)]
    return Upload(safe_filename(part.filename or ""), bytes(prefix), size)


def _human_bytes(n: int) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"
