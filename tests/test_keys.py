"""API keys: where batchpod reads them, the pre-flight check, key management and rotation.

Against the sandbox over loopback sockets (one small barrier server where timing must be
exact). The key's value must appear in no message, repr or field but ``CreatedApiKey.key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import SONG, FakeClock, SandboxFactory

from batchpod.client import ApiClient, ApiKeyInfo, CreatedApiKey, KeyStatus, RemoteJob
from batchpod.client._key_models import api_keys_of
from batchpod.errors import (
    ApiError,
    ApiKeyNotFound,
    AuthenticationError,
    BadApiKey,
    ConfigError,
    KeyFileError,
    KeyRevoked,
    MissingApiKey,
    PermissionDenied,
)
from batchpod.keys import KeyCheck, KeySource, check_key, read_key
from batchpod.sandbox import KeySpec, SandboxHandle

URL_SONG = "https://example.com/music/song.mp3?duration=300"  # 50 cents
CANARY = "ap_canary_5d1e0c9b8a7f"  # a key that must never show up in any text
NEXT = "ap_next_4c3b2a1f0e9d"  # a second key, for the fallback
SECRET_FILE = "key file /run/secrets/audiopod"
NEXT_FILE = "key file /run/secrets/audiopod-next"
DAY = 86_400
SUBMIT = "POST /api/v1/stem-extraction/api/extract"


def client(sb: SandboxHandle, key: str | None = None, **options: Any) -> ApiClient:
    """An ApiClient for `sb` with `key` (default: the sandbox's ready key)."""
    return ApiClient(base_url=sb.base_url, api_key=key or sb.api_key, **options)


def texts_of(*things: object) -> list[str]:
    """str and repr of each thing, each dataclass field's, and an error's snippet."""
    texts: list[str] = []
    for thing in things:
        texts += [str(thing), repr(thing)]
        if isinstance(thing, ApiError):
            texts.append(thing.body_snippet or "")
        if dataclasses.is_dataclass(thing) and not isinstance(thing, type):
            texts += [repr(getattr(thing, f.name)) for f in dataclasses.fields(thing)]
    return texts


def assert_free_of(secret: str, *things: object) -> None:
    """`secret` appears in no text of any of `things`."""
    for text in texts_of(*things):
        assert secret not in text, text


E = TypeVar("E", bound=BaseException)


async def raises(kind: type[E], call: Awaitable[object]) -> E:
    """Await `call`, which must raise `kind`; return the exception."""
    with pytest.raises(kind) as info:
        await call
    return info.value


def key_file(folder: Path, content: str | bytes, *, mode: int = 0o600) -> Path:
    """`folder/key` holding `content`, with permission bits `mode`."""
    path = folder / "key"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


# -- the pre-flight check ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_check_key_reads_the_balance_and_its_warning_fields(sandbox: SandboxHandle) -> None:
    """check_key answers with the wallet in cents, the low-balance fields the balance carries,
    and the key's source; no switch without a fallback."""
    async with client(sandbox) as api:
        check = await check_key(api)
    assert check == KeyCheck(
        source="AUDIOPOD_API_KEY",
        balance_cents=10_000,
        low_balance_warning=False,
        warning_threshold_cents=500,
        switched_to=None,
    )


@pytest.mark.anyio
async def test_unknown_key_is_401_naming_the_source_not_the_key(sandbox: SandboxHandle) -> None:
    """A key AudioPod does not know: AuthenticationError 401 "invalid or missing key: check
    SOURCE", with the source named and the key nowhere."""
    async with client(sandbox, CANARY, key_source=SECRET_FILE) as api:
        exc = await raises(AuthenticationError, check_key(api))
    assert type(exc) is AuthenticationError and exc.http_status == 401
    assert exc.message.startswith(f"invalid or missing key: check {SECRET_FILE} (")
    assert exc.source == SECRET_FILE and "\n" not in exc.message
    assert_free_of(CANARY, exc, api)


@pytest.mark.anyio
async def test_revoked_key_is_403_naming_the_source_not_the_key(
    sandbox_factory: SandboxFactory,
) -> None:
    """A revoked key: KeyRevoked 403 "key revoked or expired: create a new key ...", naming
    the variable and saying AudioPod's reason, never the key."""
    async with (
        sandbox_factory(extra_keys={CANARY: KeySpec(status="revoked")}) as sb,
        client(sb, CANARY) as api,
    ):
        exc = await raises(KeyRevoked, check_key(api))
    assert exc.http_status == 403 and exc.reason == "revoked" and exc.source == "AUDIOPOD_API_KEY"
    assert exc.message.startswith(
        "key revoked or expired: create a new key and put it in AUDIOPOD_API_KEY ("
    )
    assert "API key has been revoked" in exc.message and "\n" not in exc.message
    assert_free_of(CANARY, exc)


@pytest.mark.anyio
async def test_expired_key_is_403_once_its_day_is_over(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock
) -> None:
    """A key made to last one day works until then; from its expiry on, check_key raises
    KeyRevoked with the 403 message and reason "expired"."""
    async with sandbox_factory(clock=fake_clock) as sb, client(sb) as admin:
        made = await admin.create_api_key("one-day", expires_in_days=1)
        async with client(sb, made.key, key_source="AUDIOPOD_CI_KEY") as api:
            fake_clock.advance(DAY - 1)
            assert (await check_key(api)).balance_cents == 10_000
            fake_clock.advance(1)
            exc = await raises(KeyRevoked, check_key(api))
        listed = {k.id: k for k in await admin.list_api_keys()}
    assert exc.reason == "expired" and exc.http_status == 403
    assert exc.message.startswith("key revoked or expired: create a new key and put it in ")
    assert "AUDIOPOD_CI_KEY" in exc.message and "API key has expired" in exc.message
    assert listed[made.id].status is KeyStatus.EXPIRED
    assert_free_of(made.key, exc, *listed.values())


@pytest.mark.anyio
async def test_plan_gated_submit_is_permission_denied_not_a_key_failure(
    sandbox_factory: SandboxFactory,
) -> None:
    """A Basic key submitting `producer` gets PermissionDenied naming the plan: not a key
    failure, the source is not blamed, and the key keeps working."""
    async with (
        sandbox_factory(extra_keys={CANARY: KeySpec(plan="basic")}) as sb,
        client(sb, CANARY, key_source=SECRET_FILE) as api,
    ):
        exc = await raises(PermissionDenied, api.submit_url(URL_SONG, mode="producer", stem=None))
        check = await check_key(api)
    assert not isinstance(exc, AuthenticationError) and exc.http_status == 403
    assert exc.message.startswith("this AudioPod plan may not run this job")
    assert "Creator plan" in exc.message
    assert SECRET_FILE not in exc.message and "revoked" not in exc.message
    assert check.balance_cents == 10_000 and check.source == SECRET_FILE
    assert_free_of(CANARY, exc)


# -- key management -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_create_check_revoke_then_the_new_key_is_refused(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock
) -> None:
    """A created key works at once (same wallet); revoking it answers with revoked_at, the
    list shows it revoked, and check_key with it then raises the 403 message."""
    async with sandbox_factory(clock=fake_clock) as sb, client(sb) as admin:
        made = await admin.create_api_key("ci", scopes=["*"], expires_in_days=90)
        async with client(sb, made.key, key_source="AUDIOPOD_CI_KEY") as api:
            assert (await check_key(api)).balance_cents == 10_000
            fake_clock.advance(60)
            revoked = await admin.revoke_api_key(made.id)
            exc = await raises(KeyRevoked, check_key(api))
        listed = {k.id: k for k in await admin.list_api_keys()}
    assert made.name == "ci" and made.scopes == ("*",) and made.key.startswith("ap_")
    assert made.expires_at is not None and made.created_at is not None
    assert (made.expires_at - made.created_at).days == 90
    assert revoked.id == made.id and revoked.revoked_at is not None
    assert exc.reason == "revoked" and "put it in AUDIOPOD_CI_KEY" in exc.message
    row = listed[made.id]
    assert row.status is KeyStatus.REVOKED and row.revoked_at == revoked.revoked_at
    assert row.last_used_at is not None and row.name == "ci"
    assert listed[next(iter(listed.keys() - {made.id}))].status is KeyStatus.ACTIVE


