"""A second use case of a different kind (regression: daily demand of an SMB retailer) added to a clean
checkout with only its spec, its Feast definitions and its expectation suites, then run end to end
through the same DAGs, registry, gate, packaging, serving and monitoring as fraud."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from examples.retail_demand.generate import generate
from pipelines import crypto, registry, spec
from pipelines.settings import get_settings
from tests.checkouts import copy_checkout
from tests.homes import falaj_home

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT / "examples" / "retail_demand"
DECLARED = ("usecases", "feature_repo", "expectations")  # all a use case may add


def _clear() -> None:
    get_settings.cache_clear()
    spec._load_all.cache_clear()
    registry.engine.cache_clear()


@pytest.fixture(scope="module")
def demand_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A clean checkout (the tracked files) plus the demand use case's declared files, a home with its
    source data, and this process pointed at both."""
    checkout = copy_checkout(tmp_path_factory.mktemp("checkout"))
    for folder in DECLARED:
        for path in (EXAMPLE / folder).iterdir():
            assert not (checkout / folder / path.name).exists(), f"{folder}/{path.name} is already there"
            shutil.copy2(path, checkout / folder / path.name)
    home = tmp_path_factory.mktemp("demand-home")
    generate(home / "source")
    previous = {name: os.environ.get(name) for name in ("FALAJ_PROJECT_DIR", "PYTHONPATH")}
    os.environ["FALAJ_PROJECT_DIR"] = str(checkout)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout), previous["PYTHONPATH"]]))
    try:
        with falaj_home(home):
            _clear()
            yield checkout, home
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _clear()


def run_dag(checkout: Path, dag_id: str) -> None:
    falaj = str(Path(sys.executable).with_name("falaj"))
    completed = subprocess.run(
        [falaj, "airflow", "dags", "test", dag_id, "2026-11-01", "-c", '{"lookback_days": 90}'],
        cwd=checkout, env={**os.environ, "FALAJ_USER": "falaj-system"}, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]


def test_the_use_case_is_a_spec_feast_definitions_and_suites(demand_home: tuple[Path, Path]) -> None:
    checkout, _ = demand_home
    added = sorted(
        str(path.relative_to(EXAMPLE)) for folder in DECLARED for path in (EXAMPLE / folder).iterdir()
    )
    assert added == sorted(
        ["usecases/demand.yaml", "feature_repo/demand.py", "expectations/sales.landing.json",
         "expectations/stores.landing.json", "expectations/products.landing.json",
         "expectations/store_product_sales.features.json", "expectations/product_profile.features.json",
         "expectations/store_profile.features.json"]
    )  # fmt: skip
    assert all((checkout / name).exists() for name in added)


def test_demand_runs_through_the_same_dags_gate_serving_and_monitoring(
    demand_home: tuple[Path, Path],
) -> None:
    from pipelines.demo import approve_challenger, bento_server, consumer_api_key, free_port
    from pipelines.monitoring import monitor_window

    checkout, _ = demand_home
    # When its ingest, features and training DAGs run through Airflow
    for stage in ("ingest", "features", "training"):
        run_dag(checkout, f"demand_{stage}")
    # Then a regression model passed the gate on WAPE under its ceiling, with its ONNX prediction output
    demand = spec.load_spec("demand")
    with registry.session() as db:
        challenger = registry.resolve_alias(db, "demand", "challenger")
        assert challenger is not None and challenger.bento_tag
        decision = registry.latest_decision(db, challenger)
        assert decision is not None and decision.passed and decision.metric == "wape"
        assert decision.candidate_value < demand.gate.max_value  # type: ignore[operator]
        assert challenger.metrics["wape"] < challenger.metrics["baseline"]["wape"], challenger.metrics
    # When a second person approves it and it is served
    assert "approved by" in approve_challenger("demand")
    with registry.session() as db:
        champion = registry.resolve_alias(db, "demand", "champion")
        assert champion is not None
        tag, features, uri = champion.bento_tag, list(champion.features), champion.training_set_uri
    rows = pd.read_parquet(io.BytesIO(crypto.unseal(Path(uri) / "data.parquet")))
    rows = rows[rows["split"] == "test"].head(300)
    started = datetime.now(UTC)
    with bento_server(str(tag), free_port()) as url:
        with httpx.Client(base_url=url, headers={"X-API-Key": consumer_api_key()}, timeout=30) as client:
            vectors = [_vector(row, features) for row in rows.to_dict("records")]
            answers = [client.post("/v1/score/features", json=vector) for vector in vectors]
        ended = datetime.now(UTC)
    # Then every answer is a forecast in units, with no threshold or decision
    assert {answer.status_code for answer in answers} == {200}
    forecasts = pd.Series([answer.json()["score"] for answer in answers])
    assert all(answer.json()["decision"] is None and answer.json()["threshold"] is None for answer in answers)
    wape = (forecasts - rows["units_sold"].to_numpy()).abs().sum() / rows["units_sold"].sum()
    assert wape < demand.gate.max_value
    # And the server, stopped, had logged every answer (its writer flushes on shutdown)
    assert _logged(started, ended) == len(rows)
    # And the monitoring window judges what was served against the model's reference profile
    result = monitor_window(demand, started, ended)
    assert result.model_version == champion.version and result.rows == len(rows) and not result.insufficient


def _logged(start: datetime, end: datetime) -> int:
    from sqlalchemy import func, select

    from pipelines.predictions import Prediction

    with registry.session() as db:
        query = select(func.count()).where(
            Prediction.use_case == "demand", Prediction.at >= start, Prediction.at < end
        )
        return int(db.scalar(query) or 0)


def _vector(row: dict[str, Any], features: list[str]) -> dict[str, Any]:
    """A forecast request with the features the caller computed; the store is the experiment unit."""
    values = {name: None if pd.isna(row[name]) else float(row[name]) for name in features}
    return {"request": {"transaction_id": row["row_id"], "customer_id": row["store_id"], "features": values}}
