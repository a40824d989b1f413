"""Model CI: the working tree's models against the base revision's, judged by the evaluation gate.

``python -m pipelines.model_ci [--base REF]`` trains every use case that has a CI sample (``SAMPLES``:
fraud's is the DVC ``data`` stage at ``--size``; the others are listed as not covered) twice on that
sample: once from the working tree (the candidate) and once from the base revision (the champion CI
compares with: there is no deployed registry here), each through the DVC pipeline's own stages in its
own tree and scratch home (``pipelines.dvc_stages training-set``, then the one training entrypoint
``python -m models.train`` per family). The best candidate, picked as the gate picks it, is judged by
the use case's gate policy (``pipelines.gate_policy``) against the best champion.

Unlike the training DAG, which scores the registered champion on the candidate's rows, CI scores each
model on the test rows its own revision built, matched by the spec's id column: a change to feature
code then shows as a regression instead of moving both models alike.

The base is ``origin/main``, or ``HEAD~1`` when there is none or it is HEAD itself. When the base
holds the same models/, pipelines/, feature_repo/, expectations/ and usecases/ as the working tree, the
champion is the candidate itself (trained once) and the gate compares equal models. The report (both
models' metrics, every check of the gate) is written to ``--out`` as ``report.json`` and ``report.md``;
the exit code is 1 when the gate refuses any use case or a candidate fails to train, with the gate's
reasons on stderr, and 2 when model CI cannot run as asked.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines import dvc_stages
from pipelines.datagen import SIZES
from pipelines.settings import get_settings
from pipelines.spec import UseCaseSpec, list_specs

TRAINING_INPUTS = ("models", "pipelines", "feature_repo", "expectations", "usecases")
# Each use case's CI sample: a source drop written into a folder for ``days`` days.
SAMPLES: dict[str, Callable[[str, int, Path], None]] = {"fraud": dvc_stages.data}
DAYS = 60  # the DVC pipeline's window (params.yaml)


class ModelCiError(RuntimeError):
    """Model CI cannot run as asked (no git, an unknown base, a use case without a sample)."""


class TrainingFailedError(RuntimeError):
    """A revision's pipeline or training exited non-zero; the message carries its last lines."""


def git(project: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", *args],  # noqa: S607 - git from PATH; read-only queries
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise ModelCiError(f"git {' '.join(args)} failed in {project}: {completed.stderr.strip()}")
    return completed.stdout.strip()


def resolve_base(project: Path, ref: str | None) -> tuple[str, str]:
    """The base's name and commit: ``ref``, else ``origin/main``, else ``HEAD~1`` (no origin/main, or
    it is HEAD itself, as on a push to main)."""
    if ref is None:
        has_main = _exists(project, "origin/main")
        ahead = has_main and len(set(git(project, "rev-parse", "origin/main", "HEAD").split())) == 2
        ref = "origin/main" if ahead else "HEAD~1"
    if not _exists(project, ref):
        raise ModelCiError(f"base revision {ref!r} does not exist in {project}; pass --base REF")
    return ref, git(project, "rev-parse", "--verify", f"{ref}^{{commit}}")


def _exists(project: Path, ref: str) -> bool:
    try:
        git(project, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except ModelCiError:
        return False
    return True


def same_training_inputs(project: Path, commit: str) -> bool:
    """Whether the working tree holds exactly the base's files in every folder training depends on."""
    changed = git(project, "diff", "--name-only", commit, "--", *TRAINING_INPUTS)
    untracked = git(project, "ls-files", "--others", "--exclude-standard", "--", *TRAINING_INPUTS)
    return not changed and not untracked


def export_revision(project: Path, commit: str, target: Path) -> Path:
    """The committed files of ``commit`` in ``target``, as a clean checkout holds them."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit],  # noqa: S607 - git from PATH
        cwd=project,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise ModelCiError(f"git archive {commit} failed in {project}: {archive.stderr.decode().strip()}")
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


@dataclass(frozen=True)
class Revision:
    """One tree to train from, in its own platform home."""

    label: str  # "candidate" or "champion"
    tree: Path
    home: Path


@dataclass(frozen=True)
class Trained:
    revision: Revision
    training_set: Path
    models: dict[str, Path]  # family -> model directory
    seconds: float


def hermetic_env(revision: Revision) -> dict[str, str]:
    """The revision's code, its own home, the local profile: nothing of the caller's platform."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FALAJ_")}
    python_path = os.pathsep.join(filter(None, [str(revision.tree), os.environ.get("PYTHONPATH")]))
    return {
        **env,
        "FALAJ_HOME": str(revision.home),
        "FALAJ_PROJECT_DIR": str(revision.tree),
        "FALAJ_PROFILE": "local",
        "PYTHONPATH": python_path,
    }


