"""One command surface for CI: `.ci/run` runs `make test`, which runs every check of `make check` before the
tests, and a planted fake secret, vulnerable pin or `eval` each fails it, naming the file (on a scratch copy
of the checkout). The pre-commit hooks and the GitHub workflows only call make targets; the images are
pinned by digest and run as non-root; the secret scan and the SBOM check find what they must."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines import sbom, secret_scan, supply_chain
from tests.checkouts import copy_checkout

PROJECT = Path(__file__).resolve().parents[2]
MAKEFILE = PROJECT / "Makefile"
# An AWS-style access key id, built at run time so that the repository's own scan finds none in this file.
KEY = "AKIA" + "Z7Q4" * 4
# What each check runs, in the order `make check` runs them: the fast ones first.
CHECK_COMMANDS = [
    "ruff format --check",
    "ruff check",
    "hadolint",
    "pipelines.supply_chain",
    "pipelines.secret_scan",
    "mypy",
    "cyclonedx-py environment",
    "pipelines.sbom",
]


def _scratch_checkout(tmp_path: Path) -> Path:
    """The working tree (tracked files and new files git does not ignore) in a scratch folder."""
    root = copy_checkout(tmp_path / "checkout")
    new = subprocess.run(
        ["git", "ls-files", "-z", "--others", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        check=True,
    )
    for name in filter(None, new.stdout.decode().split("\0")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, root / name)
    return root


def _ci_run(root: Path) -> subprocess.CompletedProcess[str]:
    """`.ci/run` in ``root``, on this checkout's installed environment.

    The scratch .venv links to the real one's contents but has a stamp of its own, written after every
    planted change, so make finds the environment current and never reinstalls into the shared one.
    """
    venv = root / ".venv"
    venv.mkdir()
    for entry in (PROJECT / ".venv").iterdir():
        if entry.name != ".installed-stamp":
            (venv / entry.name).symlink_to(entry)
    (venv / ".installed-stamp").touch()
    outer_make = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {name: value for name, value in os.environ.items() if name not in outer_make}
    # Its own session, so that a run that got past the checks (into the tests) is stopped whole.
    ci = subprocess.Popen(
        ["bash", ".ci/run"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = ci.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(ci.pid, signal.SIGKILL)
        ci.communicate()
        raise
    return subprocess.CompletedProcess(ci.args, ci.returncode, stdout, stderr)


def test_a_planted_fake_secret_fails_ci_naming_the_file(tmp_path: Path) -> None:
    # Given a new module holding an AWS-style access key id (built here, so this file holds none)
    root = _scratch_checkout(tmp_path)
    planted = root / "pipelines" / "vendor_client.py"
    planted.write_text(f'"""The vendor\'s API client."""\n\nVENDOR_ACCESS_KEY = "{KEY}"\n')
    # When CI runs
    ran = _ci_run(root)
    # Then it fails at the secret scan, naming the file, the line and the kind
    assert ran.returncode != 0
    assert "pipelines/vendor_client.py:3: AWS Access Key: not in .secrets.baseline" in ran.stderr, ran.stdout
    assert "-m pytest" not in ran.stdout  # no test ran: the checks come first


def test_a_planted_vulnerable_pin_fails_ci_naming_the_file(tmp_path: Path) -> None:
    # Given the lock with BentoML pinned back to a release with known remote code execution
    root = _scratch_checkout(tmp_path)
    lock = root / "requirements" / "lock.txt"
    lines = lock.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, start=1) if line.startswith("bentoml=="))
    lines[number - 1] = "bentoml==1.4.2"
    lock.write_text("\n".join(lines) + "\n")
    # When CI runs
    ran = _ci_run(root)
    # Then it fails at the audit, naming the file, the line and the advisory
    assert ran.returncode != 0
    assert f"requirements/lock.txt:{number}: bentoml==1.4.2 is affected by CVE-2025-27520" in ran.stderr


def test_a_planted_eval_fails_ci_naming_the_file(tmp_path: Path) -> None:
    # Given a new module that evaluates its input
    root = _scratch_checkout(tmp_path)
    planted = root / "pipelines" / "formula.py"
    planted.write_text(
        '"""A user\'s formula, evaluated."""\n\n\ndef evaluate(formula: str) -> object:\n'
        "    return eval(formula)\n"
    )
    # When CI runs
    ran = _ci_run(root)
    # Then it fails at the security lint rules, naming the file and the rule
    assert ran.returncode != 0
    assert "S307" in ran.stdout and "pipelines/formula.py:5:12" in ran.stdout, ran.stdout


