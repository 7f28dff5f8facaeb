"""``KeyRing``: which API key a client's requests carry, and the one switch to a fallback.

Pure and synchronous: no I/O and no aiohttp. Owns checking the keys before anything is sent,
the switch from the first key to the fallback when AudioPod refuses the first (once, for
good), and the list of every key the client has held or made, masked in any server text. It
never puts a key in a message: messages name where a key came from (its ``source``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from batchpod.errors import ConfigError

from ._key_models import is_key_shaped

DEFAULT_FALLBACK_SOURCE: Final = "the fallback key"


class KeyRing:
    """The key in use (``key``, from ``source``) and the fallback that may replace it.

    A request reads ``key``, ``source`` and ``generation`` together, with no await between, as
    it leaves; if AudioPod refuses it as an auth failure, ``switch(sent_with=generation)``
    says whether to send it again. ``secrets`` is every key this client has held or made.
    """

    __slots__ = (
        "_fallback",
        "_fallback_source",
        "_on_key_switch",
        "generation",
        "key",
        "secrets",
        "source",
        "switched_to",
    )

    def __init__(
        self,
        *,
        api_key: str,
        key_source: str,
        fallback_key: str | None,
        fallback_source: str | None,
        on_key_switch: Callable[[str, str], None] | None,
    ) -> None:
        if not isinstance(key_source, str) or not key_source.strip():
            raise ConfigError("key_source must name where the key came from")
        check_key(api_key, source=key_source)
        if fallback_key is None and fallback_source is not None:
            raise ConfigError(f"{fallback_source} is named as the fallback, but no key was given")
        fallback_source = fallback_source or DEFAULT_FALLBACK_SOURCE
        if fallback_key is not None:
            check_key(fallback_key, source=fallback_source)
            if fallback_key == api_key:
                raise ConfigError(
                    f"the fallback key ({fallback_source}) is the same key as {key_source}: "
                    "give a different key, or none"
                )
        self.key = api_key
        self.source = key_source
        self._fallback = fallback_key
        self._fallback_source = fallback_source
        self._on_key_switch = on_key_switch
        # Bumped when the fallback takes over; each request notes the generation of the key it
        # carried, so a refusal of an already-replaced key re-sends instead of switching again.
        self.generation = 0
        self.switched_to: str | None = None
        # Every key this client has held or made: masked in any server text that echoes one.
        self.secrets: list[str] = [k for k in (api_key, fallback_key) if k is not None]

    def remember(self, value: str) -> None:
        """Mask ``value`` (a key this client just made) in server text from here on."""
        self.secrets.append(value)

    def switch(self, *, sent_with: int) -> bool:
        """Whether a request whose key (of generation ``sent_with``) was refused should be sent
        again: yes if the fallback has taken over since, or takes over now; no without one.

        Synchronous, so no other task runs between the check and the switch: of many requests
        refused at once, the first switches and the rest only see the new generation.
        """
        if self.generation > sent_with:
            return True  # another request switched while this one was out
        if self._fallback is None:
            return False  # no fallback, or it is the key that was just refused
        old = self.source
        self.key, self.source = self._fallback, self._fallback_source
        self._fallback = None
        self.generation += 1
        self.switched_to = self.source
        if self._on_key_switch is not None:
            self._on_key_switch(old, self.source)
        return True


def check_key(api_key: str, *, source: str) -> None:
    """Refuse a key AudioPod would refuse, before anything is sent; never echo it."""
    if not isinstance(api_key, str) or not api_key:
        raise ConfigError(
            f"the API key from {source} is empty; set it to a key from the AudioPod dashboard"
        )
    if not api_key.startswith("ap_") or len(api_key) < 4:
        raise ConfigError(
            f"the API key from {source} does not look like an AudioPod key (they start with "
            "'ap_'); copy it again from the AudioPod dashboard"
        )
    if not is_key_shaped(api_key):
        raise ConfigError(
            f"the API key from {source} contains spaces, line breaks or other unexpected "
            "characters (a stray newline from a file?); copy it again"
        )
