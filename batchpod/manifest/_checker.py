"""One manifest's check, top down: its YAML read, then the top-level keys, budget and defaults.

Validation never stops at the first mistake: every rule reports to one ``Reporter`` and goes
on, and a ``Manifest`` is built only when no problem was found. The YAML is read by ``_yaml``;
the jobs are checked as it is composed (``_jobs``), each field by ``_fields``, and across the
list by ``_naming``. This module holds the top-level rules and the order they run in.
"""

from __future__ import annotations

import math
import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from yaml.nodes import MappingNode, Node

from batchpod.budget import dollars_to_cents
from batchpod.encode import extension
from batchpod.models import (
    BIT_DEPTHS,
    BITRATES_KBPS,
    Budget,
    Job,
    Location,
    Manifest,
    ObjectUrl,
    OutputFormat,
    OutputSpec,
    takes_bitrate,
)
from batchpod.templates import (
    DEFAULT_OUTPUT_PATH,
    MAX_COMPONENT_BYTES,
    PathTemplate,
    TemplateError,
    clashes,
    missing_meta,
)

from ._fields import JOB_KEYS, JobFields
from ._jobs import Defaults, Draft, JobList, expand_globs
from ._limits import SPLIT_HINT, ManifestLimits
from ._naming import check_duplicates, finish_jobs
from ._report import Reporter
from ._values import INVALID, describe, is_null, mapping, scalar, string
from ._yaml import read_root

__all__ = [
    "BUDGET_KEYS",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_OUTPUT_DIR",
    "MAX_CONCURRENCY",
    "OUTPUT_KEYS",
    "SUPPORTED_VERSION",
    "TOP_KEYS",
    "Checker",
]

SUPPORTED_VERSION: Final = 1
DEFAULT_OUTPUT_DIR: Final = "stems/"
DEFAULT_CONCURRENCY: Final = 8
MAX_CONCURRENCY: Final = 10_000

OUTPUT_KEYS: Final = ("output_format", "output_bit_depth", "output_bitrate_kbps", "output_path")
TOP_KEYS: Final = (
    "version",
    "defaults",
    "output_dir",
    *OUTPUT_KEYS,
    "concurrency",
    "budget",
    "jobs",
)
BUDGET_KEYS: Final = ("max_spend_usd", "keep_balance_usd")


