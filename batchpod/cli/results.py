"""``batchpod merge`` and ``batchpod report``: what is done with results files after a run.

``merge`` combines a sharded run's results files into the one a single run would have written
(``batchpod.merge`` decides what the merged document holds); ``report`` renders one results
file for people, for spreadsheets or as a page to open in a browser (``batchpod.report``
renders each).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from batchpod import merge as merge_module
from batchpod import report as report_module
from batchpod.errors import ExitCode, ResultsWriteError
from batchpod.paths import default_results_path
from batchpod.results import results_yaml_pieces, write_atomic

from ._options import PROG, Commands, count


def add_parsers(commands: Commands) -> None:
    """Add ``merge``, then ``report``."""
    merge = commands.add_parser(
        "merge",
        help="combine the results files of a manifest's shards into one",
        description=(
            "Read the results files of a sharded run (--shard I/N) and write one results "
            "manifest in the manifest's job order, as a single run would have. Jobs that no "
            "file lists, and shards with no file, are reported: exit 1 then, else 0."
        ),
    )
    merge.add_argument("results", metavar="RESULTS", nargs="+", type=Path, help="shard results")
    merge.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        type=Path,
        help="where to write the merged results (default: MANIFEST's name + .results.yaml, "
        "or .json with --format json)",
    )
    merge.add_argument(
        "--format",
        choices=("yaml", "json"),
        default="yaml",
        help="format of the merged results (default: yaml)",
    )
    merge.add_argument(
        "--manifest",
        metavar="PATH",
        type=Path,
        help="the manifest the shards ran (default: the one their results name)",
    )
    merge.set_defaults(handler=_cmd_merge)

    report = commands.add_parser(
        "report",
        help="summarise a results file: counts, spend, slowest and failed jobs; CSV; HTML",
        description=(
            "Read a results manifest and print a summary for people (counts, spend, the "
            "slowest jobs, every failed, expired or unknown job with its error), one CSV "
            "row per job for spreadsheets, or one self-contained HTML page with the run's "
            "timeline and spend drawn as charts (no script, nothing fetched: it opens from "
            "disk or a mail attachment)."
        ),
    )
    report.add_argument("results", metavar="RESULTS", type=Path, help="a results file")
    report.add_argument(
        "--format",
        choices=("text", "csv", "html"),
        default="text",
        help="a summary for people, CSV, or an HTML page (default: text)",
    )
    report.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        type=Path,
        help="write the report to PATH (replaced atomically) instead of standard output",
    )
    report.add_argument(
        "--slowest",
        metavar="N",
        type=count,
        default=5,
        help="how many of the slowest jobs to list (default: 5)",
    )
    report.set_defaults(handler=_cmd_report)


def _cmd_merge(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    merged = merge_module.merge(args.results, manifest=args.manifest)
    manifest = Path(str(merged.document["run"]["manifest"]))
    path = args.output or default_results_path(args.manifest or manifest, args.format)
    text: str | Iterable[str]
    if args.format == "json":
        text = json.dumps(merged.document, indent=2, ensure_ascii=False) + "\n"
    else:
        text = results_yaml_pieces(merged.document)  # written entry by entry
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise ResultsWriteError(path=path, reason=exc.strerror or str(exc)) from exc
    jobs = len(merged.document["jobs"])
    print(f"merged {len(args.results)} files: {jobs} jobs; results: {path}", file=out)
    for index in merged.missing_shards:
        print(f"{PROG}: shard {index} has no results file here", file=err)
    for name in merged.missing:
        print(f"{PROG}: job {name!r} is in no shard's results", file=err)
    return ExitCode.JOBS_FAILED if merged.missing or merged.missing_shards else ExitCode.OK


def _cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # Without the stems' links and scores, which no rendering shows: most of a large file.
    document = report_module.load_results(args.results, drop=report_module.REPORT_UNUSED)
    if args.format == "csv":
        text = report_module.render_csv(document)
    elif args.format == "html":
        text = report_module.render_html(document)
    else:
        text = report_module.render_text(document, slowest=args.slowest)
    if args.output is None:
        out.write(text)
        return ExitCode.OK
    try:
        write_atomic(args.output, text)  # owner-only, as the results it names the spend of
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ResultsWriteError(path=args.output, reason=reason, what="the report") from exc
    print(f"report: {args.output}", file=out)
    return ExitCode.OK
