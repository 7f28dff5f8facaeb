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
    parse_retry_after(value, now=)        seconds from a Retry-After header
    redact, is_transient, outcome_unknown re-exported from batchpod.errors

Modules: ``_models`` (value objects and JSON parsing, pure), ``_classify`` (which error a
response or aiohttp exception is, pure), ``_api`` (the sessions and the API requests),
``_download`` (one stem into one file, atomically).
"""

from __future__ import annotations

from batchpod.errors import is_transient, outcome_unknown, redact

from ._api import MAX_JSON_BYTES, ApiClient, RequestCounts
from ._classify import parse_retry_after
from ._models import (
    DEFAULT_BASE_URL,
    DEFAULT_KEY_SOURCE,
    ApiKeyInfo,
    Balance,
    ClientTimeouts,
    CreatedApiKey,
    KeyStatus,
    RemoteJob,
    RemoteStatus,
    RevokedApiKey,
    UsageRow,
)

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
    "is_transient",
    "outcome_unknown",
    "parse_retry_after",
    "redact",
]
