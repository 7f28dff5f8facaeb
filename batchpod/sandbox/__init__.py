"""The sandbox: a local AudioPod API for trying batchpod, for its tests and for benchmarks.

It owns an independent implementation of the stem-extraction, API-wallet and API-key wire
contract in ../shared/audiopod-api.md, served at the root of an aiohttp application, with knobs
for the real service's failures. It imports nothing from the rest of batchpod, so a mistake in
the client's models cannot be copied into the fake and hide.

Public API::

    SandboxSettings, KeySpec             knobs (frozen, validated)
    make_app(settings, *, clock)         -> aiohttp.web.Application
    serve(settings, *, host, port, ...)  async context manager -> SandboxHandle
    SandboxThread(settings, ...)         the same, on its own loop in a daemon thread
    add_arguments / settings_from_args / serve_forever   glue for `batchpod sandbox`

Endpoints: ``POST /api/v1/stem-extraction/api/extract``, ``GET .../status/{id}``,
``GET .../jobs``, ``DELETE .../jobs/{id}``, ``GET .../modes``; ``GET /api/v1/api-wallet/balance``,
``POST .../estimate`` (no auth), ``POST .../check-balance``, ``GET .../usage``,
``GET .../pricing`` (no auth); ``POST /api/v1/auth/api-keys``, ``GET .../api-keys[?status=]``,
``DELETE .../api-keys/{id}``; ``GET /health``; presigned stems under ``/media/``; and, served
only by the sandbox to loopback clients, ``GET /_sandbox/stats`` and ``POST /_sandbox/reset``.

How it differs from the real service:

- Input length is not measured. A URL job lasts its ``duration`` query parameter (seconds) if
  it has one, else a hash of the URL mapped to 2-8 minutes. An uploaded WAV is timed from its
  header; other formats from their size at an assumed bitrate (128 kbps, FLAC 800 kbps).
- Processing is simulated: a job is PENDING for the first quarter of its processing time and
  PROCESSING for the rest, then COMPLETED or FAILED (failure drawn at submit from the seed).
  States are computed from the clock when asked; nothing runs in the background.
- Stems are short tones (16 kHz mono 16-bit WAV, `stem_bytes` of audio), served by the sandbox
  itself under ``/media/`` with ``Expires`` and an HMAC ``Signature`` in the query string, in
  place of S3/CDN links. Errors are S3-style XML (403 AccessDenied/SignatureDoesNotMatch, 404
  NoSuchKey). Each status call signs fresh URLs.
- Only the wallet pays: there is no plan-credit fallback, so a short wallet always gives 402.
  The reservation leaves `balance_cents` at submit; `total_spent_cents` grows only when a job
  completes and its charge is kept; the usage row is written then. Deleting an unfinished job
  refunds it (undocumented upstream).
- Users and keys: each configured key (`api_key`, every `extra_keys` entry) is its own user
  with its own wallet. A key created through ``POST /auth/api-keys`` belongs to the creating
  key's user: it shares the plan, wallet, jobs and usage log (whose ``api_key_id`` names the key
  that ran the job) and works at once. A revoked key, or one whose ``expires_at`` the clock has
  reached, answers 403 on every authenticated call. ``last_used_at`` moves on every call a key
  authenticates. Scopes are stored and shown, never enforced. The key list lists configured
  keys as ``"default"``, created when the sandbox started.
- Inferred for API keys: create answers 200 (not 201); the value is ``ap_`` + 32 hex digits;
  the list is ``{"api_keys": [...]}`` with ``id, name, scopes, status, created_at,
  last_used_at, expires_at, revoked_at`` (``status`` inferred, the two timestamps from older
  docs) and never the value or a prefix of it; ``?status=`` takes active/revoked/expired;
  revoke answers 200 ``{"id", "message", "revoked_at"}`` and again the same on a second call;
  an unknown id or another user's is 404 ``API key not found``; ``name`` is trimmed, 1-100
  characters; ``expires_in_days`` is 1-3650 or null.
- Inferred where the contract is silent: plan gating and revoked/expired keys answer 403 with a
  `detail` naming the cause; 422 bodies are FastAPI/pydantic-style lists; an input longer than
  the plan allows is a 400; the `single` remainder stem is `no_<stem>`; the `studio` and
  `mastering` stem names are our choice; `jobs` and `usage` take `limit` up to 100 (422 above).
- Sparse modes (producer/studio/mastering) omit some optional instruments per job, as the
  real "up to N" modes do; `sparse_stems=False` returns every name.
- Not implemented: the catalog, packages/available, extract/advanced, the legacy extract
  endpoint, top-ups, ``/auth/me``, webhooks and JWT sessions.

``stats()`` / ``GET /_sandbox/stats`` returns::

    {"requests": {"POST /api/v1/stem-extraction/api/extract": 3, ...},   # method + route
     "responses": {"200": 10, "429": 1, ...},                             # by status code
     "submissions": {"URL/four": 2, "FILE/single/vocals": 1, ...},         # source/mode[/stem]
     "jobs": {"created": n, "stored": n, "deleted": n, "active": n, "peak_active": n},
     "active_by_key": {key: n}, "peak_active_by_key": {key: n},
     "wallets": {key: {"plan", "initial_cents", "balance_cents", "reserved_cents", "spent_cents"}},
                                         # keys of one user show that user's one wallet
     "wallet_events": [{"kind": "reserve"|"charge"|"refund", "api_key", "job_id", "cents", "at"}],
     "downloads": {"requests", "served", "bytes", "denied", "with_credentials",
                   "peak_in_flight"},              # most stem transfers at one time
     "api_peak_per_s": n,                 # most /api/ requests arriving within one second
     "api_rate": r,                       # (N - 1) / (last arrival - first), per second
     "injected": {"429": n, "500": n, "502": n, "503": n, "rate_limited": n, "lost_submit": n},
     "api_keys": {"created": n, "revoked": n},                           # through the API
     "notice_delay": {"jobs": n, "median_s", "p90_s", "mean_s", "max_s"}}
                       # from each job's end to the first answer that showed it
"""

from __future__ import annotations

from ._app import make_app
from ._cli import add_arguments, serve_forever, settings_from_args
from ._run import SandboxHandle, SandboxThread, serve
from ._settings import KeySpec, SandboxSettings
from ._state import SandboxState

__all__ = [
    "KeySpec",
    "SandboxHandle",
    "SandboxSettings",
    "SandboxState",
    "SandboxThread",
    "add_arguments",
    "make_app",
    "serve",
    "serve_forever",
    "settings_from_args",
]
