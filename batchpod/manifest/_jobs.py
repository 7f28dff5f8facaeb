"""The 'jobs' list: each item checked as it is composed, then settled with 'defaults'.

Jobs are checked in two steps. As its item is composed, a job's own fields are parsed and only
a small record of it is kept (``Draft``; the item's nodes are then dropped). Once the whole
manifest is read, each draft is *settled*: merged with 'defaults' (which may be written after
'jobs'), and told what it still lacks. Aliases share nodes rather than copy them, and a job
listed again through an alias is reported, not checked again, so no work is multiplied.
Whether two jobs repeat each other, and what unnamed jobs are called, is ``_naming``'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, SequenceNode

from batchpod.errors import Problem
from batchpod.identity import slug_for, source_key
from batchpod.models import MAX_META_KEYS, GlobMatch, Mode, Source, Stem

from ._fields import JOB_KEYS, JobFields
from ._report import Position, Reporter, position
from ._values import check_tag, describe, mapping
from ._yaml import SEQ_TAG

__all__ = ["Defaults", "Draft", "JobList", "expand_globs"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Defaults:
    """What 'defaults' gives every job: its valid fields, and every key it sets, valid or not."""

    fields: dict[str, Any]
    # A job is not told it lacks a field whose default was already reported as bad.
    keys: frozenset[str] = frozenset()


@dataclass(slots=True)
class Draft:
    """A job as far as it validated; ``None`` where a field was missing or bad.

    As its item is composed, a job's own fields are parsed into ``own`` (the item's nodes are
    then dropped, so only this small record stays). Once the whole manifest is read,
    `JobList.settle` merges them with 'defaults' (which may come after 'jobs').
    """

    at: Position
    number: int
    index: int = -1  # where the job's mapping starts in the text (-1: not a mapping)
    keys: frozenset[str] = frozenset()  # the keys the job sets itself, valid or not
    own: dict[str, Any] | None = None  # the job's own valid fields, until settled
    stem_at: Position | None = None
    name_at: Position | None = None
    source: Source | None = None
    source_key: str | None = None
    mode: Mode | None = None
    stem: Stem | None = None
    duration_s: float | None = None
    name: str | None = None
    meta: tuple[tuple[str, str], ...] = ()
    # A 'files:' job: its pattern and the files it matched (expanded by ``expand_globs``).
    glob: tuple[str, tuple[Path, ...]] | None = None
    slug: str = ""
    ok: bool = True
    reported: int = 0  # how many of its list's problems were found by the end of this job


@dataclass(slots=True)
class _Listed:
    """The jobs of one 'jobs' list, checked as its items were composed."""

    drafts: list[Draft] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    count: int = 0
    # Where each job's mapping starts -> its number, to spot a job listed again through an
    # alias; built only once an item starts no later than the one before (see `_list_job`).
    numbers: dict[int, int] | None = None
    last: int = -1


class JobList:
    """The jobs of one manifest: `take_job` as the composer streams them, then `check`."""

    def __init__(self, fields: JobFields, report: Reporter) -> None:
        self.fields = fields
        self.report = report
        # The jobs of each 'jobs' list streamed while composing, by the list node's id.
        self.listed: dict[int, _Listed] = {}
        self.key_sets: dict[frozenset[str], frozenset[str]] = {}  # one copy of each key set

    def check(self, node: Node | None, root: Node, defaults: Defaults) -> list[Draft]:
        """The drafts of the 'jobs' list ``node`` (once all is read), each settled."""
        report = self.report
        if node is None:
            report.on(root, "missing 'jobs'", "add a 'jobs:' list; see jobs.example.yaml")
            return []
        if not isinstance(node, SequenceNode):
            report.on(node, f"'jobs' must be a list of jobs, got {describe(node)}")
            return []
        listed = self.listed.get(id(node))
        if listed is None:  # not streamed: written elsewhere and named through an alias
            listed = _Listed()
            for item in node.value:
                self.take_job(node, item, listed)
        if not listed.count:
            report.on(node, "'jobs' is empty", "add at least one job")
            return []
        check_tag(node, SEQ_TAG, report)
        if listed.count > report.limits.max_jobs:  # aliases list many jobs in little text
            report.too_many_jobs(node.start_mark)
            return []
        done = 0
        for draft in listed.drafts:  # each job's problems together, as written
            report.problems += listed.problems[done : draft.reported]
            done = draft.reported
            self.settle(draft, defaults)
        return listed.drafts

    def take_job(self, jobs: SequenceNode, item: Node, listed: _Listed | None = None) -> None:
        """Check one item of a 'jobs' list as far as it can be without 'defaults'."""
        if listed is None:
            listed = self.listed.setdefault(id(jobs), _Listed())
        listed.count += 1
        if listed.count > self.report.limits.max_jobs:
            return  # reported once the list is complete
        # Its problems are kept with the list: they count only if this is the 'jobs' list
        # used (a duplicate 'jobs' key is reported, not checked).
        report = self.report
        problems, report.problems = report.problems, listed.problems
        try:
            self._list_job(listed, item, listed.count)
        finally:
            report.problems = problems

    def _list_job(self, listed: _Listed, item: Node, number: int) -> None:
        # A job's mapping listed again (through an alias) can only repeat that job, and checking
        # it again would let a few aliases multiply the work. Mappings written in the list start
        # in increasing order, so only one that starts no later than the last can be a repeat:
        # the map of starts to job numbers is built (and kept) from the first such job on.
        if isinstance(item, MappingNode):
            at = item.start_mark.index
            if listed.numbers is None and at <= listed.last:
                listed.numbers = {d.index: d.number for d in listed.drafts if d.index >= 0}
            listed.last = max(listed.last, at)
            numbers = listed.numbers
            first = numbers.setdefault(at, number) if numbers is not None else number
            if first != number:
                self.report.on(
                    item,
                    f"job {number} is job {first} again (through a YAML alias)",
                    "list each job once",
                )
                draft = Draft(at=position(item), number=number, ok=False)
                draft.reported = len(listed.problems)
                listed.drafts.append(draft)
                return
        draft = self._job(item, number)
        draft.reported = len(listed.problems)
        listed.drafts.append(draft)

    def _job(self, node: Node, number: int) -> Draft:
        """A job's own fields, checked; what depends on 'defaults' waits for `settle`."""
        report = self.report
        draft = Draft(at=position(node), number=number)
        if not isinstance(node, MappingNode):
            report.on(node, f"job {number} must be a mapping of job fields, got {describe(node)}")
            draft.ok = False
            return draft
        before = len(report.problems)
        raw = mapping(node, JOB_KEYS, f"in job {number}", report)
        keys = frozenset(raw)
        draft.index = node.start_mark.index
        draft.keys = self.key_sets.setdefault(keys, keys)
        draft.own = own = self.fields.parse(raw)
        if "stem" in own:
            draft.stem_at = position(raw["stem"])
        if "name" in own:
            draft.name_at = position(raw["name"])
        given = [key for key in ("url", "file", "files") if key in raw]
        if len(given) > 1:
            named = [f"'{key}'" for key in given]
            both = f"both {named[0]} and {named[1]}" if len(named) == 2 else ", ".join(named)
            report.on(node, f"job {number} has {both}", "keep exactly one")
        if "files" in raw and "name" in raw:
            report.on(
                raw["name"],
                f"job {number} stands for many files ('files'), so it cannot have one 'name'",
                "each file's job is named after it",
            )
        draft.ok = len(report.problems) == before
        return draft

    def settle(self, draft: Draft, defaults: Defaults) -> None:
        """Merge a checked job's own fields with the defaults, and check what is missing."""
        own = draft.own
        if own is None:  # not a mapping, or a repeat: already reported
            return
        draft.own = None  # no longer needed: let it go as the jobs are settled
        report = self.report
        number = draft.number
        before = len(report.problems)
        given = draft.keys | defaults.keys
        fields = own
        if defaults.fields:
            fields = dict(defaults.fields)
            if {"url", "file", "files"} & own.keys():  # a job's source replaces a default's
                fields.pop("url", None)
                fields.pop("file", None)
                fields.pop("files", None)
            fields.update(own)
            if "meta" in defaults.fields and "meta" in own:  # a job's keys over the defaults'
                merged = {**dict(defaults.fields["meta"]), **dict(own["meta"])}
                fields["meta"] = tuple(merged.items())

        if len({"url", "file", "files"} & draft.keys) > 1:
            pass  # reported by `_job`
        elif not {"url", "file", "files"} & given:
            report.at(draft.at, f"job {number} has neither 'url' nor 'file'", "add one of them")
        elif "files" in fields:
            draft.glob = fields["files"]
        elif "url" in fields:
            url = fields["url"]
            draft.source = Source(url=url)
            draft.source_key = source_key(draft.source)
        elif "file" in fields:
            draft.source = Source(file=fields["file"])
            draft.source_key = source_key(draft.source)

        draft.mode = fields.get("mode")
        if draft.mode is None and "mode" not in given:
            valid = "|".join(m.value for m in Mode)
            report.at(draft.at, f"job {number} has no 'mode'", f"add 'mode: {valid}'")

        stem = fields.get("stem")
        if draft.mode is Mode.SINGLE:
            if stem is not None:
                draft.stem = stem
            elif "stem" not in given:
                valid = "|".join(s.value for s in Stem)
                report.at(
                    draft.at,
                    f"job {number} has mode 'single' but no 'stem'",
                    f"add 'stem: {valid}'",
                )
        elif draft.mode is not None and draft.stem_at is not None:  # the job's own stem
            report.at(
                draft.stem_at,
                f"'stem' only applies to mode 'single', not '{draft.mode.value}'",
                "remove 'stem' or use 'mode: single'",
            )

        draft.duration_s = fields.get("duration")
        draft.meta = fields.get("meta", ())
        if len(draft.meta) > MAX_META_KEYS:
            report.at(
                draft.at,
                f"job {number} has {len(draft.meta)} 'meta' keys with the defaults'; "
                f"at most {MAX_META_KEYS}",
            )
        draft.name = fields.get("name")
        if draft.name is None and draft.source is not None:
            draft.slug = slug_for(draft.source)
        draft.ok = draft.ok and len(report.problems) == before


