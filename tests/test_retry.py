"""The pure schedules (retry backoff, the polling ladder, the budget) and the retry loop."""

from __future__ import annotations

import random

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchpod.budget import BudgetGuard, cost_cents, usd
from batchpod.errors import (
    AuthenticationError,
    DownloadLinkExpired,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
)
from batchpod.flow import with_retries
from batchpod.retry import PollPolicy, RetryPolicy, retry_cause


@given(st.integers(1, 60), st.integers(0, 2**32))
def test_backoff_is_full_jitter_under_the_cap(retry: int, seed: int) -> None:
    """The n-th retry waits uniform(0, min(max_backoff_s, base_s * 2**(n-1)))."""
    policy = RetryPolicy(base_s=0.5, max_backoff_s=30.0)
    delay = policy.delay_s(retry, rng=random.Random(seed))
    assert 0.0 <= delay <= min(30.0, 0.5 * 2 ** (retry - 1))


def test_retry_after_is_honoured_and_capped() -> None:
    """A server's Retry-After wins over the backoff, up to max_retry_after_s."""
    policy = RetryPolicy(max_retry_after_s=60.0)
    rng = random.Random(0)
    assert policy.delay_s(1, retry_after_s=7.0, rng=rng) == 7.0
    assert policy.delay_s(1, retry_after_s=3600.0, rng=rng) == 60.0


def test_retries_are_bounded_by_attempts_and_time() -> None:
    """Retrying stops at max_attempts, or when the next wait would pass max_total_s."""
    policy = RetryPolicy(max_attempts=3, max_total_s=10.0, max_backoff_s=5.0, max_retry_after_s=5.0)
    assert policy.may_retry(1, elapsed_s=0.0, next_delay_s=1.0)
    assert not policy.may_retry(3, elapsed_s=0.0, next_delay_s=1.0)
    assert not policy.may_retry(1, elapsed_s=9.5, next_delay_s=1.0)


def test_poll_interval_grows_with_age_and_is_capped() -> None:
    """Young jobs are polled every first_s; older ones at a quarter of their age, up to max_s."""
    policy = PollPolicy(first_s=0.25, growth=0.25, max_s=15.0, jitter=0.0)
    rng = random.Random(0)
    assert policy.interval_s(0.0, rng=rng) == 0.25
    assert policy.interval_s(1.0, rng=rng) == 0.25
    assert policy.interval_s(8.0, rng=rng) == 2.0
    assert policy.interval_s(3600.0, rng=rng) == 15.0


@given(st.floats(0, 10_000), st.integers(0, 2**32))
def test_poll_jitter_stays_in_its_band(age: float, seed: int) -> None:
    """Jitter moves each interval by at most the configured fraction."""
    policy = PollPolicy(jitter=0.2)
    plain = PollPolicy(jitter=0.0).interval_s(age, rng=random.Random(0))
    got = policy.interval_s(age, rng=random.Random(seed))
    assert plain * 0.8 <= got <= plain * 1.2


@pytest.mark.parametrize(
    ("seconds", "cents"), [(328, 55), (180, 30), (180.001, 31), (6, 1), (0.1, 1), (3600, 600)]
)
def test_cost_is_ten_cents_a_minute_rounded_up(seconds: float, cents: int) -> None:
    """AudioPod's price: 10 c per minute of input, the total rounded up to whole cents."""
    assert cost_cents(seconds) == cents


def test_usd_formats_cents_for_people() -> None:
    """Integer cents become dollars only for display."""
    assert (usd(0), usd(5), usd(1234), usd(123456789), usd(-250)) == (
        "$0.00",
        "$0.05",
        "$12.34",
        "$1,234,567.89",
        "-$2.50",
    )


_step = st.tuples(
    st.integers(0, 3_000),  # the job's cost (estimates are exact here)
    st.sampled_from(["settle", "release"]),  # how it ends
    st.booleans(),  # whether the wallet is read again before the next job
    st.integers(0, 500),  # what another client of the wallet spends meanwhile
)