def _run(revision: Revision, argv: list[str], what: str) -> str:
    started = time.perf_counter()
    completed = subprocess.run(
        argv, cwd=revision.tree, env=hermetic_env(revision), capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-15:])
        raise TrainingFailedError(f"{revision.label}: {what} exited {completed.returncode}:\n{tail}")
    print(f"[{revision.label}] {what}: {time.perf_counter() - started:.0f} s", flush=True)
    return completed.stdout


def model_families(tree: Path, use_case: str) -> list[tuple[str, dict[str, Any]]]:
    """The families and parameters a revision's spec trains (read as YAML: an older spec may not
    validate under this revision's schema)."""
    spec = yaml.safe_load((tree / "usecases" / f"{use_case}.yaml").read_text())
    return [(model["family"], dict(model.get("params") or {})) for model in spec["models"]]


def train_revision(revision: Revision, use_case: str, source: Path, days: int) -> Trained:
    """The revision's training set from the sample, then each of its families, all in its own tree."""
    from pipelines.training import train_command

    started = time.perf_counter()
    training_set = revision.home / "ci" / "training_set"
    stage = [sys.executable, "-m", "pipelines.dvc_stages", "training-set", "--use-case", use_case]
    _run(
        revision,
        [*stage, "--source", str(source), "--days", str(days), "--out", str(training_set)],
        "training set",
    )
    models = {}
    for family, params in model_families(revision.tree, use_case):
        output = revision.home / "ci" / "models" / family
        argv = train_command(str(training_set), family, params, str(output))
        _run(revision, [sys.executable, *argv[1:]], f"train {family}")
        models[family] = output
    return Trained(revision, training_set, models, time.perf_counter() - started)


@dataclass(frozen=True)
class Model:
    """A trained model as the gate sees it."""

    family: str
    artifact_uri: str
    features: list[str]
    parity_max_abs_diff: float
    metrics: dict[str, float]


def load_models(trained: Trained) -> list[Model]:
    from pipelines import lake

    models = []
    for family, path in trained.models.items():
        manifest, metrics = lake.read_json(path / "manifest.json"), lake.read_json(path / "metrics.json")
        numbers = {name: value for name, value in metrics.items() if isinstance(value, int | float)}
        parity = float(manifest["parity"]["max_abs_diff"])
        models.append(Model(family, str(path), list(manifest["features"]), parity, numbers))
    return models


def best_model(spec: UseCaseSpec, models: list[Model]) -> Model:
    """The candidate the gate would judge: the best by the policy's metric, as ``evaluate_gate`` picks."""
    direction = 1.0 if spec.gate.higher_is_better else -1.0
    return max(models, key=lambda model: direction * model.metrics[spec.gate.metric])


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    summary: str
    checks: list[dict[str, Any]]
    candidate: Model
    champion: Model | None
    test_rows: int
    candidate_value: float
    champion_value: float | None


def judge(spec: UseCaseSpec, candidate: Trained, champion: Trained | None) -> Verdict:
    """The gate's rules for the best candidate vs the best champion, each scored on its own test rows."""
    import pandas as pd

    from pipelines.gate import onnx_model, onnx_scores, policy_checks, short_reason, split_rows
    from pipelines.gate_policy import metric_value, passed, summary

    best = best_model(spec, load_models(candidate))
    rows = split_rows(str(candidate.training_set), "test")
    ids = spec.training_set.id_column
    rival, p_champion = None, None
    if champion is not None:
        rival = best_model(spec, load_models(champion))
        theirs = split_rows(str(champion.training_set), "test")
        if ids not in theirs.columns:
            raise ModelCiError(f"the champion's test rows have no {ids!r} column to match the candidate's by")
        scores = pd.Series(
            onnx_scores(onnx_model(Path(rival.artifact_uri)), theirs, rival.features), index=theirs[ids]
        )
        rows = rows[rows[ids].isin(scores.index)]  # events both revisions hold (all, unless the split moved)
        if rows.empty:
            raise ModelCiError("the candidate's and the champion's test rows share no event")
        p_champion = scores.reindex(rows[ids]).to_numpy()
    model_bytes = onnx_model(Path(best.artifact_uri))
    p_candidate = onnx_scores(model_bytes, rows, best.features)
    labels = rows[spec.label].to_numpy()
    checks = policy_checks(spec, rows, p_candidate, p_champion, model_bytes, best)
    metric = spec.gate.metric
    return Verdict(
        passed=passed(checks),
        reason=short_reason(checks),
        summary=summary(checks),
        checks=[
            {"name": c.name, "passed": bool(c.passed), "judged": bool(c.judged), "detail": c.detail}
            for c in checks
        ],
        candidate=best,
        champion=rival,
        test_rows=len(rows),
        candidate_value=metric_value(metric, labels, p_candidate),
        champion_value=None if p_champion is None else metric_value(metric, labels, p_champion),
    )


