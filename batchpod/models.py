"""Value objects shared by the manifest, the runner and the results: what a job *is*.

Everything here is frozen and validated on construction; nothing here does I/O. Money is
integer cents, durations float seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Final, TypeAlias


class Mode(StrEnum):
    """AudioPod separation modes, spelled as the submit endpoint accepts them."""

    SINGLE = "single"
    TWO = "two"
    FOUR = "four"
    SIX = "six"
    PRODUCER = "producer"
    STUDIO = "studio"
    MASTERING = "mastering"


class Stem(StrEnum):
    """The stems a ``single``-mode job may isolate."""

    VOCALS = "vocals"
    DRUMS = "drums"
    BASS = "bass"
    GUITAR = "guitar"
    PIANO = "piano"
    OTHER = "other"


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """Where a song comes from: exactly one of a URL or a local file.

    ``file`` is absolute (resolved against the manifest's folder when loaded).
    """

    url: str | None = None
    file: Path | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.file is None):
            raise ValueError("a Source needs exactly one of url or file")
        if self.file is not None and not self.file.is_absolute():
            raise ValueError(f"Source.file must be absolute, got {self.file}")

    @property
    def kind(self) -> str:
        """``"url"`` or ``"file"``."""
        return "url" if self.url is not None else "file"

    def __str__(self) -> str:
        return self.url if self.url is not None else str(self.file)


#: A job's metadata keys: an identifier's characters (so ``{meta.KEY}`` names one in a
#: template and ``meta.KEY`` a CSV column), at most ``MAX_META_KEY`` of them.
META_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_META_KEY: Final = 64
MAX_META_VALUE: Final = 512  # characters of one value
MAX_META_KEYS: Final = 32  # keys of one job


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One song to separate in one mode, as the manifest asks for it.

    ``line`` is where the job starts in the manifest (1-based); it is for messages only and
    does not take part in equality. ``meta`` is the catalogue's own data about the song (an
    ISRC, a catalogue number), as (key, value) pairs in the manifest's order: carried to the
    results, reports, logs and output paths, and no part of what the job is (its content
    key never depends on it, so editing it never pays again).
    """

    name: str
    source: Source
    mode: Mode
    stem: Stem | None = None
    duration_s: float | None = None
    line: int = field(default=0, compare=False)
    meta: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a Job needs a name")
        if (self.mode is Mode.SINGLE) != (self.stem is not None):
            raise ValueError("stem is required for mode single and only for it")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration must be positive, got {self.duration_s}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """Spending limits for one run, in integer cents; ``None`` means no limit."""

    max_spend_cents: int | None = None
    keep_balance_cents: int | None = None

    def __post_init__(self) -> None:
        for value in (self.max_spend_cents, self.keep_balance_cents):
            if value is not None and value < 0:
                raise ValueError(f"budget limits must not be negative, got {value}")


class OutputFormat(StrEnum):
    """The audio format stems are written in (AudioPod serves WAV; the rest are encoded)."""

    WAV = "wav"
    FLAC = "flac"
    MP3 = "mp3"
    OGG = "ogg"  # Vorbis in Ogg
    OPUS = "opus"  # Opus in Ogg

    @property
    def lossless(self) -> bool:
        return self in (OutputFormat.WAV, OutputFormat.FLAC)


#: Bit depths a lossless output may be written at.
BIT_DEPTHS = (16, 24)
#: The bitrates (kbps) each lossy format accepts: MPEG-1 Layer III's range, libvorbis's
#: nominal range for stereo, and Opus's range for up to two channels.
BITRATES_KBPS: Mapping[OutputFormat, tuple[int, int]] = {
    OutputFormat.MP3: (32, 320),
    OutputFormat.OGG: (64, 500),
    OutputFormat.OPUS: (12, 512),
}


def takes_bitrate(fmt: OutputFormat, kbps: int) -> bool:
    """Whether ``fmt`` can be written at ``kbps`` (``BITRATES_KBPS``; lossless ones never)."""
    low, high = BITRATES_KBPS.get(fmt, (0, -1))
    return low <= kbps <= high


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputSpec:
    """How stems are written: their format, and its bit depth or bitrate (None: the
    format's default, see ``batchpod.encode``)."""

    format: OutputFormat = OutputFormat.WAV
    bit_depth: int | None = None  # wav and flac only
    bitrate_kbps: int | None = None  # mp3, ogg and opus only

    def __post_init__(self) -> None:
        if self.bit_depth is not None and (
            not self.format.lossless or self.bit_depth not in BIT_DEPTHS
        ):
            raise ValueError(f"bit depth {self.bit_depth} does not apply to {self.format}")
        if self.bitrate_kbps is not None and not takes_bitrate(self.format, self.bitrate_kbps):
            raise ValueError(f"bitrate {self.bitrate_kbps} kbps does not apply to {self.format}")

    @property
    def as_served(self) -> bool:
        """Whether stems are written as AudioPod served them, byte for byte."""
        return self.format is OutputFormat.WAV and self.bit_depth is None

    @property
    def label(self) -> str | None:
        """What a file written under this spec records of it (``flac``, ``flac/24``,
        ``mp3/192k``); None for stems as served. A file recorded under another label is
        not what this spec asks for, and is fetched again."""
        if self.as_served:
            return None
        if self.bit_depth is not None:
            return f"{self.format.value}/{self.bit_depth}"
        if self.bitrate_kbps is not None:
            return f"{self.format.value}/{self.bitrate_kbps}k"
        return self.format.value


#: Object stores stems may go to, by URL scheme: AWS S3 (and S3-compatible stores), Google
#: Cloud Storage, Azure Blob Storage.
OBJECT_SCHEMES: Final = ("s3", "gs", "az")
# Bucket and container names as the three clouds allow them (3 to 63 lowercase letters,
# digits, dots and hyphens, starting and ending with a letter or digit; Azure allows no dots
# and S3-compatible stores are laxer, so this is the common ground).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KEY_PART_BAD = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True, slots=True)
class ObjectUrl:
    """An object, or a prefix of objects, in a bucket: ``s3://bucket/key`` (also ``gs://``,
    ``az://``). ``key`` has no slash at either end; it is ``""`` for the bucket's top."""

    scheme: str
    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, text: str) -> ObjectUrl:
        """``s3://bucket/a/b`` -> ObjectUrl("s3", "bucket", "a/b"); ValueError, saying why,
        for anything else."""
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in OBJECT_SCHEMES:
            raise ValueError(f"use {', '.join(s + '://' for s in OBJECT_SCHEMES)}")
        if "?" in rest or "#" in rest:
            raise ValueError("an object URL takes no query or fragment")
        bucket, _, key = rest.partition("/")
        if "@" in bucket or ":" in bucket:
            raise ValueError("credentials and ports do not go in the URL (see the README)")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(
                f"{bucket!r} is not a bucket name (3 to 63 lowercase letters, digits, dots "
                "and hyphens)"
            )
        key = key.rstrip("/")
        parts = key.split("/") if key else []
        if any(p in ("", ".", "..") or _KEY_PART_BAD.search(p) for p in parts):
            raise ValueError("the prefix must be plain names between slashes (no '..')")
        return cls(scheme, bucket, "/".join(parts))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}".rstrip("/")

    def joinpath(self, *parts: str) -> ObjectUrl:
        """The object ``parts`` below this prefix."""
        return ObjectUrl(self.scheme, self.bucket, "/".join(p for p in (self.key, *parts) if p))

    def relative_to(self, root: ObjectUrl) -> PurePosixPath:
        """This object's key below ``root``'s prefix; ValueError if it is not below it."""
        head = f"{root.key}/" if root.key else ""
        if (self.scheme, self.bucket) != (root.scheme, root.bucket) or not (
            self.key.startswith(head) and len(self.key) > len(head)
        ):
            raise ValueError(f"{self} is not below {root}")
        return PurePosixPath(self.key[len(head) :])