@pytest.mark.anyio
async def test_no_key_value_anywhere_but_created_api_key_key(sandbox: SandboxHandle) -> None:
    """Listing, creating and revoking: neither the created key's value nor the client's own
    appears in any str, repr or field of what comes back, except ``CreatedApiKey.key``."""
    async with client(sandbox) as api:
        made = await api.create_api_key("secret-keeper")
        before = await api.list_api_keys()
        revoked = await api.revoke_api_key(made.id)
        after = await api.list_api_keys()
    fields = {f.name: getattr(made, f.name) for f in dataclasses.fields(made)}
    assert [name for name, value in fields.items() if made.key in repr(value)] == ["key"]
    assert "ap_***" in repr(made) and str(made) == repr(made)
    assert {k.id for k in before} == {k.id for k in after} and len(before) == 2
    assert all(isinstance(k, ApiKeyInfo) for k in (*before, *after))
    for secret in (made.key, sandbox.api_key):
        assert_free_of(secret, made.info, revoked, api, *before, *after)
        assert secret not in repr(made)


@pytest.mark.anyio
async def test_revoking_an_unknown_id_says_no_such_key(sandbox: SandboxHandle) -> None:
    """Revoking an id the account does not have is ApiKeyNotFound: "no API key with id X"."""
    missing = "00000000-0000-4000-8000-000000000000"
    async with client(sandbox) as api:
        exc = await raises(ApiKeyNotFound, api.revoke_api_key(missing))
    assert exc.key_id == missing and exc.http_status == 404
    assert exc.message.startswith(f"no API key with id {missing} ")