@dataclass
class UseCaseResult:
    use_case: str
    passed: bool
    reason: str
    champion_from: str
    candidate_models: dict[str, dict[str, float]] = field(default_factory=dict)
    champion_models: dict[str, dict[str, float]] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _create_keys(home: Path) -> None:
    """The master and pseudonym keys of a home, made before anything runs in it (both revisions share
    them: this process reads both revisions' artifacts, and a customer gets one token in both)."""
    from pipelines import crypto, pseudonymize

    crypto.LocalKeyProvider(home / "secrets" / "kms").current()
    pseudonymize.load_or_create_key(home / "secrets" / "pseudonym.key")


@contextmanager
def _reading(home: Path) -> Iterator[None]:
    """This process's settings on ``home`` for a while (to unseal what was trained there)."""
    previous = os.environ.get("FALAJ_HOME")
    os.environ["FALAJ_HOME"] = str(home)
    get_settings.cache_clear()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("FALAJ_HOME")
        else:
            os.environ["FALAJ_HOME"] = previous
        get_settings.cache_clear()


def check_use_case(
    spec: UseCaseSpec, project: Path, base_tree: Path | None, work: Path, size: str
) -> UseCaseResult:
    """Train both revisions of one use case on one sample and judge the candidate.

    ``base_tree`` is None when the base holds the same training inputs: the candidate is its own champion.
    """
    name = spec.name
    source = work / name / "source"
    SAMPLES[name](size, DAYS, source)
    candidate, champion = Revision("candidate", project, work / name / "candidate"), None
    if base_tree is None:
        champion_from = "the candidate itself: the base holds the same training inputs"
    elif not (base_tree / "usecases" / f"{name}.yaml").is_file():
        champion_from = "none: the base has no such use case"
    else:
        champion = Revision("champion", base_tree, work / name / "champion")
        champion_from = "the base revision, trained here"
    _create_keys(candidate.home)
    if champion is not None:
        shutil.copytree(candidate.home / "secrets", champion.home / "secrets")
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two revisions train side by side
        runs = {
            revision.label: pool.submit(train_revision, revision, name, source, DAYS)
            for revision in (candidate, champion)
            if revision is not None
        }
        try:
            trained = runs["candidate"].result()
        except TrainingFailedError as failed:
            return UseCaseResult(name, False, f"the candidate did not train: {failed}", champion_from)
        rival = trained if base_tree is None else None
        if "champion" in runs:
            try:
                rival = runs["champion"].result()
            except TrainingFailedError as failed:
                champion_from = f"none: the base did not train ({failed})"
                print(f"[{name}] judged without a champion: {failed}", file=sys.stderr)
    with _reading(candidate.home):
        verdict = judge(spec, trained, rival)
    result = UseCaseResult(name, verdict.passed, verdict.reason, champion_from)
    result.candidate_models = {model.family: model.metrics for model in load_models(trained)}
    result.champion_models = {model.family: model.metrics for model in load_models(rival)} if rival else {}
    result.gate = {
        "metric": spec.gate.metric,
        "candidate": verdict.candidate.family,
        "candidate_value": verdict.candidate_value,
        "champion": verdict.champion.family if verdict.champion else None,
        "champion_value": verdict.champion_value,
        "test_rows": verdict.test_rows,
        "checks": verdict.checks,
        "summary": verdict.summary,
    }
    result.seconds = {
        revision: run.result().seconds for revision, run in runs.items() if run.exception() is None
    }
    return result


def _metrics_table(result: UseCaseResult, metric: str) -> list[str]:
    shown = [metric, *sorted({"roc_auc", "pr_auc", "brier", "rmse", "mae", "wape"} - {metric})]
    rows = [(f"candidate {family}", values) for family, values in result.candidate_models.items()]
    rows += [(f"champion {family}", values) for family, values in result.champion_models.items()]
    shown = [name for name in shown if any(name in values for _, values in rows)]
    lines = [f"| model | {' | '.join(shown)} |", f"|---|{'---|' * len(shown)}"]
    for label, values in rows:
        cells = [f"{values[name]:.4f}" if name in values else "" for name in shown]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


def _outcome(check: dict[str, Any]) -> str:
    return "SKIP" if not check["judged"] else ("PASS" if check["passed"] else "FAIL")


