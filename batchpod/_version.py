"""``__version__``: the installed distribution's version (nothing imports the package root)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batchpod")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
