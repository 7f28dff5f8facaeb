"""The README tells the truth: every command, flag and exit code, and its shown output."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from batchpod.cli import ExitCode, build_parser
from batchpod.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _walk(parser: argparse.ArgumentParser, prefix: str = "batchpod") -> dict[str, list[str]]:
    """Every command's option strings, keyed by the command line that reaches it."""
    found = {prefix: []}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_walk(sub, f"{prefix} {name}"))
        else:
            found[prefix].extend(s for s in action.option_strings if s.startswith("--"))
    return found


def test_every_command_is_documented() -> None:
    """Each subcommand appears in the README's command table."""
    commands = [name for name in _walk(build_parser()) if name != "batchpod"]
    assert commands, "the parser should have subcommands"
    for command in commands:
        assert f"`{command}" in README, f"{command} is not in README.md"


def test_every_flag_is_documented() -> None:
    """Each long option of every command appears in the README, spelled as on the CLI."""
    missing = [
        f"{command} {flag}"
        for command, flags in _walk(build_parser()).items()
        for flag in flags
        if flag != "--help" and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", README)
    ]
    assert not missing, f"undocumented flags: {missing}"


def test_every_run_setting_is_documented() -> None:
    """Each field of RunConfig (run_manifest's options) is named in the Python API section."""
    section = README.split("### The Python API", 1)[1].split("\n## ", 1)[0]
    missing = [f.name for f in dataclasses.fields(RunConfig) if f"`{f.name}`" not in section]
    assert not missing, f"RunConfig fields the README does not name: {missing}"


def test_every_exit_code_is_documented() -> None:
    """Each ExitCode value has a row in the README's exit code table."""
    table = README.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code in ExitCode:
        assert re.search(rf"^\| {code.value} \|", table, re.MULTILINE), f"exit {code.value}"


def _console_blocks() -> list[tuple[str, str]]:
    """(command, expected output) for each `batchpod validate` shown in a console block."""
    found = []
    for block in re.findall(r"```console\n(.*?)```", README, re.DOTALL):
        command, output = None, []
        for line in [*block.splitlines(), "$ "]:
            if line.startswith("$ "):
                if command is not None and "batchpod validate" in command:
                    found.append((command, "\n".join(output)))
                command, output = line.removeprefix("$ "), []
            else:
                output.append(line)
    return found


def test_readme_validate_output_is_real() -> None:
    """The README's `batchpod validate` examples print exactly what the README shows."""
    blocks = _console_blocks()
    assert len(blocks) >= 2
    for command, expected in blocks:
        cwd = ROOT
        if command.startswith("cd "):
            folder, command = command.removeprefix("cd ").split(" && ", 1)
            cwd = ROOT / folder
        argv = command.split()
        assert argv[0] == "batchpod"
        proc = subprocess.run(
            [sys.executable, "-m", "batchpod", *argv[1:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (proc.stdout + proc.stderr).rstrip("\n") == expected, command


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run installs as the README says and runs exactly the README's test command."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = re.search(r"\$ (python3 -m venv .*)", README)
    test = re.search(r"```console\n\$ (python -m pytest[^\n]*)\n```", README)
    assert install and test
    assert "pip install -e '.[test]'" in install.group(1)
    assert "pip install -e '.[test]'" in ci
    assert re.search(rf"^{re.escape(test.group(1))}$", ci, re.MULTILINE)
