"""``batchpod init``: write a manifest from folders, globs, CSV exports and URL lists."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from batchpod import catalogue
from batchpod.errors import ConfigError, ExitCode, ManifestError
from batchpod.manifest import check_manifest
from batchpod.models import Mode, Stem

from ._options import PROG, Commands


def add_parsers(commands: Commands) -> None:
    """Add ``init``."""
    parser = commands.add_parser(
        "init",
        help="write a manifest from folders, globs, CSV exports and URL lists",
        description=(
            "Make a jobs manifest from each SOURCE: a folder (every audio file under it, by "
            "content, recursively, in a stable order; hidden files, non-audio files and "
            "links out of the folder or in a loop are skipped and counted), a glob "
            "('incoming/**/*.flac'), a CSV file (.csv or .tsv, with a header naming 'url' or "
            "'file', and optionally 'mode', 'stem', 'name', 'duration'; other columns become "
            "the job's metadata), or a text file of URLs, one per line ('#' comments). Local "
            "files' durations are read from their headers. Writes to -o (or prints); with "
            "--append, adds to it only the sources it does not list yet, leaving every byte "
            "of it as it was. A source that cannot be read is one line each, exit 2, and "
            "nothing is written."
        ),
    )
    parser.add_argument(
        "sources", metavar="SOURCE", nargs="+", help="a folder, glob, CSV or URL list"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="MANIFEST",
        type=Path,
        help="the manifest to write (default: print it)",
    )
    parser.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        help="the mode of jobs whose source names none (default: four)",
    )
    parser.add_argument(
        "--stem",
        choices=[s.value for s in Stem],
        help="the stem of 'single' jobs whose source names none",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="add to MANIFEST (-o) the sources it does not list yet; the rest of it unchanged",
    )
    parser.set_defaults(handler=_cmd_init)


def _cmd_init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    mode = Mode(args.mode) if args.mode else None
    if (mode is Mode.SINGLE) and args.stem is None:
        raise ConfigError("--mode single needs --stem")
    target: Path | None = args.output
    if args.append and target is None:
        raise ConfigError("--append adds to the manifest named by -o")
    if target is not None and target.exists() and not args.append:
        raise ConfigError(f"{target} exists: --append adds to it (or remove it first)")
    home = (target.parent if target is not None else Path.cwd()).resolve()
    stem = Stem(args.stem) if args.stem else None
    scan = catalogue.read_sources(args.sources, mode=mode, stem=stem, cwd=Path.cwd())
    if args.append and target is not None and target.exists():
        return _append(target, scan, args.sources, home, err)
    text = catalogue.render(scan, sources=args.sources, home=home)
    if target is None:
        out.write(text)
    else:
        catalogue.write_text(target, text)
        print(
            f"{PROG}: wrote {target}: {len(scan.entries)} jobs; skipped {scan.summary()}",
            file=err,
        )
    return ExitCode.OK


def _append(target: Path, scan: catalogue.Scan, sources: list[str], home: Path, err: TextIO) -> int:
    manifest, problems = check_manifest(str(target))
    if problems:
        raise ManifestError(problems)
    assert manifest is not None
    with target.open(encoding="utf-8", newline="") as stream:
        existing = stream.read()  # as it is, line endings included
    indent = catalogue.jobs_indent(existing)
    if indent is None:
        raise ConfigError(
            f"{target}: cannot append: its 'jobs' list must be the last thing in it, one "
            "'- ' item per job (a block list)"
        )
    added, count = catalogue.append_text(
        existing,
        [job.source for job in manifest.jobs],
        scan,
        sources=sources,
        home=home,
        indent=indent,
    )
    if count:  # the old bytes, then the new jobs: the file is replaced whole, atomically
        catalogue.write_text(target, existing + added)
    print(f"{PROG}: {target}: {count} new jobs added; skipped {scan.summary()}", file=err)
    return ExitCode.OK
