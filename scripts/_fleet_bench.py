"""The PostgreSQL server of ``bench.py fleet``: the tests' own (``tests/pg.py``).

One copy of the start-up serves both: ``initdb`` with SCRAM passwords, then ``postgres`` on
127.0.0.1 and a free port with ``fsync`` off (the benchmark measures coordination, not the
disk), as the pgserver user when run as root.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pg import PgServer, cpu_s

__all__ = ["PgServer", "cpu_s"]