@given(
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 50_000),
    st.integers(1, 8),
    st.lists(_step),
)
def test_budget_holds_against_a_simulated_wallet(
    max_spend: int,
    keep: int,
    balance: int,
    concurrency: int,
    steps: list[tuple[int, str, bool, int]],
) -> None:
    """Jobs reserved, submitted, settled, released, the wallet read again, another client
    spending: spend never passes max_spend, the real wallet never goes below keep_balance
    through our submits, and every reservation is returned at the end."""
    guard = BudgetGuard(max_spend_cents=max_spend, keep_balance_cents=keep, balance_cents=balance)
    wallet = balance  # the server's balance
    unseen = 0  # what the other client spent since the guard last read the wallet
    in_flight: list[tuple[int, int, str]] = []
    for token, (cents, end, read, other) in enumerate(steps):
        spent_by_other = min(other, max(wallet, 0))
        wallet -= spent_by_other
        unseen += spent_by_other
        if read:
            guard.refresh(wallet, generation=guard.generation)
            unseen = 0
        if guard.reserve(token, cents) is None:
            if unseen == 0 and cents:  # the guard knows the wallet: it never goes under keep
                assert wallet - cents >= keep
            wallet -= cents  # AudioPod holds the charge at submit
            guard.submitted(token)
            in_flight.append((token, cents, end))
        assert guard.spent_cents + guard.reserved_cents <= max_spend
        if len(in_flight) >= concurrency:  # the oldest job in flight ends
            old, amount, how = in_flight.pop(0)
            if how == "settle":
                guard.settle(old, amount)
            else:
                guard.release(old)
                wallet += amount  # refunded
    for old, amount, how in in_flight:
        if how == "settle":
            guard.settle(old, amount)
        else:
            guard.release(old)
            wallet += amount
    assert guard.reserved_cents == 0
    assert guard.spent_cents <= max_spend


# -- the retry loop and its causes ----------------------------------------------------------


class Flaky:
    """An operation that raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


FAST = RetryPolicy(max_attempts=4, base_s=0.001, max_backoff_s=0.002, max_retry_after_s=0.01)


def test_the_default_policy_can_always_take_its_first_capped_pause() -> None:
    """A Retry-After of 5 minutes is honoured as 60 s, and that pause fits the time bound."""
    policy = RetryPolicy()
    delay = policy.delay_s(1, retry_after_s=300.0, rng=random.Random(0))
    assert delay == 60.0
    assert policy.may_retry(1, elapsed_s=1.0, next_delay_s=delay)
    with pytest.raises(ValueError, match="must not exceed max_total_s"):
        RetryPolicy(max_total_s=30.0, max_retry_after_s=60.0)


def test_transient_failures_are_retried_and_counted() -> None:
    """429, 5xx and timeouts are sent again; each retry is reported before its pause."""
    operation = Flaky(
        RateLimited("slow down", retry_after_s=3600.0),  # capped at 0.01 s by the policy
        ServerError("bad gateway", http_status=502),
        TransportError("h sent no answer to GET /x within 60 s", sent=True, timed_out=True),
    )
    seen: list[str] = []
    result = anyio.run(
        lambda: with_retries(
            operation,
            policy=FAST,
            rng=random.Random(0),
            on_retry=lambda e: seen.append(retry_cause(e)),
        )
    )
    assert result == "ok" and operation.calls == 4
    assert seen == ["429", "502", "timeout"]


@pytest.mark.parametrize(
    "error",
    [
        RequestRejected("unprocessable", http_status=422),
        AuthenticationError("invalid key", http_status=401),
        DownloadLinkExpired("refused", transient=False),
    ],
)
def test_permanent_failures_are_raised_at_once(error: Exception) -> None:
    """A 4xx, a refused key or an expired link is never sent again by the loop."""
    operation = Flaky(error)
    with pytest.raises(type(error)):
        anyio.run(lambda: with_retries(operation, policy=FAST, rng=random.Random(0)))
    assert operation.calls == 1


def test_the_loop_gives_up_after_max_attempts() -> None:
    """A failure that keeps coming is raised after max_attempts sends."""
    operation = Flaky(*[ServerError("down", http_status=503) for _ in range(10)])
    with pytest.raises(ServerError):
        anyio.run(lambda: with_retries(operation, policy=FAST, rng=random.Random(0)))
    assert operation.calls == FAST.max_attempts