def render_markdown(report: dict[str, Any]) -> str:
    """The report for people: per use case, both models' metrics and every check, failures first."""
    base, sample = report["base"], report["sample"]
    lines = [
        f"# Model CI: {'passed' if report['passed'] else 'refused'}",
        "",
        f"Candidate: the working tree of `{report['head'][:12]}`. Base: `{base['ref']}` "
        f"(`{base['commit'][:12]}`). Sample: the DVC `data` stage, size `{sample['size']}` "
        f"({sample['transactions']:,} transactions over {sample['days']} days).",
    ]
    if report["not_covered"]:
        lines += ["", f"Not covered (no CI sample): {', '.join(report['not_covered'])}."]
    for result in report["use_cases"]:
        gate = result["gate"]
        lines += ["", f"## {result['use_case']}: {'passed' if result['passed'] else 'refused'}", ""]
        failed = [check["name"] for check in gate.get("checks", []) if _outcome(check) == "FAIL"]
        verdict = f"the gate refused: {', '.join(failed)} failed" if failed else result["reason"]
        lines += [f"Verdict: {verdict}.", "", f"Champion: {result['champion_from']}.", ""]
        if not gate:
            continue
        lines += _metrics_table(UseCaseResult(**result), gate["metric"])
        lines += ["", f"Judged on {gate['test_rows']:,} test rows: candidate {gate['candidate']}"]
        lines[-1] += f" vs champion {gate['champion']}." if gate["champion"] else " (no champion)."
        lines += ["", "| outcome | check | detail |", "|---|---|---|"]
        rank = {"FAIL": 0, "PASS": 1, "SKIP": 2}
        for check in sorted(gate["checks"], key=lambda check: rank[_outcome(check)]):
            detail = check["detail"].replace("|", "\\|")  # a pipe would end the table cell
            lines.append(f"| {_outcome(check)} | {check['name']} | {detail} |")
    return "\n".join(lines) + "\n"


def run(
    project: Path, base_ref: str | None, use_cases: list[str] | None, size: str, out: Path, work: Path
) -> dict[str, Any]:
    """Model CI of the chosen use cases (all by default); writes and returns the report."""
    specs = {spec.name: spec for spec in list_specs()}
    chosen = use_cases or sorted(name for name in specs if name in SAMPLES)
    uncovered = [] if use_cases else sorted(name for name in specs if name not in SAMPLES)
    for name in chosen:
        if name not in specs:
            raise ModelCiError(f"no use case {name!r} in {project / 'usecases'} (found: {sorted(specs)})")
        if name not in SAMPLES:
            raise ModelCiError(f"use case {name!r} has no CI sample (model CI samples: {sorted(SAMPLES)})")
    ref, commit = resolve_base(project, base_ref)
    reuse = same_training_inputs(project, commit)
    base_tree = None if reuse else export_revision(project, commit, work / "base")
    print(f"model CI: working tree vs {ref} ({commit[:12]})" + (", same training inputs" if reuse else ""))
    if uncovered:
        print(f"not covered (no CI sample in pipelines/model_ci.py SAMPLES): {', '.join(uncovered)}")
    results = [asdict(check_use_case(specs[name], project, base_tree, work, size)) for name in chosen]
    report = {
        "passed": all(result["passed"] for result in results),
        "head": git(project, "rev-parse", "HEAD"),
        "base": {"ref": ref, "commit": commit, "same_training_inputs": reuse},
        "sample": {"size": size, "transactions": SIZES[size], "days": DAYS},
        "use_cases": results,
        "not_covered": uncovered,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", help="the revision whose models are the champion (default: origin/main, else HEAD~1)"
    )
    parser.add_argument(
        "--use-case", action="append", dest="use_cases", help="repeatable; default: every use case"
    )
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="small", help="the sample's size (default: small)"
    )
    parser.add_argument(
        "--out", type=Path, help="where the report goes (default: dist/model-ci in the project)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the trees, homes and models here (default: a temp dir)"
    )
    arguments = parser.parse_args(argv)
    project = get_settings().project_dir
    out = arguments.out or project / "dist" / "model-ci"
    if arguments.workdir and arguments.workdir.exists() and any(arguments.workdir.iterdir()):
        parser.error(f"--workdir {arguments.workdir} is not empty")
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="falaj-model-ci-") as scratch:
            work = arguments.workdir or Path(scratch)
            report = run(project, arguments.base, arguments.use_cases, arguments.size, out, work.resolve())
    except ModelCiError as error:
        parser.exit(2, f"model CI: {error}\n")
    for result in report["use_cases"]:
        if result["passed"]:
            print(f"\n{result['use_case']}: passed: {result['reason']}")
        else:
            why = result["gate"].get("summary") or result["reason"]
            print(f"\n{result['use_case']}: REFUSED\n{why}", file=sys.stderr, flush=True)
    print(f"\nreport: {out / 'report.md'} ({time.perf_counter() - started:.0f} s)")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