#: Where stems are: a local path, or an object in a bucket.
Location: TypeAlias = Path | ObjectUrl


def location(text: str) -> Location:
    """A location as ``str()`` wrote it: an object URL, or else a local path. Any other
    ``scheme://`` (``S3://``, ``http://``) is a ValueError, not a folder of that name."""
    return ObjectUrl.parse(text) if "://" in text else Path(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobMatch:
    """A ``files:`` job of a manifest: its pattern, where it is written, the files it matched
    and how many of them became jobs (the rest repeat a job listed already)."""

    pattern: str
    line: int
    column: int
    matched: int
    jobs: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A validated manifest: everything a run needs to know about the work."""

    path: Path
    version: int
    output_dir: Location  # a folder, or a bucket and prefix
    concurrency: int
    budget: Budget
    jobs: tuple[Job, ...]
    output: OutputSpec = OutputSpec()
    # Where each stem goes inside output_dir (``batchpod.templates``), checked when read.
    output_path: str = "{name}/{stem}.{ext}"
    globs: tuple[GlobMatch, ...] = ()  # each 'files:' job, and how many files it stood for

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")


class JobStatus(StrEnum):
    """Where a job ended up in one run, as the results manifest reports it."""

    SUCCEEDED = "succeeded"  # separated and every stem downloaded
    COMPLETED = "completed"  # separated; stems not downloaded (run --no-download)
    FAILED = "failed"  # AudioPod failed it, refused it, or a download could not finish
    SKIPPED = "skipped"  # never submitted: the run stopped (budget, balance, key, signal)
    INTERRUPTED = "interrupted"  # submitted, but the run stopped before it finished
    EXPIRED = "expired"  # submitted, but not finished within --job-timeout (a re-run resumes)
    UNKNOWN = "unknown"  # a submit's outcome could not be settled without guessing


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorRecord:
    """Why a job did not succeed: the error's kind, the HTTP status if any, a message."""

    type: str
    message: str
    http_status: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputFile:
    """One downloaded stem: where it is and how many bytes it has."""

    stem: str
    path: Location  # a file, or an object in a bucket
    size: int
    sha256: str | None = None  # of the content written (None: recorded by an older batchpod)
    mtime_ns: int | None = None  # the file's modification time just after it was written
    served_size: int | None = None  # the WAV AudioPod served, when the file is an encoding of it
    encoding: str | None = None  # OutputSpec.label of an encoded file; None: as served
    etag: str | None = None  # an object's ETag just after it was stored (in place of mtime_ns)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    """What one run did with one job."""

    job: Job
    status: JobStatus
    remote_id: str | None = None
    submitted_at: float | None = None  # Unix seconds
    completed_at: float | None = None  # when the run saw that AudioPod had done it
    finished_at: float | None = None  # when this run was done with it (its stems stored)
    attempts: int = 0  # submit attempts that reached the point of sending
    cost_cents: int | None = None  # AudioPod's charge, from its usage log
    estimated_cents: int | None = None  # its estimate when this run came to submit it
    files: tuple[OutputFile, ...] = ()
    quality_scores: Mapping[str, float] = field(default_factory=dict)
    download_urls: Mapping[str, str] = field(default_factory=dict)
    error: ErrorRecord | None = None
    reason: str | None = None  # for skipped jobs: why
    duplicate_of: str | None = None  # the job (by name) that does this one's work
    retries: Mapping[str, int] = field(default_factory=dict)  # this run's retries, by cause
    deleted_remote: bool = False  # its AudioPod job was deleted once its stems were stored

    @property
    def ok(self) -> bool:
        """Whether the job did what the run asked of it (a duplicate's twin does its work)."""
        return self.status in (JobStatus.SUCCEEDED, JobStatus.COMPLETED) or bool(self.duplicate_of)
