"""The AudioPod API client: the run's one API session and the HTTP -> batchpod error seam.

Owns the wire contract of ../shared/audiopod-api.md (§1-4, §6, §8, §9) as a client:
submitting URL and file jobs, polling, listing and deleting them, the wallet (balance,
estimate, price), the account's API keys (list, create, revoke), switching once to a fallback
key when AudioPod refuses the first, and downloading stems from presigned links into a file it
is given. It must not know terminals, the manifest, state or results files, environment
variables or key files, or retry policy: it classifies failures (``is_transient``,
``outcome_unknown``) and the runner decides what to do about them.

Public API::

    ApiClient(base_url=, api_key=, key_source=, fallback_key=, fallback_source=,
              on_key_switch=, ...)    async context manager; one method per API call
    RequestCounts                         what a client sent (``ApiClient.counts``)
    ClientTimeouts                        time limits (frozen)
    RemoteJob, RemoteStatus, Balance,     what the API answers (frozen; ``from_json``)
    UsageRow, ApiKeyInfo, KeyStatus,
    CreatedApiKey, RevokedApiKey          (only ``CreatedApiKey.key`` ever holds a key)
    DEFAULT_BASE_URL                      https://api.audiopod.ai
    DEFAULT_KEY_SOURCE                    "AUDIOPOD_API_KEY": how messages name the key
    MAX_JSON_BYTES                        the largest successful API body read (10 MiB)
    parse_retry_after(value, now=)        seconds from a Retry-After header
    is_key_shaped(value)                  whether a value looks like an AudioPod key (ap_...)
    redact, is_transient, outcome_unknown re-exported from batchpod.errors

Modules: ``_models`` (job and wallet value objects and their JSON parsing, pure),
``_key_models`` (API key value objects and their JSON parsing, pure), ``_classify`` (which
error a response or aiohttp exception is, pure), ``_keyring`` (which key requests carry: the
switch to a fallback, pure), ``_transport`` (the sessions and the one seam ``_send``: pacing,
counts, key refusals), ``_api`` (``ApiClient``: one method per API call, over the transport),
``_download`` (one stem into one file, atomically).
"""

from __future__ import annotations

from batchpod.errors import is_transient, outcome_unknown, redact

from ._api import ApiClient
from ._classify import parse_retry_after
from ._download import temp_prefix as download_temp_prefix
from ._key_models import ApiKeyInfo, CreatedApiKey, KeyStatus, RevokedApiKey, is_key_shaped
from ._models import (
    DEFAULT_BASE_URL,
    DEFAULT_KEY_SOURCE,
    Balance,
    ClientTimeouts,
    RemoteJob,
    RemoteStatus,
    UsageRow,
)
from ._transport import MAX_JSON_BYTES, RequestCounts

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_KEY_SOURCE",
    "MAX_JSON_BYTES",
    "ApiClient",
    "ApiKeyInfo",
    "Balance",
    "ClientTimeouts",
    "CreatedApiKey",
    "KeyStatus",
    "RemoteJob",
    "RemoteStatus",
    "RequestCounts",
    "RevokedApiKey",
    "UsageRow",
    "download_temp_prefix",
    "is_key_shaped",
    "is_transient",
    "outcome_unknown",
    "parse_retry_after",
    "redact",
]
