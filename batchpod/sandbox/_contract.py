"""The parts of the AudioPod contract that are plain data: modes, stems, plans, prices.

Everything here is pure and follows ../shared/audiopod-api.md (section numbers in comments).
Imports nothing from batchpod.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final
from urllib.parse import parse_qsl, urlsplit

# Plans in ascending order (§3.1, §5). "Free" is the same tier as "basic" in the docs.
PLANS: Final = ("basic", "creator", "pro", "studio")
PLAN_RANK: Final[Mapping[str, int]] = MappingProxyType({p: i for i, p in enumerate(PLANS)})
PLAN_TITLES: Final[Mapping[str, str]] = MappingProxyType(
    {"basic": "Basic", "creator": "Creator", "pro": "Pro", "studio": "Studio"}
)

_MIB: Final = 1024 * 1024
# §3.1 "Upload size". The docs say "MB"; we read it as MiB, the unit nginx-style limits use,
# which errs on the side of accepting a file the real service might take.
UPLOAD_CAP_BYTES: Final[Mapping[str, int]] = MappingProxyType(
    {"basic": 250 * _MIB, "creator": 500 * _MIB, "pro": 1024 * _MIB, "studio": 1024 * _MIB}
)
# §3.1 "Input length".
MAX_INPUT_S: Final[Mapping[str, int]] = MappingProxyType(
    {"basic": 30 * 60, "creator": 2 * 3600, "pro": 5 * 3600, "studio": 10 * 3600}
)

SINGLE_STEMS: Final = ("vocals", "drums", "bass", "guitar", "piano", "other")

# §5. `studio` and `mastering` names are not documented beyond "up to 12/16" and older docs'
# "+ cymbals, sub_bass, synth"; these lists are our choice, built the same way.
MODE_STEMS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "two": ("vocals", "no_vocals"),
        "four": ("vocals", "drums", "bass", "other"),
        "six": ("vocals", "drums", "bass", "guitar", "piano", "other"),
        "producer": ("vocals", "kick", "snare", "hihat", "bass", "guitar", "piano", "other"),
        "studio": (
            "vocals",
            "kick",
            "snare",
            "hihat",
            "toms",
            "cymbals",
            "bass",
            "sub_bass",
            "guitar",
            "piano",
            "synth",
            "other",
        ),
        "mastering": (
            "vocals_left",
            "vocals_right",
            "kick",
            "snare",
            "hihat",
            "toms",
            "cymbals",
            "percussion",
            "bass",
            "sub_bass",
            "guitar",
            "piano",
            "synth",
            "strings",
            "fx",
            "other",
        ),
    }
)
MODES: Final = ("single", "two", "four", "six", "producer", "studio", "mastering")
# Modes whose stem counts are ceilings: only the instruments "present" come back (§5).
SPARSE_MODES: Final = frozenset({"producer", "studio", "mastering"})
# Never dropped from a sparse mode: every mix has something in them.
ALWAYS_PRESENT: Final = frozenset({"vocals", "vocals_left", "vocals_right", "bass", "other"})

MODE_PLAN: Final[Mapping[str, str]] = MappingProxyType(
    {
        "single": "basic",
        "two": "basic",
        "four": "basic",
        "six": "basic",
        "producer": "creator",
        "studio": "pro",
        "mastering": "pro",
    }
)
MODE_DESCRIPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "single": "One named stem plus everything else",
        "two": "Vocals + instrumental (no_vocals)",
        "four": "Vocals, drums, bass, other",
        "six": "Vocals, drums, bass, guitar, piano, other",
        "producer": "Drums split into kick/snare/hi-hat; up to 8 stems (Creator+)",
        "studio": "Full drum kit and bass frequency split; up to 12 stems (Pro+)",
        "mastering": "Full kit, bass split, vocal stereo separation; up to 16 stems (Pro+)",
    }
)


def single_remainder(stem: str) -> str:
    """The everything-else key of a `single` job: `no_<stem>`, after `two`'s `no_vocals` (§5)."""
    return f"no_{stem}"


CENTS_PER_MINUTE: Final = 10  # §7: $0.10 per input minute in every standard mode
LOW_BALANCE_WARNING_CENTS: Final = 500  # §6.1 warning_threshold_cents
SERVICE_TYPE: Final = "stem_extraction"
SERVICE_DESCRIPTION: Final = "AI-powered stem separation (2/4/6/16-stem modes)"


def duration_ms(duration_s: float) -> int:
    """Whole milliseconds of a duration: the sandbox bills from these so money stays integral."""
    return max(0, round(duration_s * 1000))


def cost_cents(duration_s: float) -> int:
    """The price of `duration_s` seconds of input: 10 cents a minute, rounded up to whole cents.

    Computed on integer milliseconds so no float rounding touches money; 328 s gives 55 cents,
    the one real data point in §7.
    """
    ms = duration_ms(duration_s)
    return -(-ms * CENTS_PER_MINUTE // 60_000)


def usd(cents: int) -> str:
    """Cents as the API's display string: 55 -> "$0.55"."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}${cents // 100}.{cents % 100:02d}"


# A URL job's input length. The real service downloads and probes the media; the sandbox cannot,
# so it takes an explicit `duration` query parameter (seconds) when the URL carries one and
# otherwise hashes the URL to a length between 2 and 8 minutes. Either way the same URL always
# costs the same, which keeps runs reproducible.
URL_MIN_S: Final = 120
URL_MAX_S: Final = 480


def url_duration_s(url: str) -> float:
    """The deterministic input length the sandbox assigns to a URL job, in seconds."""
    for name, value in parse_qsl(urlsplit(url).query):
        if name == "duration":
            try:
                seconds = float(value)
            except ValueError:
                break
            if math.isfinite(seconds) and seconds > 0:
                return seconds
            break
    digest = hashlib.sha256(url.encode()).digest()
    return float(URL_MIN_S + int.from_bytes(digest[:8], "big") % (URL_MAX_S - URL_MIN_S + 1))


def url_display_name(url: str) -> str:
    """A human name for a URL source: its last path segment, else `host` + query."""
    parts = urlsplit(url)
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if last and last not in {"watch"}:
        return last
    return parts.netloc + (f"?{parts.query}" if parts.query else parts.path)