def test_ci_runs_make_test_which_runs_every_check_fast_first_then_the_tests() -> None:
    # Given what `make test` would run (-n prints the commands; the installed environment counts as current)
    dry = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed-stamp", "test"],
        cwd=PROJECT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = dry.stdout.splitlines()
    positions = [next(i for i, line in enumerate(lines) if command in line) for command in CHECK_COMMANDS]
    pytest_at = next(i for i, line in enumerate(lines) if "-m pytest tests" in line)
    # Then every check runs, in the order given, and the tests only after all of them
    assert positions == sorted(positions)
    assert pytest_at > positions[-1]
    # And .ci/run's last word is `make test`
    assert (PROJECT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE.read_text(), flags=re.MULTILINE))


def test_workflows_run_only_make_targets_with_actions_pinned_by_commit() -> None:
    workflows = sorted((PROJECT / ".github" / "workflows").glob("*.yml"))
    assert {path.name for path in workflows} >= {"ci.yml", "model-ci.yml", "release.yml"}
    called = set()
    for path in workflows:
        workflow = yaml.safe_load(path.read_text())
        for job in workflow["jobs"].values():
            for step in job["steps"]:
                if "run" in step:
                    # Every command is a make invocation: no check lives in the YAML
                    assert re.fullmatch(r"make( [a-z][a-z-]*)+", step["run"].strip()), (path.name, step)
                    called.update(step["run"].split()[1:])
                else:
                    assert re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", step["uses"]), (path.name, step)
    assert called >= {"test", "pip-audit", "sbom", "check", "model-ci", "release", "verify-release"}
    assert called <= _make_targets(), called - _make_targets()
    # And the model CI runs for the model, feature, expectation and use-case files; a release is started by
    # hand with the tag and the admin's second factor, on the runner that holds the release key
    triggers = {path.name: yaml.safe_load(path.read_text())[True] for path in workflows}
    assert set(triggers["model-ci.yml"]["pull_request"]["paths"]) >= {
        "models/**", "feature_repo/**", "expectations/**", "usecases/**",
    }  # fmt: skip
    assert set(triggers["release.yml"]["workflow_dispatch"]["inputs"]) == {"tag", "otp"}
    release = yaml.safe_load((PROJECT / ".github" / "workflows" / "release.yml").read_text())
    assert release["jobs"]["release"]["runs-on"] == ["self-hosted", "falaj-release"]


def test_pre_commit_hooks_are_valid_and_call_the_check_targets() -> None:
    config = PROJECT / ".pre-commit-config.yaml"
    pre_commit = Path(sys.executable).with_name("pre-commit")
    subprocess.run([str(pre_commit), "validate-config", str(config)], check=True, capture_output=True)
    hooks = [hook for repo in yaml.safe_load(config.read_text())["repos"] for hook in repo["hooks"]]
    checks = re.search(r"^CHECKS := (.+)$", MAKEFILE.read_text(), flags=re.MULTILINE)
    assert checks
    commit = {hook["entry"] for hook in hooks if hook.get("stages", ["pre-commit"]) == ["pre-commit"]}
    assert commit <= {f"make {target}" for target in checks.group(1).split()}
    assert {"make format-check", "make lint", "make secrets"} <= commit
    # The minutes-long model and contract checks run before a push, as in the model-ci workflow
    push = {hook["entry"] for hook in hooks if hook.get("stages") == ["pre-push"]}
    assert push == {"make contracts", "make model-ci"}


def _stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The build stages of a Dockerfile: (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", re.sub(r"^\s*#.*\n", "", dockerfile.read_text(), flags=re.MULTILINE))
    stages: list[list[tuple[str, str]]] = []
    for line in filter(str.strip, text.splitlines()):
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


@pytest.mark.parametrize(
    "dockerfile", sorted((PROJECT / "docker").glob("Dockerfile.*")), ids=lambda p: p.name
)
def test_images_pin_every_base_by_digest_and_run_as_a_non_root_uid(dockerfile: Path) -> None:
    stages = _stages(dockerfile)
    names: set[str] = set()
    for stage in stages:
        words = stage[0][1].split()
        # Every base is an earlier stage or an image pinned by its digest
        assert words[0] in names or re.search(r":[\w.-]+@sha256:[0-9a-f]{64}$", words[0]), words[0]
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])
    # And the final stage's last USER is a numeric uid other than root's
    users = [arguments for instruction, arguments in stages[-1] if instruction == "USER"]
    assert users, f"{dockerfile.name}: the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]


