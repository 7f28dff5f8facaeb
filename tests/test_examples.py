"""The scheduler examples in examples/ run every shard of one manifest exactly once.

Nothing here runs kubectl, sbatch or parallel: each example is parsed (YAML, or the shell
text with shlex) and its batchpod command lines are expanded the way the scheduler would
expand them. ``_batchpod_args`` gives those command lines, for checks against the CLI.
"""

from __future__ import annotations

import ast
import fnmatch
import operator
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from batchpod.errors import redact

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KUBERNETES = "kubernetes-cronjob.yaml"
SLURM = "slurm-array.sh"
PARALLEL = "parallel-hosts.sh"
SHELL_EXAMPLES = [SLURM, PARALLEL]
ALL_EXAMPLES = [KUBERNETES, *SHELL_EXAMPLES]
KEY_VARIABLE = "AUDIOPOD_API_KEY"
_OPERATORS = {"&&", "||", ";", "|", "&", ":::"}


def _text(example: str) -> str:
    return (EXAMPLES / example).read_text(encoding="utf-8")


# -- Kubernetes ------------------------------------------------------------------------------


def _cronjob() -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all(_text(KUBERNETES)) if d is not None]
    (cronjob,) = [d for d in documents if d.get("kind") == "CronJob"]
    assert cronjob["apiVersion"] == "batch/v1"
    return cronjob