@pytest.mark.anyio
async def test_create_refuses_bad_arguments_before_sending(sandbox: SandboxHandle) -> None:
    """A blank name, scopes given as one string or a non-positive expiry: ValueError, and
    nothing is sent."""
    async with client(sandbox) as api:
        for bad in (
            api.create_api_key("  "),
            api.create_api_key("x", scopes="*"),
            api.create_api_key("x", expires_in_days=0),
        ):
            await raises(ValueError, bad)
        assert api.counts.requests == 0


def test_created_key_parsing_never_echoes_a_bad_value() -> None:
    """A create answer whose `api_key` is not a usable key is InvalidResponse that says which
    key id to revoke, without the value."""
    half = "ap_half of a real key"
    with pytest.raises(ApiError) as info:
        CreatedApiKey.from_json({"id": "k-1", "api_key": half})
    assert "k-1" in info.value.message and "revoke" in info.value.message
    assert_free_of(half, info.value)


def test_key_list_is_read_tolerantly() -> None:
    """A bare array or {"api_keys": [...]}; status read or derived from revoked_at and
    expires_at; unknown status words are UNKNOWN; a stray key value is not kept."""
    now = datetime(2026, 1, 2, tzinfo=UTC)
    rows = [
        {"id": "a", "name": "live", "scopes": ["*"], "api_key": CANARY},
        {"id": "b", "revoked_at": "2026-01-01T00:00:00"},
        {"id": "c", "expires_at": "2026-01-01T12:00:00Z"},
        {"id": "d", "expires_at": "2026-02-01T00:00:00Z", "last_used_at": "2026-01-01"},
        {"id": 7, "status": "ACTIVE"},
        {"id": "f", "status": "suspended"},
    ]
    for body in (rows, {"api_keys": rows}):
        keys = api_keys_of(body, now=now)
        assert [(k.id, k.status) for k in keys] == [
            ("a", KeyStatus.ACTIVE),
            ("b", KeyStatus.REVOKED),
            ("c", KeyStatus.EXPIRED),
            ("d", KeyStatus.ACTIVE),
            ("7", KeyStatus.ACTIVE),
            ("f", KeyStatus.UNKNOWN),
        ]
        assert_free_of(CANARY, *keys)
    for bad in ({"keys_please": []}, "nope", [{"name": "no id"}]):
        with pytest.raises(ApiError):
            api_keys_of(bad, now=now)


# -- rotation: one switch to the fallback key ---------------------------------------------------