def expand_globs(drafts: list[Draft]) -> tuple[list[Draft], list[GlobMatch]]:
    """Each 'files:' job replaced by one job per file it matched, in the place it is written
    (each with its line, for messages). A file whose work (the file, mode and stem) a job
    written out already does, or an earlier match, is left out: a glob that overlaps a job
    or another glob never repeats it."""
    seen: set[tuple[str | None, Mode | None, Stem | None]] = {
        (d.source_key, d.mode, d.stem)
        for d in drafts
        if d.glob is None and d.source_key is not None and d.mode is not None
    }
    out: list[Draft] = []
    globs: list[GlobMatch] = []
    for draft in drafts:
        if draft.glob is None:
            out.append(draft)
            continue
        pattern, paths = draft.glob
        taken = 0
        for path in paths:
            source = Source(file=path)
            key = source_key(source)
            if (key, draft.mode, draft.stem) in seen:
                continue
            seen.add((key, draft.mode, draft.stem))
            taken += 1
            out.append(
                dataclasses.replace(
                    draft, glob=None, source=source, source_key=key, slug=slug_for(source)
                )
            )
        globs.append(
            GlobMatch(
                pattern=pattern,
                line=draft.at[0],
                column=draft.at[1],
                matched=len(paths),
                jobs=taken,
            )
        )
    return out, globs
