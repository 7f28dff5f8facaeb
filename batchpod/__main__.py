"""``python -m batchpod``: the same entry point as the ``batchpod`` console script."""

from batchpod.cli import main

raise SystemExit(main())