@pytest.mark.anyio
async def test_primary_revoked_mid_run_switches_once_and_no_submit_is_doubled(
    sandbox_factory: SandboxFactory,
) -> None:
    """20 tasks submit while the primary key is revoked under them, then submit again: the
    client switches to the fallback exactly once (one callback with both sources), every
    submit succeeds, and the sandbox creates and charges each job once."""
    switches: list[tuple[str, str]] = []
    async with (
        sandbox_factory(latency_s=0.02, processing_s=60.0) as sb,
        client(sb) as setup,
    ):
        primary_id = next(k.id for k in await setup.list_api_keys())
        fallback = await setup.create_api_key("next")
        jobs: list[RemoteJob] = []
        first_wave = 0
        halfway, revoked = anyio.Event(), anyio.Event()

        async def worker(api: ApiClient) -> None:
            nonlocal first_wave
            jobs.append(await api.submit_url(URL_SONG, mode="four", stem=None))
            first_wave += 1
            if first_wave == 10:
                halfway.set()
            await revoked.wait()
            jobs.append(await api.submit_url(URL_SONG, mode="four", stem=None))

        async def revoke() -> None:
            await halfway.wait()  # half the first wave is done, the rest is in flight
            async with client(sb, fallback.key) as admin:
                await admin.revoke_api_key(primary_id)
            revoked.set()

        async with (
            client(
                sb,
                fallback_key=fallback.key,
                fallback_source=NEXT_FILE,
                on_key_switch=lambda old, new: switches.append((old, new)),
            ) as api,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(revoke)
            for _ in range(20):
                tg.start_soon(worker, api)
        stats = sb.stats()
    assert switches == [("AUDIOPOD_API_KEY", NEXT_FILE)]
    assert api.key_source == NEXT_FILE and api.switched_to == NEXT_FILE
    assert len(jobs) == 40 and len({j.id for j in jobs}) == 40
    assert sum(stats["submissions"].values()) == 40 and stats["jobs"]["created"] == 40
    refused = stats["responses"].get("403", 0)
    assert refused >= 1  # at least the first submit after the revocation was refused...
    assert stats["requests"][SUBMIT] == 40 + refused  # ...and each refused one sent once more
    wallet = stats["wallets"][sb.api_key]
    assert wallet["reserved_cents"] + wallet["spent_cents"] == 40 * 50
    assert_free_of(fallback.key, api)


@contextlib.asynccontextmanager
async def barrier_api(refused: str, *, waiting_for: int) -> AsyncIterator[tuple[str, list[str]]]:
    """A tiny wallet API over loopback: requests with key `refused` are held until
    `waiting_for` of them have arrived, then all answered 401; any other key gets a balance.
    Yields the base URL and the log of keys seen, in order."""
    seen: list[str] = []
    arrived = asyncio.Event()

    async def balance(request: web.Request) -> web.StreamResponse:
        key = request.headers.get("X-API-Key", "")
        seen.append(key)
        if key == refused:
            if seen.count(refused) == waiting_for:
                arrived.set()
            await asyncio.wait_for(arrived.wait(), timeout=30)
            return web.json_response({"detail": "Invalid API key"}, status=401)
        return web.json_response({"balance_cents": 700, "low_balance_warning": False})

    app = web.Application()
    app.router.add_get("/api/v1/api-wallet/balance", balance)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), seen
    finally:
        await server.close()


@pytest.mark.anyio
async def test_requests_refused_all_at_once_switch_once_and_each_is_resent(
    anyio_backend: str,
) -> None:
    """20 balance reads all out with the old key when the 401s come back: one switch, one
    callback, each read sent exactly once more with the new key, and all of them succeed."""
    switches: list[tuple[str, str]] = []
    async with (
        barrier_api(CANARY, waiting_for=20) as (base, seen),
        ApiClient(
            base_url=base,
            api_key=CANARY,
            fallback_key=NEXT,
            fallback_source=NEXT_FILE,
            on_key_switch=lambda old, new: switches.append((old, new)),
        ) as api,
    ):
        checks: list[KeyCheck] = []

        async def read() -> None:
            checks.append(await check_key(api))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(read)
    assert switches == [("AUDIOPOD_API_KEY", NEXT_FILE)]
    assert seen[:20] == [CANARY] * 20 and seen[20:] == [NEXT] * 20
    assert [c.balance_cents for c in checks] == [700] * 20
    assert {(c.source, c.switched_to) for c in checks} == {(NEXT_FILE, NEXT_FILE)}
    assert api.counts.requests == 40


@pytest.mark.anyio
async def test_plan_gated_403_does_not_switch_keys(sandbox_factory: SandboxFactory) -> None:
    """A plan's 403 is the job's failure: the client keeps its key, calls no callback and
    never sends the fallback key."""
    switches: list[tuple[str, str]] = []
    async with (
        sandbox_factory(extra_keys={CANARY: KeySpec(plan="basic")}) as sb,
        client(sb, CANARY) as setup,
    ):
        fallback = await setup.create_api_key("next")
        async with client(
            sb,
            CANARY,
            fallback_key=fallback.key,
            on_key_switch=lambda old, new: switches.append((old, new)),
        ) as api:
            await raises(PermissionDenied, api.submit_url(URL_SONG, mode="producer", stem=None))
            await check_key(api)
        listed = {k.id: k for k in await setup.list_api_keys()}
    assert switches == [] and api.switched_to is None and api.key_source == "AUDIOPOD_API_KEY"
    assert listed[fallback.id].last_used_at is None  # the fallback never went out


