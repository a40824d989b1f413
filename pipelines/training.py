"""Run the one training entrypoint (``python -m models.train``) and register what it produced."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from pipelines import lake
from pipelines.settings import get_settings
from pipelines.spec import UseCaseSpec

log = logging.getLogger(__name__)


class TrainingFailedError(RuntimeError):
    """The training entrypoint exited non-zero; the message carries its last words."""


def train_command(
    training_set_uri: str, family: str, params: dict[str, object], output_uri: str
) -> list[str]:
    """The argv every backend runs: the DVC stage, the local subprocess and the Kubernetes pod."""
    return [
        "python",
        "-m",
        "models.train",
        "--training-set",
        training_set_uri,
        "--family",
        family,
        "--params",
        json.dumps(params, sort_keys=True),
        "--output",
        output_uri,
    ]


def output_dir(spec: UseCaseSpec, training_set_sha256: str, family: str) -> Path:
    return get_settings().artifacts_dir / "models" / spec.name / training_set_sha256[:16] / family


def train_local(spec: UseCaseSpec, training_set_uri: str, training_set_sha256: str, family: str) -> str:
    """Train one family in a subprocess of this interpreter; returns the artifact directory."""
    params = spec.model_params(family)
    target = output_dir(spec, training_set_sha256, family)
    if (target / "manifest.json").exists() and lake.read_json(target / "manifest.json")["parity"]["passed"]:
        log.info("%s already trained on this training set: %s", family, target)
        return str(target)
    argv = train_command(training_set_uri, family, params, str(target))
    argv[0] = sys.executable
    log.info("training %s: %s", family, " ".join(argv))
    completed = subprocess.run(
        argv, cwd=get_settings().project_dir, capture_output=True, text=True, check=False
    )
    for line in completed.stderr.splitlines()[-40:]:
        log.info("[%s] %s", family, line)
    if completed.returncode != 0:
        last = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise TrainingFailedError(f"training {family} exited {completed.returncode}: {last[0]}")
    return str(target)