def _baseline(tmp_path: Path, results: dict[str, list[dict[str, object]]]) -> Path:
    """A baseline with the project's plugins, filters and exclude pattern, and ``results``."""
    recorded = json.loads((PROJECT / ".secrets.baseline").read_text())
    path = tmp_path / ".secrets.baseline"
    path.write_text(json.dumps({**recorded, "results": results}))
    return path


def _entry(secret: str, line: int, is_secret: bool | None) -> dict[str, object]:
    from detect_secrets.core.potential_secret import PotentialSecret

    entry: dict[str, object] = {
        "type": "AWS Access Key", "hashed_secret": PotentialSecret.hash_secret(secret), "line_number": line,
    }  # fmt: skip
    if is_secret is not None:
        entry["is_secret"] = is_secret
    return entry


def test_secret_scan_names_new_findings_and_unaudited_entries_and_skips_excluded_folders(
    tmp_path: Path,
) -> None:
    # Given a tree with one key in a module, one audited as a false positive, one in the baseline but not
    # audited, and one inside the virtual environment
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "client.py").write_text(f'KEY = "{KEY}"\n')
    (tmp_path / "app" / "fixture.py").write_text(f'\nSAMPLE = "{KEY}"\n')
    (tmp_path / "app" / "pending.py").write_text(f'SAMPLE = "{KEY}"\n')
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "vendored.py").write_text(f'KEY = "{KEY}"\n')
    baseline = _baseline(
        tmp_path, {"app/fixture.py": [_entry(KEY, 2, False)], "app/pending.py": [_entry(KEY, 1, None)]}
    )
    # When the tree is scanned against the baseline
    scanned, findings = secret_scan.scan(tmp_path, baseline)
    # Then the new key and the unaudited entry are named by file, line and kind; the venv is not entered
    assert [str(finding) for finding in findings] == [
        "app/client.py:1: AWS Access Key: not in .secrets.baseline",
        "app/pending.py:1: AWS Access Key: in the baseline, not audited",
    ]
    assert scanned == 3


def test_secret_scan_refuses_a_missing_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert secret_scan.main(["--root", str(tmp_path)]) == 2
    assert ".secrets.baseline" in capsys.readouterr().err


def test_the_repository_is_clean_against_its_own_secrets_baseline() -> None:
    recorded = secret_scan.load_baseline()
    entries = [entry for results in recorded["results"].values() for entry in results]
    # Every baseline entry has been audited as a false positive
    assert entries and all(entry.get("is_secret") is False for entry in entries)


def _cyclonedx(tmp_path: Path, components: list[tuple[str, str]]) -> Path:
    path = tmp_path / "sbom.cdx.json"
    listed = [{"type": "library", "name": name, "version": version} for name, version in components]
    path.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": listed}))
    return path


def test_sbom_check_names_every_pin_missing_or_at_another_version(tmp_path: Path) -> None:
    # Given a lock and an SBOM that lists one pin with a local version label, one at another version, one not
    lock = tmp_path / "lock.txt"
    lock.write_text("# locked\nTorch==2.13.0\nonnx==1.23.2\npyyaml==6.0.3 ; python_version >= '3'\n")
    document = _cyclonedx(tmp_path, [("torch", "2.13.0+cpu"), ("onnx", "1.21.0"), ("falaj", "0.1.0")])
    # When the SBOM is checked against the lock
    missing = sbom.missing_pins(sbom.components(document), lock)
    # Then the two gaps are named by file and line
    assert missing == [
        f"{lock}:3: onnx==1.23.2 is not in the SBOM (it lists 1.21.0)",
        f"{lock}:4: pyyaml==6.0.3 is not in the SBOM",
    ]
    assert sbom.main([str(document), str(lock)]) == 1


def test_sbom_check_refuses_a_document_that_is_not_cyclonedx(tmp_path: Path) -> None:
    (tmp_path / "spdx.json").write_text(json.dumps({"spdxVersion": "SPDX-2.3"}))
    assert sbom.main([str(tmp_path / "spdx.json"), str(PROJECT / "requirements" / "lock.txt")]) == 2


def test_pip_audit_ignores_exactly_the_deny_lists_accepted_advisories(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, accepted = supply_chain.load_deny_list()
    assert supply_chain.main(["--accepted"]) == 0
    assert capsys.readouterr().out.split() == list(accepted)
    dry = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed-stamp", "pip-audit"],
        cwd=PROJECT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    ignored = re.findall(r"--ignore-vuln (\S+)", dry.stdout)
    assert ignored == list(accepted)
