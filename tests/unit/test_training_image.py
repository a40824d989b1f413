"""The training image (docker/Dockerfile.train) holds what `python -m models.train` imports: its copied
code and the distributions of requirements/training.txt. There is no Docker engine here, so the image's
file set is rebuilt in a folder and the entrypoint is started from it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT / "docker" / "Dockerfile.train"
ALSO_INSTALLED = {"torch"}  # from PyTorch's CUDA index, before training.txt (see the Dockerfile)
PROJECT_DISTRIBUTION = "falaj"  # this checkout, installed editable here; the image copies its files

PROBE = """
import importlib.metadata, json, os, sys
import models.train
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # pipelines.crypto imports it when used
roots = {name.split(".")[0] for name in sys.modules}
by_module = importlib.metadata.packages_distributions()
outside = sorted(
    name for name, module in sys.modules.items()
    if name.split(".")[0] in ("models", "pipelines")
    and not os.path.abspath(getattr(module, "__file__", None) or os.getcwd()).startswith(os.getcwd())
)
distributions = sorted({d for r in roots for d in by_module.get(r, [])})
print(json.dumps({"outside": outside, "distributions": distributions}))
"""


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def installed_by(pins: set[str]) -> set[str]:
    """The distributions ``pip install`` of ``pins`` brings: the pins and, recursively, what they require."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(pins)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_name(requirement.name))
    return seen


def copied_paths() -> list[str]:
    """The COPY sources of the image, requirements included."""
    return [
        source
        for line in DOCKERFILE.read_text().splitlines()
        if (match := re.match(r"COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", line.strip()))
        for source in match.group(1).split()
    ]


def test_the_training_entrypoint_runs_from_the_images_files(tmp_path: Path) -> None:
    # Given only the files the image copies
    for source in copied_paths():
        origin = PROJECT / source
        target = tmp_path / source
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    # When the entrypoint starts there (its folder first on the path, as WORKDIR /app is)
    started = subprocess.run(
        [sys.executable, "-m", "models.train", "--help"], cwd=tmp_path, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    # Then every distribution its imports come from is pinned in training.txt (or is torch)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    found = json.loads(probe.stdout)
    assert found["outside"] == [], "the entrypoint imports project code the image does not copy"
    used = {_name(name) for name in found["distributions"]} - {PROJECT_DISTRIBUTION}
    pinned = {
        _name(line)
        for line in (PROJECT / "requirements" / "training.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    missing = used - installed_by(pinned | ALSO_INSTALLED)
    assert missing == set(), f"imported but not installed by requirements/training.txt: {sorted(missing)}"