@pytest.mark.anyio
async def test_a_refused_fallback_raises_naming_it_and_never_switches_back(
    sandbox_factory: SandboxFactory,
) -> None:
    """Primary unknown, fallback revoked: one switch, then KeyRevoked naming the fallback's
    source; later requests raise at once with no second switch."""
    switches: list[tuple[str, str]] = []
    async with (
        sandbox_factory(extra_keys={NEXT: KeySpec(status="revoked")}) as sb,
        client(
            sb,
            CANARY,
            key_source=SECRET_FILE,
            fallback_key=NEXT,
            fallback_source=NEXT_FILE,
            on_key_switch=lambda old, new: switches.append((old, new)),
        ) as api,
    ):
        first = await raises(KeyRevoked, check_key(api))
        second = await raises(KeyRevoked, api.list_jobs())
    assert switches == [(SECRET_FILE, NEXT_FILE)]
    assert first.source == NEXT_FILE and f"put it in {NEXT_FILE}" in first.message
    assert second.source == NEXT_FILE and api.counts.requests == 3
    for key in (CANARY, NEXT):
        assert_free_of(key, first, second, api)


@pytest.mark.anyio
async def test_an_upload_refused_for_its_key_is_sent_again_whole(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """A file submit refused because the primary key was revoked is re-sent, file and all,
    with the fallback: one job, made from the whole upload."""
    song = tmp_path / "song.wav"
    song.write_bytes(SONG.read_bytes())
    async with (
        sandbox_factory(extra_keys={CANARY: KeySpec(status="revoked")}) as sb,
        client(sb, CANARY, fallback_key=sb.api_key) as api,
    ):
        job = await api.submit_file(song, mode="four", stem=None)
        stats = sb.stats()
        again = await api.status(job.id)
    assert api.switched_to == "the fallback key"
    assert stats["submissions"] == {"FILE/four": 1} and stats["requests"][SUBMIT] == 2
    assert again.source_type == "FILE" and again.display_name == "song.wav"


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"fallback_key": CANARY}, "same key"),
        ({"fallback_source": NEXT_FILE}, "no key was given"),
        ({"fallback_key": "sk_live_nope"}, "the fallback key"),
        ({"key_source": " "}, "key_source"),
    ],
)
def test_unusable_fallback_settings_are_refused_without_echo(
    options: dict[str, str], said: str
) -> None:
    """A fallback equal to the primary, a fallback source without a key, a malformed fallback
    or a blank source: ConfigError saying so, never a key."""
    with pytest.raises(ConfigError) as info:
        ApiClient(base_url="https://api.audiopod.ai", api_key=CANARY, **options)
    assert said in str(info.value)
    assert_free_of(CANARY, info.value)
    assert_free_of("sk_live_nope", info.value)


# -- key sources ---------------------------------------------------------------------------------


def test_env_source_reads_trims_and_names_the_variable() -> None:
    """From the environment: surrounding whitespace trimmed; unset or blank is MissingApiKey,
    a non-ap_ value BadApiKey, each naming the variable and never the value."""
    source = KeySource.env("AUDIOPOD_CI_KEY")
    assert source.describe() == "AUDIOPOD_CI_KEY" == str(source)
    assert read_key(source, {"AUDIOPOD_CI_KEY": f"  {CANARY}\n"}) == CANARY
    assert KeySource.env().name == "AUDIOPOD_API_KEY"
    for environ in ({}, {"AUDIOPOD_CI_KEY": " \n"}):
        with pytest.raises(MissingApiKey, match="AUDIOPOD_CI_KEY"):
            read_key(source, environ)
    for bad in ("sk_live_123456", "ap_two words"):
        with pytest.raises(BadApiKey, match="AUDIOPOD_CI_KEY") as info:
            read_key(source, {"AUDIOPOD_CI_KEY": bad})
        assert bad not in str(info.value)


