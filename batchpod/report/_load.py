"""Reading a results file back: the YAML or JSON that ``results.py`` writes, checked to be one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from batchpod.errors import ConfigError
from batchpod.models import JobStatus
from batchpod.results import RESULTS_VERSION

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_results(path: Path) -> dict[str, Any]:
    """The data of results file ``path``: YAML, or JSON when it is named ``.json`` or opens
    with ``{``. Checked to be a batchpod results document this version can read: a mapping
    with ``results_version`` 1, a ``run`` mapping and a ``jobs`` list whose entries have a
    ``name`` and a known ``status``.

    Raises ``ConfigError`` with a one-line message naming ``path`` when the file is missing or
    unreadable, not UTF-8, not YAML/JSON, or not a results document (a jobs manifest given by
    mistake is named as such).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the results file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise _not_results(path, "it is not UTF-8 text") from exc
    try:
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_LOADER)  # a safe loader: tags are refused
    except json.JSONDecodeError as exc:
        raise _not_results(path, f"not valid JSON (line {exc.lineno}, column {exc.colno})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise _not_results(path, f"not valid YAML{where}") from exc
    except RecursionError as exc:
        raise _not_results(path, "it is nested too deeply") from exc
    _check(path, data)
    document: dict[str, Any] = data
    return document


def _check(path: Path, data: object) -> None:
    if not isinstance(data, dict) or "results_version" not in data:
        if isinstance(data, dict) and "version" in data and "jobs" in data:
            hint = f"{path.stem}.results.yaml beside it"
            raise _not_results(path, f"it looks like a jobs manifest; its results are in {hint}")
        raise _not_results(path, "it has no results_version")
    if data["results_version"] != RESULTS_VERSION:
        raise ConfigError(
            f"{path}: results_version {data['results_version']!r} is not one this batchpod "
            f"reads ({RESULTS_VERSION}); use the batchpod that wrote it"
        )
    if not isinstance(data.get("run"), dict):
        raise _not_results(path, "'run' is missing or not a mapping")
    jobs = data.get("jobs")
    if not isinstance(jobs, list):
        raise _not_results(path, "'jobs' is missing or not a list")
    statuses = {status.value for status in JobStatus}
    for index, entry in enumerate(jobs):
        ok = isinstance(entry, dict) and isinstance(entry.get("name"), str)
        if not ok or entry.get("status") not in statuses:
            raise _not_results(path, f"jobs[{index}] has no name or no known status")
        if not isinstance(entry.get("meta", {}), dict):
            raise _not_results(path, f"jobs[{index}]'s meta is not a mapping")


def _not_results(path: Path, reason: str) -> ConfigError:
    return ConfigError(f"{path} is not a batchpod results file: {reason}")
