"""Across the settled jobs: no work or output name twice, and a unique name for every job.

Two jobs repeat each other when they share a source (``identity.source_key``), mode and stem.
Names are output folders, so they must differ ignoring case. A job without a name gets its
source's slug (``identity.slug_for``), with its stem or mode and then a number appended until
no other job's name, explicit or given, uses it.
"""

from __future__ import annotations

from collections.abc import Iterator

from batchpod.models import Job, Mode, Stem

from ._jobs import Draft
from ._report import Reporter

__all__ = ["check_duplicates", "finish_jobs"]


def check_duplicates(drafts: list[Draft], report: Reporter) -> None:
    """Report each job that repeats an earlier one's work, or uses its name."""
    seen_work: dict[tuple[str, Mode, Stem | None], Draft] = {}
    seen_names: dict[str, Draft] = {}
    for draft in drafts:
        if draft.source_key is not None and draft.mode is not None:
            work = (draft.source_key, draft.mode, draft.stem)
            first = seen_work.setdefault(work, draft)
            if first is not draft:
                report.at(
                    draft.at,
                    f"job {draft.number} repeats job {first.number} "
                    f"(line {first.at[0]}): same source, mode and stem",
                    "remove one of them",
                )
        if draft.name is not None and draft.name_at is not None:
            folded = draft.name.casefold()
            first = seen_names.setdefault(folded, draft)
            if first is not draft:
                report.at(
                    draft.name_at,
                    f"job {draft.number} uses the name '{draft.name}' of job {first.number} "
                    f"(line {first.at[0]})",
                    "names are output folders and must differ, ignoring case",
                )


def finish_jobs(drafts: list[Draft]) -> tuple[Job, ...]:
    """Build the jobs, giving unnamed ones a unique slug that no explicit name uses."""
    taken = {d.name.casefold() for d in drafts if d.name is not None}
    jobs: list[Job] = []
    for draft in drafts:
        assert draft.source is not None and draft.mode is not None
        name = draft.name
        if name is None:
            name = _unique(draft.slug, draft, taken)
            taken.add(name.casefold())
        jobs.append(
            Job(
                name=name,
                source=draft.source,
                mode=draft.mode,
                stem=draft.stem,
                duration_s=draft.duration_s,
                line=draft.at[0],
                meta=draft.meta,
            )
        )
    return tuple(jobs)


def _unique(slug: str, draft: Draft, taken: set[str]) -> str:
    if slug.casefold() not in taken:
        return slug
    variant = draft.stem.value if draft.stem is not None else draft.mode.value if draft.mode else ""
    candidates: Iterator[str] = (
        f"{slug}-{variant}" if n == 1 else f"{slug}-{variant}-{n}" for n in range(1, 1_000_000)
    )
    return next(c for c in candidates if c.casefold() not in taken)
