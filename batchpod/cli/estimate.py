"""``batchpod estimate``: what a manifest will cost, and whether it fits the budget and wallet.

``show_estimate`` prints the table and the verdict; ``run --dry-run`` prints it too. The
arithmetic is ``batchpod.estimate``'s and the state's reading ``batchpod.standing``'s: this
module fetches the price and balance (when a key is set) and lays the figures out.
"""

from __future__ import annotations

import argparse
import math
from typing import TextIO

import anyio

from batchpod.budget import DEFAULT_CENTS_PER_MINUTE, usd
from batchpod.config import RunConfig
from batchpod.errors import ApiError, BadApiKey, ExitCode, KeyFileError, MissingApiKey
from batchpod.estimate import PriorWork, estimate_jobs, prior_work_of, totals
from batchpod.manifest import load_manifest
from batchpod.models import Manifest
from batchpod.standing import read_standing

from ._options import (
    Commands,
    add_api_arguments,
    add_money_arguments,
    api_key,
    client,
    sqlite_state,
    state,
)


def add_parsers(commands: Commands) -> None:
    """Add ``estimate``."""
    estimate = commands.add_parser(
        "estimate",
        help="what a manifest will cost, and whether it fits the budget and the balance",
        description=(
            "Estimate each job's minutes and cost and the total (jobs of unknown length at "
            "--assume-duration, so the total is a worst case), read the balance if a key is "
            "set, and say whether the run fits the budget and the wallet. Nothing is "
            "submitted. Exit 0 if it fits, 3 if it does not."
        ),
    )
    estimate.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    add_api_arguments(estimate)
    estimate.add_argument(
        "--state", metavar="PATH", type=state, help="the state file, for jobs already done"
    )
    add_money_arguments(estimate)
    estimate.set_defaults(handler=_cmd_estimate)


def _cmd_estimate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return show_estimate(load_manifest(args.manifest), args, out)


def show_estimate(manifest: Manifest, args: argparse.Namespace, out: TextIO) -> int:
    """Print the estimate of ``batchpod estimate`` / ``run --dry-run``; 0 if it fits, else 3."""
    standing = read_standing(manifest, state_path=sqlite_state(args, "estimate"))
    repeated = standing.repeated
    price, price_note, balance = DEFAULT_CENTS_PER_MINUTE, "AudioPod's documented price", None
    balance_note = ""
    try:
        key: str | None = None if args.sandbox else api_key(args)
    except (MissingApiKey, BadApiKey, KeyFileError) as exc:
        key, balance_note = None, f" (no balance: {exc})"
    if args.sandbox or key is not None:

        async def fetch() -> tuple[int | None, int | None]:
            async with client(args) as api:
                try:
                    cents = await api.price_per_minute_cents()
                except ApiError:
                    cents = None
                return cents, (await api.balance()).balance_cents

        try:
            fetched, balance = anyio.run(fetch)
        except ApiError as exc:
            balance_note = f" (AudioPod could not be reached: {exc})"
        else:
            if fetched is not None:
                price, price_note = fetched, "from AudioPod's pricing"
    assumed_s = args.assume_duration * 60
    estimates = estimate_jobs(
        manifest.jobs,
        cents_per_minute=price,
        assumed_duration_s=assumed_s,
        prior=[prior_work_of(record) for record in standing.records],
        skip=repeated,
    )
    width = max(len(e.job.name) for e in estimates)
    print(f"{'JOB':<{width}}  SOURCE  LENGTH   COST      NOTE", file=out)
    for index, e in enumerate(estimates):
        length = _minutes(e.duration_s) if e.duration_s is not None else "?"
        note = f"length from {e.length_from.value}"
        if e.duration_s is None:
            note = f"length unknown: assumed {_minutes(assumed_s)}"
        if e.prior is not PriorWork.TO_RUN:
            note += f"; {e.prior.value} (state)"
        if index in repeated:
            note += "; same song as an earlier job"
        row = f"{e.job.name:<{width}}  {e.job.source.kind:<6}  {length:>6}  {usd(e.cents):>8}"
        print(f"{row}  {note}", file=out)
    budget = RunConfig(
        max_spend_cents=args.max_spend, keep_balance_cents=args.keep_balance
    ).budget_for(manifest)
    sums = totals(estimates, budget=budget, balance_cents=balance)
    worst, known = sums.worst_cents, sums.known_cents
    print(
        f"to run: {sums.to_run} of {sums.jobs} jobs, {usd(worst)} at most "
        f"({usd(known)} for {sums.to_run - sums.unknown_length} of known length, "
        f"{usd(worst - known)} for {sums.unknown_length} of unknown length)",
        file=out,
    )
    if sums.done or sums.paid or sums.failed:
        print(
            f"in the state: {sums.done} done, {sums.paid} submitted earlier (paid), "
            f"{sums.failed} failed (run again only with --retry-failed)",
            file=out,
        )
    print(f"price: {usd(price)} per minute ({price_note})", file=out)
    fits = sums.fits
    if budget.max_spend_cents is not None:
        verdict = "fits" if sums.fits_max_spend else "does NOT fit"
        print(f"max spend: {usd(budget.max_spend_cents)}: {verdict}", file=out)
    if balance is None:
        print(f"balance: unknown{balance_note}", file=out)
    else:
        floor = budget.keep_balance_cents or 0
        left = f"{usd(balance - worst)} would remain"
        keep = f", keeping {usd(floor)}" if budget.keep_balance_cents is not None else ""
        verdict = "fits" if sums.fits_balance else "does NOT fit"
        print(f"balance: {usd(balance)}; {left}{keep}: {verdict}", file=out)
    print("fits: yes" if fits else "fits: no", file=out)
    return ExitCode.OK if fits else ExitCode.BUDGET


def _minutes(seconds: float) -> str:
    """``75.2`` -> ``1:16``: a length as the table shows it, rounded up to the second."""
    whole = math.ceil(seconds)
    return f"{whole // 60}:{whole % 60:02d}"
