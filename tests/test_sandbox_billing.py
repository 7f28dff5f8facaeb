"""The sandbox's money: pricing, and the wallet invariant balance + reserved + spent = initial."""

from __future__ import annotations

import random

import aiohttp
import pytest
from conftest import FakeClock, SandboxFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from batchpod.sandbox import SandboxSettings, SandboxState
from batchpod.sandbox._billing import InsufficientFunds, Wallet
from batchpod.sandbox._contract import cost_cents, usd
from batchpod.sandbox._records import ApiError


@pytest.mark.parametrize(
    ("seconds", "cents"),
    [
        (328, 55),
        (300, 50),
        (180, 30),
        (60, 10),
        (6, 1),
        (6.001, 2),
        (0.001, 1),
        (0, 0),
        (3600, 600),
    ],
)
def test_cost_is_ten_cents_a_minute_rounded_up(seconds: float, cents: int):
    """cost_cents rounds the total up to whole cents, never per minute."""
    assert cost_cents(seconds) == cents


def test_usd_formats_cents():
    """Display strings carry a "$" and two decimals."""
    assert [usd(c) for c in (0, 5, 55, 2500, 1_000_000)] == [
        "$0.00",
        "$0.05",
        "$0.55",
        "$25.00",
        "$10000.00",
    ]


def test_wallet_refuses_what_it_cannot_cover():
    """A reservation above the balance raises InsufficientFunds and changes nothing."""
    wallet = Wallet(initial_cents=40)
    with pytest.raises(InsufficientFunds) as exc:
        wallet.reserve(1, 41)
    assert (exc.value.required_cents, exc.value.available_cents) == (41, 40)
    assert (wallet.balance_cents, wallet.reserved_cents, wallet.holds()) == (40, 0, {})


OPS = st.lists(
    st.tuples(st.sampled_from(["reserve", "charge", "refund"]), st.integers(0, 400)),
    max_size=60,
)


@given(initial=st.integers(0, 5_000), ops=OPS)
def test_wallet_invariant_holds_for_any_sequence(initial: int, ops: list[tuple[str, int]]):
    """balance + reserved + spent stays equal to the initial balance, and refunds restore it."""
    wallet = Wallet(initial_cents=initial)
    next_job = 0
    for op, amount in ops:
        holds = wallet.holds()
        if op == "reserve":
            before = wallet.balance_cents
            try:
                wallet.reserve(next_job, amount)
            except InsufficientFunds:
                assert amount > before
                assert wallet.balance_cents == before
            next_job += 1
        elif holds:
            job = sorted(holds)[amount % len(holds)]
            if op == "charge":
                assert wallet.charge(job) == holds[job]
            else:
                before = wallet.balance_cents
                assert wallet.refund(job) == holds[job]
                assert wallet.balance_cents == before + holds[job]
        assert wallet.balance_cents + wallet.reserved_cents + wallet.spent_cents == initial
        assert wallet.reserved_cents == sum(wallet.holds().values())
        assert min(wallet.balance_cents, wallet.reserved_cents, wallet.spent_cents) >= 0
    for job in wallet.holds():
        wallet.refund(job)
    assert wallet.balance_cents == initial - wallet.spent_cents
    assert wallet.reserved_cents == 0


