"""The ``batchpod`` command line: the composition root.

This package is the only code that reads ``argv``, the environment and the terminal, and the
only code that turns ``BatchpodError``\\ s into lines and exit codes (the codes themselves are
carried by the error classes). Each command parses its flags, calls the library and prints:
everything it runs lives in the library modules, so the CLI stays a thin layer over them.

Public API::

    main(argv=None, stdout=, stderr=) -> int    run one command; its exit code
    console_main()                               the ``batchpod`` console script
    build_parser()                               every command's parser (the docs test reads it)
    ExitCode                                     re-exported from batchpod.errors

Modules, one job each (a command's parser sits next to its handler):

    _main.py      main() and build_parser(): logging set up, errors reported, exit codes
    _options.py   the shared options (API, money), argparse types, the key and client they name
    validate.py   validate: every problem in a manifest
    run.py        run: the manifest run through batchpod.api; --dry-run prints the estimate
    status.py     status: what the state file knows about each job
    estimate.py   estimate: cost, budget and wallet verdict (also run --dry-run's printer)
    keys.py       balance, and key check|list|create|revoke
    results.py    merge (shards' results into one) and report (a results file summarised)
    recovery.py   recover (a lost state rebuilt from AudioPod) and resolve (an unknown job)
    sandbox.py    sandbox: serve the local AudioPod API
"""

from __future__ import annotations

from batchpod.errors import ExitCode

from ._main import build_parser, console_main, main

__all__ = ["ExitCode", "build_parser", "console_main", "main"]