def _job_spec() -> dict[str, Any]:
    spec: dict[str, Any] = _cronjob()["spec"]["jobTemplate"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    (container,) = _job_spec()["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _kubernetes_args() -> list[list[str]]:
    completions = _job_spec()["completions"]
    container = _container()
    template = [*container.get("command", []), *container.get("args", [])]
    runs = [
        [arg.replace("$(JOB_COMPLETION_INDEX)", str(index)) for arg in template]
        for index in range(completions)
    ]
    # Commands the comments tell a person to run by hand (the merge).
    shown = re.findall(r"^#\s+(batchpod\s.*)$", _text(KUBERNETES), re.MULTILINE)
    return runs + [shlex.split(line) for line in shown]


# -- shell -----------------------------------------------------------------------------------

_ARITHMETIC: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}


def _arithmetic(expression: str, variables: dict[str, str]) -> int:
    """A shell ``$(( ))`` expression: integers and variables, + - and * only."""

    def value(node: ast.expr) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and node.id in variables:
            return int(variables[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            return _ARITHMETIC[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"not simple arithmetic: {expression!r}")

    return value(ast.parse(expression, mode="eval").body)


def _variables(text: str) -> dict[str, str]:
    """``NAME=value`` assignments at the start of a line, their values unquoted."""
    found = {}
    for name, value in re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", text, re.MULTILINE):
        found[name] = " ".join(shlex.split(value, comments=True))
    return found


def _expand(line: str, variables: dict[str, str]) -> str:
    """``$NAME``, ``${NAME}`` and ``$((...))`` expanded; anything else left as written."""

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    line = re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", variable, line)
    return re.sub(r"\$\(\(([^()]*)\)\)", lambda m: str(_arithmetic(m.group(1), variables)), line)


def _logical_lines(text: str) -> Iterator[str]:
    """The script's command lines: continuations joined, comments and blanks dropped."""
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            yield line


def _commands(line: str) -> list[list[str]]:
    """Every ``batchpod ...`` argv in one shell line, including inside quoted command
    strings (``--wrap=...``, a command given to parallel)."""
    found: list[list[str]] = []
    tokens = shlex.split(line, comments=True)
    for at, token in enumerate(tokens):
        if token == "batchpod":
            argv = [token]
            for word in tokens[at + 1 :]:
                if word in _OPERATORS:
                    break
                argv.append(word)
            found.append(argv)
        elif (inner := re.search(r"(?:^|[\s=])(batchpod\s.*)", token, re.DOTALL)) is not None:
            found += _commands(inner.group(1))
    return found


def _slurm_indices(text: str) -> list[int]:
    """The task ids of ``#SBATCH --array=`` (``0-3``, ``0,2,5``, ``0-7:2``, ``%limit``)."""
    (spec,) = re.findall(r"^#SBATCH\s+(?:--array=|-a\s*)(\S+)", text, re.MULTILINE)
    indices = []
    for part in spec.split("%")[0].split(","):
        bounds, _, step = part.partition(":")
        low, _, high = bounds.partition("-")
        indices += range(int(low), int(high or low) + 1, int(step or 1))
    return indices


def _parallel_indices(line: str) -> list[int]:
    """The arguments a (variable-expanded) parallel line feeds to ``{}``."""
    match = re.search(r":::\s+\$\(seq\s+(\d+)\s+(\d+)\)", line) or re.search(
        r"^\s*seq\s+(\d+)\s+(\d+)\s*\|", line
    )
    if match:
        return list(range(int(match.group(1)), int(match.group(2)) + 1))
    listed = re.search(r":::((?:\s+\d+)+)\s*(?:\|\||$)", line)
    assert listed, f"no ::: list or seq in {line!r}"
    return [int(word) for word in listed.group(1).split()]


def _shell_args(example: str) -> list[list[str]]:
    text = _text(example)
    variables = _variables(text)
    found: list[list[str]] = []
    for raw in _logical_lines(text):
        line = _expand(raw, variables)
        if "SLURM_ARRAY_TASK_ID}" in line and "batchpod" in line:
            for index in _slurm_indices(text):
                found += _commands(line.replace("${SLURM_ARRAY_TASK_ID}", str(index)))
        elif re.search(r"(^|\s)parallel\s", line):
            for index in _parallel_indices(line):
                found += _commands(line.split(":::")[0].replace("{}", str(index)))
        else:
            found += _commands(line)
    return found


def _batchpod_args(example: str) -> list[list[str]]:
    """Each ``batchpod`` command line ``example`` runs, in the file's order, expanded as its
    scheduler would: one ``run`` per shard (its index in place) and the ``merge`` (its glob
    left for the shell).
    argv[0] is ``"batchpod"``; ``argv[1:]`` is what ``batchpod.cli.main`` would be given."""
    return _kubernetes_args() if example == KUBERNETES else _shell_args(example)


# -- the checks ------------------------------------------------------------------------------


def _shards(example: str) -> tuple[int, list[int], str]:
    """(N, the shard indices run, the manifest) from ``example``'s run commands."""
    runs = [argv for argv in _batchpod_args(example) if argv[1] == "run"]
    assert runs, f"{example} runs no shard"
    pairs, manifests = [], set()
    for argv in runs:
        assert argv.count("--shard") == 1, argv
        shard = argv[argv.index("--shard") + 1]
        assert re.fullmatch(r"\d+/\d+", shard), f"unexpanded shard {shard!r} in {example}"
        index, count = shard.split("/")
        pairs.append((int(index), int(count)))
        manifests.add(argv[2])
    counts = {count for _, count in pairs}
    assert len(counts) == 1, f"{example} mixes shard counts {counts}"
    assert len(manifests) == 1, f"{example} shards different manifests {manifests}"
    return counts.pop(), [index for index, _ in pairs], manifests.pop()


@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_every_shard_runs_exactly_once(example: str) -> None:
    """The shard indices an example runs are 0..N-1, each once, with one N and one manifest."""
    count, indices, _ = _shards(example)
    assert count >= 2
    assert sorted(indices) == list(range(count)), f"{example}: {indices} for N={count}"


@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_the_merge_takes_every_shards_results(example: str) -> None:
    """Each example merges (or tells how to merge) a glob that matches the results file of
    every shard it runs (``jobs.shard-I-of-N.results.yaml`` beside the manifest), and no
    other shard count appears in the file."""
    count, indices, manifest = _shards(example)
    merges = [argv for argv in _batchpod_args(example) if argv[1] == "merge"]
    assert len(merges) == 1, f"{example}: {merges}"
    (pattern,) = merges[0][2:]
    stem = PurePosixPath(manifest)
    for index in indices:
        results = str(stem.with_name(f"{stem.stem}.shard-{index}-of-{count}.results.yaml"))
        assert fnmatch.fnmatchcase(results, pattern), f"{pattern} misses {results}"
    of_counts = {int(n) for n in re.findall(r"shard-\S*?-of-(\d+)", _text(example))}
    assert of_counts == {count}, f"{example}: shard files of {of_counts}, N={count}"


def test_kubernetes_indexed_job_matches_its_shard_count() -> None:
    """completions = parallelism = N; an Indexed Job in a CronJob that never overlaps runs;
    restartPolicy Never with retries bounded per shard; the data on a shared volume."""
    count, _, manifest = _shards(KUBERNETES)
    cronjob, spec = _cronjob(), _job_spec()
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == count
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert 0 < spec["backoffLimitPerIndex"] <= 5
    assert pod["terminationGracePeriodSeconds"] > 30  # batchpod's default --grace
    (mount,) = _container()["volumeMounts"]
    assert manifest.startswith(mount["mountPath"] + "/")
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    claims = [
        d for d in yaml.safe_load_all(_text(KUBERNETES)) if d["kind"] == "PersistentVolumeClaim"
    ]
    assert [c["metadata"]["name"] for c in claims] == [claim]
    assert claims[0]["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on several nodes
    # A retry cannot fix a bad manifest (2), a spent budget (3) or a refused key (4).
    rules = spec["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailIndex"]
    assert fail and set(fail[0]["onExitCodes"]["values"]) == {2, 3, 4}
    assert fail[0]["onExitCodes"]["containerName"] == _container()["name"]


def test_slurm_array_matches_its_shard_count() -> None:
    """The --array range and SHARDS give the same N."""
    count, _, _ = _shards(SLURM)
    text = _text(SLURM)
    assert _variables(text)["SHARDS"] == str(count)
    assert _slurm_indices(text) == list(range(count))


def test_parallel_hosts_match_its_shard_count() -> None:
    """One slot per shard across the hosts, and SHARDS is N."""
    count, _, _ = _shards(PARALLEL)
    variables = _variables(_text(PARALLEL))
    assert variables["SHARDS"] == str(count)
    slots = [int(host.split("/")[0]) for host in variables["HOSTS"].split(",")]
    assert sum(slots) == count


@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_no_api_key_value_in_the_examples(example: str) -> None:
    """The key is named (AUDIOPOD_API_KEY, a Secret) but its value never appears, and no
    command line carries it."""
    text = _text(example)
    assert KEY_VARIABLE in text
    assert redact(text) == text, "an ap_... key is written in the example"
    for argv in _batchpod_args(example):
        assert not any(arg.startswith("--api-key") for arg in argv[1:]), argv
        assert not any(KEY_VARIABLE in arg for arg in argv), argv
    if example == KUBERNETES:
        documents = list(yaml.safe_load_all(text))
        assert all(d["kind"] != "Secret" for d in documents)
        (entry,) = [e for e in _container()["env"] if e["name"] == KEY_VARIABLE]
        assert "value" not in entry and set(entry["valueFrom"]) == {"secretKeyRef"}
    else:
        code = "\n".join(_logical_lines(text))
        # An assignment to the key takes it from somewhere ($VAR, $(cat FILE)), never a literal.
        for value in re.findall(rf"{KEY_VARIABLE}=(\S+)", code):
            assert value.lstrip('\\"').startswith("$"), value
        assert "--env" not in code  # parallel --env would put the value on ssh's command line


@pytest.mark.parametrize("example", SHELL_EXAMPLES)
def test_shell_examples_are_valid_bash(example: str) -> None:
    """`bash -n` (parse only, nothing runs) accepts each script; each is executable."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    checked = subprocess.run(
        [bash, "-n", str(EXAMPLES / example)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert (EXAMPLES / example).stat().st_mode & 0o111


# -- the fleet on Kubernetes -----------------------------------------------------------------

FLEET = "kubernetes-fleet.yaml"


def _fleet_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_text(FLEET)) if d is not None]


def test_kubernetes_fleet_is_a_plain_job_of_identical_workers() -> None:
    """A plain Job with parallelism N and no completion index: every pod runs the same
    ``run --state URL`` (no --shard), the URL and the password from a Secret, the key too,
    and the command line parses with batchpod's own parser."""
    (cronjob,) = [d for d in _fleet_documents() if d["kind"] == "CronJob"]
    spec = cronjob["spec"]["jobTemplate"]["spec"]
    assert spec["parallelism"] >= 2
    assert "completions" not in spec and "completionMode" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] > 30
    (container,) = pod["containers"]
    argv = [*container["command"], *container["args"]]
    assert "--shard" not in argv and "$(JOB_COMPLETION_INDEX)" not in " ".join(argv)
    state = argv[argv.index("--state") + 1]
    assert state == "$(BATCHPOD_STATE_URL)"
    env = {e["name"]: e for e in container["env"]}
    for name in (KEY_VARIABLE, "BATCHPOD_STATE_URL", "PGPASSWORD"):
        assert "value" not in env[name] and set(env[name]["valueFrom"]) == {"secretKeyRef"}
    assert all(d["kind"] != "Secret" for d in _fleet_documents())
    # The command as the pod runs it, with the Secret's URL in place, parses as batchpod's.
    from batchpod.cli import build_parser

    expanded = [
        a.replace(state, "postgresql://batchpod@postgres.db.svc:5432/batchpod") for a in argv
    ]
    args = build_parser().parse_args(expanded[1:])
    assert args.command == "run" and args.state.startswith("postgresql://")
    shown = re.findall(r"^#\s+(batchpod\s.*)$", _text(FLEET), re.MULTILINE)
    assert [shlex.split(line)[1] for line in shown] == ["results"]
    rules = spec["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert fail and set(fail[0]["onExitCodes"]["values"]) == {2, 3, 4}
    assert redact(_text(FLEET)) == _text(FLEET)


# -- the fleet on Kubernetes, stems to S3 ----------------------------------------------------

S3_FLEET = "kubernetes-s3.yaml"


def test_kubernetes_s3_fleet_needs_no_shared_volume(tmp_path: Path) -> None:
    """The S3 variant mounts no PersistentVolumeClaim (a ConfigMap and an emptyDir only), its
    manifest sends stems to s3:// and validates, every secret comes from a Secret or the
    ServiceAccount's role, and the command lines parse with batchpod's own parser."""
    from batchpod.cli import build_parser, main

    documents = [d for d in yaml.safe_load_all(_text(S3_FLEET)) if d is not None]
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["ConfigMap", "CronJob", "ServiceAccount"]
    (config,) = [d for d in documents if d["kind"] == "ConfigMap"]
    (cronjob,) = [d for d in documents if d["kind"] == "CronJob"]
    manifest = tmp_path / "jobs.yaml"
    manifest.write_text(config["data"]["jobs.yaml"], encoding="utf-8")
    assert yaml.safe_load(manifest.read_text())["output_dir"].startswith("s3://")
    assert main(["validate", str(manifest)]) == 0
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert {next(iter(set(v) - {"name"})) for v in pod["volumes"]} == {"configMap", "emptyDir"}
    assert pod["serviceAccountName"] == "batchpod"
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    for name in (KEY_VARIABLE, "BATCHPOD_STATE_URL", "PGPASSWORD"):
        assert set(env[name]["valueFrom"]) == {"secretKeyRef"}
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert env["TMPDIR"]["value"] == "/work"
    argv = [*container["command"], *container["args"]]
    state = "postgresql://batchpod@postgres.db.svc:5432/batchpod"
    args = build_parser().parse_args([a.replace("$(BATCHPOD_STATE_URL)", state) for a in argv][1:])
    assert args.command == "run" and args.results == Path("/work/jobs.results.yaml")
    shown = re.findall(r"^#\s+(batchpod\s.*)$", _text(S3_FLEET), re.MULTILINE)
    assert [shlex.split(line)[1] for line in shown] == ["results"]
    for line in shown:
        words = [w.replace('"$BATCHPOD_STATE_URL"', state) for w in shlex.split(line)]
        assert build_parser().parse_args(
            [w.replace("$BATCHPOD_STATE_URL", state) for w in words[1:]]
        )
    assert redact(_text(S3_FLEET)) == _text(S3_FLEET)