STATE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(1, 900)),
        st.tuples(st.just("advance"), st.integers(0, 30)),
        st.tuples(st.just("delete"), st.integers(0, 50)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 1000),
    failure_rate=st.sampled_from([0.0, 0.3, 1.0]),
    initial=st.integers(0, 3_000),
    ops=STATE_OPS,
)
def test_sandbox_state_keeps_the_wallet_invariant(
    seed: int, failure_rate: float, initial: int, ops: list[tuple[str, int]]
):
    """Through submits, failures, completions and deletes, no cent appears or vanishes."""
    clock = FakeClock()
    knobs = SandboxSettings(
        seed=seed, failure_rate=failure_rate, balance_cents=initial, processing_s=(1.0, 20.0)
    )
    state = SandboxState(knobs, clock=clock)
    account = state.accounts[knobs.api_key]
    wallet = account.wallet
    for op, value in ops:
        state.settle(clock())
        if op == "submit":
            try:
                state.submit(
                    account,
                    source_type="URL",
                    source="https://e.com/a.mp3",
                    mode="four",
                    stem=None,
                    duration_s=float(value),
                    now=clock(),
                )
            except ApiError as exc:
                assert exc.status == 402
        elif op == "advance":
            clock.advance(value)
        elif account.jobs:
            state.delete_job(account, sorted(account.jobs)[value % len(account.jobs)], now=clock())
        assert wallet.balance_cents + wallet.reserved_cents + wallet.spent_cents == initial
        assert wallet.spent_cents == sum(row.cents for row in account.usage)
    clock.advance(30)
    state.settle(clock())
    assert wallet.reserved_cents == 0
    events = state.stats()["wallet_events"]
    reserved = sum(e["cents"] for e in events if e["kind"] == "reserve")
    refunded = sum(e["cents"] for e in events if e["kind"] == "refund")
    charged = sum(e["cents"] for e in events if e["kind"] == "charge")
    assert reserved == refunded + charged
    assert wallet.balance_cents == initial - charged
    if failure_rate == 1.0:
        assert wallet.balance_cents == initial


@pytest.mark.anyio
async def test_wallet_invariant_over_http(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """Over real requests, balance + reserved + spent stays at the start and refunds add back."""
    rng = random.Random(5)
    async with sandbox_factory(
        clock=fake_clock, failure_rate=0.4, balance_cents=3_000, processing_s=(5.0, 30.0)
    ) as sb:
        headers = {"X-API-Key": sb.api_key}
        statuses: dict[int, str] = {}
        for n in range(40):
            seconds = rng.randint(30, 600)
            async with http.post(
                sb.base_url + "/api/v1/stem-extraction/api/extract",
                data={"url": f"https://e.com/{n}.mp3?duration={seconds}", "mode": "four"},
                headers=headers,
            ) as resp:
                assert resp.status in (200, 402)
                if resp.status == 200:
                    statuses[(await resp.json())["id"]] = "PENDING"
            fake_clock.advance(rng.uniform(0, 4))
            async with http.get(
                sb.base_url + "/api/v1/api-wallet/balance", headers=headers
            ) as resp:
                seen = await resp.json()
            wallet = sb.stats()["wallets"][sb.api_key]
            assert seen["balance_cents"] == wallet["balance_cents"]
            assert seen["total_spent_cents"] == wallet["spent_cents"]
            assert (
                wallet["balance_cents"] + wallet["reserved_cents"] + wallet["spent_cents"] == 3000
            )
        fake_clock.advance(60)
        for job_id in statuses:
            async with http.get(
                sb.base_url + f"/api/v1/stem-extraction/status/{job_id}", headers=headers
            ) as resp:
                statuses[job_id] = (await resp.json())["status"]
        async with http.get(
            sb.base_url + "/api/v1/api-wallet/usage?limit=100", headers=headers
        ) as r:
            usage = await r.json()
        stats = sb.stats()
    wallet = stats["wallets"][sb.api_key]
    assert wallet["reserved_cents"] == 0
    assert set(statuses.values()) == {"COMPLETED", "FAILED"}
    completed = {j for j, s in statuses.items() if s == "COMPLETED"}
    assert {int(row["job_id"]) for row in usage["logs"]} == completed
    assert sum(row["amount_cents"] for row in usage["logs"]) == wallet["spent_cents"]
    assert wallet["balance_cents"] + wallet["spent_cents"] == 3000
    refunds = {e["job_id"] for e in stats["wallet_events"] if e["kind"] == "refund"}
    assert refunds == set(statuses) - completed
