"""`models/` stands alone: it runs in a training image with no orchestrator, feature store or server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def test_training_imports_neither_airflow_feast_nor_bentoml() -> None:
    probe = (
        "import sys, models.train, models.families, models.torch_mlp, models.lightgbm_family\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'airflow', 'feast', 'bentoml'}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"