def test_env_source_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `environ`, read_key reads os.environ."""
    monkeypatch.setenv("BATCHPOD_TEST_KEY", CANARY)
    assert read_key(KeySource.env("BATCHPOD_TEST_KEY")) == CANARY


@pytest.mark.parametrize(
    ("kind", "name"), [("vault", "x"), ("env", ""), ("env", "A=B"), ("file", "a\0b")]
)
def test_key_source_refuses_nonsense(kind: Any, name: str) -> None:
    """Only env and file kinds, with a usable name."""
    with pytest.raises(ValueError):
        KeySource(kind=kind, name=name)


@pytest.mark.parametrize(
    ("content", "mode"),
    [(f"{CANARY}\n", 0o600), (f"{CANARY}\r\n", 0o400), (f"\ufeff{CANARY}", 0o600), (CANARY, 0o700)],
)
def test_private_key_file_is_read_and_trimmed(tmp_path: Path, content: str, mode: int) -> None:
    """An owner-only key file gives the key without its trailing newline (or BOM)."""
    source = KeySource.file(key_file(tmp_path, content, mode=mode))
    assert source.describe() == f"key file {tmp_path / 'key'}"
    assert read_key(source) == CANARY


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o444])
def test_key_file_others_may_access_is_refused_with_chmod_hint(tmp_path: Path, mode: int) -> None:
    """A key file group or others may access is refused, naming its mode and the exact
    `chmod 600 PATH` to run; its content is not repeated."""
    path = key_file(tmp_path, f"{CANARY}\n", mode=mode)
    with pytest.raises(KeyFileError) as info:
        read_key(KeySource.file(path))
    message = str(info.value)
    assert message.startswith(f"key file {path}: ") and f"(mode {mode:04o})" in message
    assert message.endswith(f"chmod 600 {path}") and "\n" not in message
    assert_free_of(CANARY, info.value)


def write_big(path: Path) -> None:
    """A file far too large to be a key, owner-only."""
    path.write_bytes(b"ap_" + b"x" * 10_000)
    path.chmod(0o600)


def write_fifo(path: Path) -> None:
    """A named pipe nobody writes to (opening it for reading would block)."""
    os.mkfifo(path, 0o600)


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: None, "no such file"),
        (lambda p: key_file(p.parent, ""), "empty"),
        (lambda p: key_file(p.parent, " \n\n"), "empty"),
        (lambda p: key_file(p.parent, "sk_live_" + CANARY[3:] + "\n"), "ap_"),
        (lambda p: key_file(p.parent, f"{CANARY}\n{NEXT}\n"), "ap_"),
        (lambda p: key_file(p.parent, b"\xff\xfe" + CANARY.encode()), "ap_"),
        (lambda p: p.mkdir(), "not a regular file"),
        (write_fifo, "not a regular file"),
        (write_big, "too large"),
    ],
    ids=["missing", "empty", "blank", "not-ap", "two-keys", "not-utf8", "folder", "fifo", "big"],
)
def test_unusable_key_files_are_refused_without_their_content(
    tmp_path: Path, make: Callable[[Path], object], said: str
) -> None:
    """Missing, empty, not an ap_ key, several keys, not text, a folder, a pipe or a huge
    file: KeyFileError naming the path and the problem, never the content."""
    path = tmp_path / "key"
    make(path)
    with pytest.raises(KeyFileError) as info:
        read_key(KeySource.file(path))
    assert info.value.path == path and said in info.value.reason
    assert str(info.value).startswith(f"key file {path}: ")
    for secret in (CANARY, CANARY[3:], NEXT):
        assert_free_of(secret, info.value)


def test_a_key_file_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    """A key file path the OS will not open is refused with the OS's reason. (A file in place
    of its folder: unlike permission bits, that stops root too, and tests run as root.)"""
    (tmp_path / "secrets").write_text(CANARY)
    with pytest.raises(KeyFileError, match=r"cannot open it \(.*[Nn]ot a directory"):
        read_key(KeySource.file(tmp_path / "secrets" / "audiopod"))


@pytest.mark.anyio
async def test_a_key_file_is_named_when_its_key_is_revoked(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """End to end: a key read from a file and revoked at AudioPod is reported as "key
    revoked or expired: create a new key and put it in key file PATH"."""
    source = KeySource.file(key_file(tmp_path, f"{CANARY}\n"))
    async with (
        sandbox_factory(extra_keys={CANARY: KeySpec(status="revoked")}) as sb,
        client(sb, read_key(source), key_source=source.describe()) as api,
    ):
        exc = await raises(KeyRevoked, check_key(api))
    assert exc.message.startswith(
        f"key revoked or expired: create a new key and put it in key file {tmp_path / 'key'} ("
    )
    assert_free_of(CANARY, exc, api)
