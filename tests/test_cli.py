"""The command line, end to end through main() and as an installed program."""

from __future__ import annotations

import importlib.metadata
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import batchpod
from batchpod.cli import ExitCode, main

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_validate_clean_manifest_prints_one_summary_line() -> None:
    """A clean manifest: exit 0 and 'ok: N jobs, U URL, F files' on stdout, nothing else."""
    code, out, err = run("validate", str(ROOT / "jobs.example.yaml"))
    assert (code, out, err) == (0, "ok: 6 jobs, 3 URL, 3 files\n", "")


def test_validate_singular_summary(tmp_path: Path) -> None:
    """The summary counts one job as 'job'."""
    path = tmp_path / "one.yaml"
    path.write_text("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two}\n")
    assert run("validate", str(path)) == (0, "ok: 1 job, 1 URL, 0 files\n", "")


def test_validate_problems_go_to_stderr_with_exit_2(tmp_path: Path) -> None:
    """Problems are printed one per line on stderr as FILE:LINE:COL: message; exit code 2."""
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: 4stem}\n")
    code, out, err = run("validate", str(path))
    assert code == ExitCode.USAGE == 2
    assert out == ""
    assert err == (
        f"{path}:3:36: unknown mode '4stem' ('4stem' is AudioPod's old name; use 'four')\n"
    )


def test_validate_missing_file_is_one_line(tmp_path: Path) -> None:
    """A manifest that does not exist: one line naming it, exit 2, no traceback."""
    code, out, err = run("validate", str(tmp_path / "nope.yaml"))
    assert (code, out) == (2, "")
    assert err == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory\n"


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the installed version and exits 0."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"batchpod {batchpod.__version__}\n"
    assert batchpod.__version__ == importlib.metadata.version("batchpod")


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 and names each command; each command has its own --help."""
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "validate" in text
    assert main(["validate", "--help"]) == 0
    assert "MANIFEST" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No command, an unknown command or a missing argument: a usage message and exit 2."""
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "usage: batchpod" in err
    assert "Traceback" not in err


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_python_dash_m_works() -> None:
    """`python -m batchpod validate` runs the same CLI in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "batchpod", "validate", "jobs.example.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_subprocess_env(),
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ok: 6 jobs, 3 URL, 3 files\n", "")


def test_console_script_is_installed(tmp_path: Path) -> None:
    """The `batchpod` console script is on the venv's PATH and returns the documented codes."""
    script = Path(sys.executable).parent / "batchpod"
    assert script.exists(), "install the project with pip install -e '.[test]'"
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 3\n")
    proc = subprocess.run(
        [str(script), "validate", str(bad)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{bad}:1:1: missing 'jobs' (add a 'jobs:' list; see jobs.example.yaml)",
        f"{bad}:1:10: unsupported manifest version 3 (this batchpod reads version 1)",
    ]