class Checker:
    """One validation pass over one manifest, collecting problems in ``report`` as it goes."""

    def __init__(self, path: Path, limits: ManifestLimits) -> None:
        self.shown = str(path)
        self.base = Path(path).absolute().parent
        self.report = Reporter(self.shown, limits)
        self.fields = JobFields(self.base, self.report)
        self.jobs = JobList(self.fields, self.report)

    def run(
        self, data: bytes | str, *, loader: type[Any] | None, event_parser: type[Any] | None
    ) -> Manifest | None:
        report = self.report
        root = read_root(
            data, report, take_job=self.jobs.take_job, loader=loader, event_parser=event_parser
        )
        if root is None:
            return None
        if not isinstance(root, MappingNode):
            report.on(root, "the manifest must be a mapping with 'version' and 'jobs' keys")
            return None
        top = mapping(root, TOP_KEYS, "at the top level", report)

        version = self.version(top.get("version"), root)
        output_dir = self.output_dir(top.get("output_dir"))
        output = self.output_spec(top)
        template = self.output_path(top.get("output_path"))
        concurrency = self.concurrency(top.get("concurrency"))
        budget = self.budget(top.get("budget"))
        defaults = self.defaults(top.get("defaults"))
        drafts = self.jobs.check(top.get("jobs"), root, defaults)
        drafts, globs = expand_globs(drafts)
        if globs and len(drafts) > report.limits.max_jobs:
            first = globs[0]
            report.at(
                (first.line, first.column),
                f"the jobs and their 'files' matches are {len(drafts)} jobs; at most "
                f"{report.limits.max_jobs}",
                SPLIT_HINT,
            )
            return None
        check_duplicates(drafts, report)

        if report.problems or version is None or output_dir is None or budget is None:
            return None
        if concurrency is None or output is None or template is None:
            return None
        jobs = finish_jobs(drafts)
        self.check_paths(template, jobs, drafts, output)
        if report.problems:
            return None
        return Manifest(
            path=self.base / Path(self.shown).name,
            version=version,
            output_dir=output_dir,
            concurrency=concurrency,
            budget=budget,
            jobs=jobs,
            output=output,
            output_path=template.text,
            globs=tuple(globs),
        )

    def version(self, node: Node | None, root: Node) -> int | None:
        report = self.report
        if node is None:
            report.on(root, "missing 'version'", "add 'version: 1' at the top")
            return None
        value = scalar(node, report)
        if value is INVALID:
            return None
        if type(value) is not int:
            report.on(node, f"'version' must be a whole number, got {describe(node)}")
            return None
        if value != SUPPORTED_VERSION:
            report.on(
                node,
                f"unsupported manifest version {report.quote(str(value))}",
                f"this batchpod reads version {SUPPORTED_VERSION}",
            )
            return None
        return value

    def output_dir(self, node: Node | None) -> Location | None:
        """A folder (relative to the manifest), or a bucket: ``s3://``, ``gs://``, ``az://``."""
        if node is None:
            return self.base / DEFAULT_OUTPUT_DIR
        text = string(node, "'output_dir'", self.report)
        if text is None:
            return None
        if not text.strip() or "\x00" in text:
            self.report.on(node, "'output_dir' must be a folder path or a bucket's URL")
            return None
        if "://" in text:
            try:
                return ObjectUrl.parse(text)
            except ValueError as exc:
                # Not repeated: a URL may hold credentials typed into it.
                self.report.on(node, f"'output_dir' is not a bucket URL: {exc}")
                return None
        return Path(os.path.normpath(self.base / Path(text).expanduser()))

    def output_spec(self, top: dict[str, Node]) -> OutputSpec | None:
        """``output_format`` with its ``output_bit_depth`` or ``output_bitrate_kbps``."""
        report = self.report
        fmt: OutputFormat | None = OutputFormat.WAV
        node = top.get("output_format")
        if node is not None:
            text = string(node, "'output_format'", report)
            choices = ", ".join(f.value for f in OutputFormat)
            try:
                fmt = OutputFormat(text) if text is not None else None
            except ValueError:
                report.on(
                    node, f"unknown output_format {report.quote(text or '')}", f"use {choices}"
                )
                fmt = None
        depth = self.whole(top.get("output_bit_depth"), "output_bit_depth")
        bitrate = self.whole(top.get("output_bitrate_kbps"), "output_bitrate_kbps")
        if fmt is None or depth is INVALID or bitrate is INVALID:
            return None
        ok = True
        if depth is not None:
            where = top["output_bit_depth"]
            if not fmt.lossless:
                report.on(where, f"'output_bit_depth' applies to wav and flac, not {fmt.value}")
                ok = False
            elif depth not in BIT_DEPTHS:
                report.on(where, f"'output_bit_depth' must be 16 or 24, got {depth}")
                ok = False
        if bitrate is not None:
            where = top["output_bitrate_kbps"]
            span = BITRATES_KBPS.get(fmt)
            if span is None:
                report.on(
                    where, f"'output_bitrate_kbps' applies to mp3, ogg and opus, not {fmt.value}"
                )
                ok = False
            elif not takes_bitrate(fmt, bitrate):
                report.on(
                    where,
                    f"'output_bitrate_kbps' for {fmt.value} must be from {span[0]} to "
                    f"{span[1]}, got {bitrate}",
                )
                ok = False
        return OutputSpec(format=fmt, bit_depth=depth, bitrate_kbps=bitrate) if ok else None

    def output_path(self, node: Node | None) -> PathTemplate | None:
        """``output_path``: where each stem goes inside the output folder."""
        if node is None:
            return PathTemplate.parse(DEFAULT_OUTPUT_PATH)
        text = string(node, "'output_path'", self.report)
        if text is None:
            return None
        try:
            return PathTemplate.parse(text)
        except TemplateError as exc:
            self.report.on(node, exc.message, exc.hint)
            return None

    def check_paths(
        self,
        template: PathTemplate,
        jobs: tuple[Job, ...],
        drafts: list[Draft],
        output: OutputSpec,
    ) -> None:
        """Report each job whose stems would be written where another job's are, or to a
        name too long for a file system."""
        ext = "wav" if output.as_served else extension(output)
        lacking = list(missing_meta(template, jobs))
        for index, key in lacking:
            self.report.at(
                drafts[index].at,
                f"job {drafts[index].number} has no 'meta.{key}', which output_path uses",
                f"give every job 'meta: {{{key}: ...}}' (or set it in 'defaults')",
            )
        if lacking:
            return
        for found in clashes(template, jobs, ext=ext):
            if isinstance(found, int):
                self.report.at(
                    drafts[found].at,
                    f"job {drafts[found].number}'s output path has a folder or file name "
                    f"longer than {MAX_COMPONENT_BYTES} bytes",
                    "give it a shorter name, or use fewer fields in one folder of output_path",
                )
                continue
            first, later = drafts[found.first], drafts[found.second]
            what = f"stem {found.stem}" if found.stem is not None else "stems"
            self.report.at(
                later.at,
                f"job {later.number}'s {what} would be written to "
                f"'{self.report.quote(found.path)}', as job {first.number}'s (line {first.at[0]})",
                "output_path must give every job's stems paths of their own, ignoring case; "
                "add {name}",
            )

    def whole(self, node: Node | None, key: str) -> Any:
        """A whole number of 1 or more, None if absent, INVALID (reported) otherwise."""
        if node is None:
            return None
        value = scalar(node, self.report)
        if value is INVALID:
            return INVALID
        if type(value) is not int or value < 1:
            self.report.on(node, f"'{key}' must be a whole number, got {describe(node)}")
            return INVALID
        return value

    def concurrency(self, node: Node | None) -> int | None:
        if node is None:
            return DEFAULT_CONCURRENCY
        value = scalar(node, self.report)
        if value is INVALID:
            return None
        if type(value) is not int or not 1 <= value <= MAX_CONCURRENCY:
            self.report.on(
                node,
                f"'concurrency' must be a whole number from 1 to {MAX_CONCURRENCY}, "
                f"got {describe(node)}",
            )
            return None
        return value

    def budget(self, node: Node | None) -> Budget | None:
        if node is None or is_null(node):
            return Budget()
        if not isinstance(node, MappingNode):
            self.report.on(node, f"'budget' must be a mapping of {' and '.join(BUDGET_KEYS)}")
            return None
        fields = mapping(node, BUDGET_KEYS, "in 'budget'", self.report)
        cents = {key: self.usd(value, key) for key, value in fields.items()}
        if any(value is INVALID for value in cents.values()):
            return None
        return Budget(
            max_spend_cents=cents.get("max_spend_usd"),
            keep_balance_cents=cents.get("keep_balance_usd"),
        )

    def usd(self, node: Node, key: str) -> Any:
        report = self.report
        value = scalar(node, report)
        if value is INVALID:
            return INVALID
        if value is None:
            return None
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            report.on(node, f"'{key}' must be a dollar amount of 0 or more, got {describe(node)}")
            return INVALID
        try:
            return dollars_to_cents(Decimal(str(value)))
        except ValueError:  # finite and >= 0 was checked above: only whole cents is left
            report.on(node, f"'{key}' must be in whole cents, got {report.quote(node.value)}")
            return INVALID

    def defaults(self, node: Node | None) -> Defaults:
        if node is None or is_null(node):
            return Defaults(fields={})
        if not isinstance(node, MappingNode):
            self.report.on(node, "'defaults' must be a mapping of job fields")
            return Defaults(fields={})
        raw = mapping(node, JOB_KEYS, "in 'defaults'", self.report)
        keys = frozenset(raw)
        if "name" in raw:
            self.report.on(
                raw.pop("name"), "'name' cannot be a default", "every job's name differs"
            )
        return Defaults(fields=self.fields.parse(raw), keys=keys)
