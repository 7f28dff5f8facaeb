"""``batchpod validate``: check a manifest and report every problem in it."""

from __future__ import annotations

import argparse
from typing import TextIO

from batchpod.errors import ExitCode, ManifestError
from batchpod.manifest import check_manifest

from ._options import Commands, report_globs


def add_parsers(commands: Commands) -> None:
    """Add ``validate``."""
    validate = commands.add_parser(
        "validate",
        help="check a manifest and report every problem in it",
        description=(
            "Parse and check the whole manifest. Every problem is printed as "
            "FILE:LINE:COL: message; each 'files' glob's count of matches too, and a warning "
            "for one that matches nothing. Exit 0 when clean, 2 otherwise."
        ),
    )
    validate.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    validate.add_argument(
        "--strict", action="store_true", help="a 'files' glob that matches nothing is an error"
    )
    validate.set_defaults(handler=_cmd_validate)


def _cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest, problems = check_manifest(args.manifest)
    if problems:
        raise ManifestError(problems)
    assert manifest is not None
    report_globs(manifest, args.manifest, out, err, strict=args.strict)
    urls = sum(1 for job in manifest.jobs if job.source.kind == "url")
    files = len(manifest.jobs) - urls
    jobs = "job" if len(manifest.jobs) == 1 else "jobs"
    print(f"ok: {len(manifest.jobs)} {jobs}, {urls} URL, {files} files", file=out)
    return ExitCode.OK
