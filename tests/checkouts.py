"""A clean checkout for tests that add files to one: the tracked files, copied."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def copy_checkout(target: Path) -> Path:
    """Copy every file git tracks into ``target``, as a fresh clone would hold them."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=True)
    for name in filter(None, tracked.stdout.decode().split("\0")):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, target / name)
    return target
