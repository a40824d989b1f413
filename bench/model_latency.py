"""Model scoring latency: ONNX Runtime against each family's native runtime, on the same rows, in one run.

Both families are trained once through the platform's entrypoint (``python -m models.train``) with the
fraud use case's parameters, on a synthetic training set as wide as the fraud_v2 feature service
(18 features, 2% positives, features missing as often as on the reference data). On the held-out
test rows it then measures p50 and p99 of calibrated P(y=1)

- one row per call: ONNX Runtime (CPU provider, ``intra_op_num_threads=1``) on ``model.onnx`` vs
  native LightGBM (``model.txt``, ``Booster.predict(raw_score=True, num_threads=1)``) and vs PyTorch
  eager (the family's ``predict_proba``: eval mode, ``torch.no_grad()``, ``torch.set_num_threads(1)``),
  each native score followed by the Platt step the ONNX graph holds;
- 1,000 rows per call: the same, on ``--batch-threads`` threads everywhere (default 1, so the
  figures compare engines rather than thread pools on a shared machine).

The native runtime is the floor; the ratio is ONNX / native. Serving's goal is single-row p99 ratio
<= 1.0; batch figures carry no target. Before anything is timed, ONNX and native probabilities must
agree within 1e-5 on every test row, scored one row and 1,000 rows at a time, or the run fails.
Each pair is timed in alternating rounds, so drift in the machine's load hits both alike.

Run: `make bench` (or `.venv/bin/python -m bench.model_latency --rows 30000 --repeats 2000`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from itertools import cycle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.common import Figure, latencies_ms, percentile, write_report
from pipelines import crypto

if TYPE_CHECKING:
    from models.dataset import TrainingSet

REPO_ROOT = Path(__file__).resolve().parents[1]
USE_CASE = "fraud"
FAMILIES = ("lightgbm", "pytorch_mlp")
#: The fraud_v2 feature service's inputs, in training-set order.
FEATURES = [
    "txn_count_1h",
    "txn_count_24h",
    "spend_24h_aed",
    "avg_amount_30d_aed",
    "card_txn_count_1h",
    "card_txn_count_24h",
    "card_spend_1h_aed",
    "credit_limit_aed",
    "birth_year",
    "mcc",
    "merchant_is_online",
    "merchant_txn_count_24h",
    "merchant_avg_amount_30d_aed",
    "merchant_ecommerce_share_30d",
    "txn_amount_aed",
    "amount_vs_avg_30d",
    "minutes_since_last_txn",
    "is_ecommerce",
]
BATCH = 1000
TOLERANCE = 1e-5
ROUNDS = 3
FLOOR_NAMES = {
    "lightgbm": "LightGBM Booster.predict + Platt",
    "pytorch_mlp": "PyTorch eager, no_grad, + Platt",
}


class ParityError(RuntimeError):
    """ONNX and native probabilities disagree: the bench would time a wrong model."""


@dataclass(frozen=True)
class Scorers:
    """One family's two runtimes, each taking raw float32 rows [N, F] and returning P(y=1) [N]."""

    onnx: Callable[[np.ndarray], np.ndarray]
    native: Callable[[np.ndarray], np.ndarray]
    set_threads: Callable[[int], None]
    label: str
    facts: dict[str, Any]


def main(rows: int, repeats: int, batch_threads: int, seed: int) -> Path:
    from pipelines.spec import load_spec

    spec = load_spec(USE_CASE)
    params = {family: spec.model_params(family) for family in FAMILIES}
    work = Path(tempfile.mkdtemp(prefix="falaj-bench-models-"))
    try:
        return measure(params, work, rows, repeats, batch_threads, seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(
    params: dict[str, dict[str, Any]], work: Path, rows: int, repeats: int, batch_threads: int, seed: int
) -> Path:
    from models.dataset import load_training_set

    training_set = write_training_set(work / "training_set", rows, seed)
    data = load_training_set(training_set)
    test = np.ascontiguousarray(data.test.X, dtype=np.float32)
    if len(test) < BATCH:
        raise ValueError(f"--rows {rows} leaves {len(test)} test rows; a batch needs {BATCH}")
    batch_repeats = max(100, repeats // 5)
    figures: list[Figure] = []
    context: dict[str, Any] = {
        "use_case": USE_CASE,
        "training_rows": rows,
        "features": len(FEATURES),
        "test_rows": len(test),
        "single_row_repeats": repeats,
        "batch_rows": BATCH,
        "batch_repeats": batch_repeats,
        "single_row_threads": 1,
        "batch_threads": batch_threads,
        "rounds": ROUNDS,
        "parity_tolerance": TOLERANCE,
        "onnxruntime": "CPUExecutionProvider, default graph optimisation (ORT_ENABLE_ALL), sequential",
        "library_versions": {name: metadata.version(name) for name in ("onnxruntime", "lightgbm", "torch")},
        "models": {},
    }
    for family in FAMILIES:
        model_dir = train(training_set, family, params[family], work / family, seed)
        scorers = load_scorers(family, model_dir, data, params[family], seed, batch_threads)
        parity = check_parity(family, scorers, test, batch_threads)
        singles = [test[i : i + 1] for i in range(len(test))]
        batches = [test[i : i + BATCH] for i in range(0, len(test) - BATCH + 1, BATCH)]

        scorers.set_threads(1)
        onnx_single, native_single = _alternating(scorers, singles, repeats)
        scorers.set_threads(batch_threads)
        onnx_batch, native_batch = _alternating(scorers, batches, batch_repeats)
        context["models"][family] = {"params": params[family], **scorers.facts, "parity_max_abs_diff": parity}

        floor_name = FLOOR_NAMES[family]
        single_us = ([s * 1000 for s in onnx_single], [s * 1000 for s in native_single])
        for q in (50, 99):
            value, floor = percentile(single_us[0], q), percentile(single_us[1], q)
            target = q == 99
            figures.append(
                Figure(
                    f"{scorers.label}: 1 row, p{q}",
                    "µs",
                    value,
                    floor,
                    f"{floor_name}, 1 thread",
                    "ratio <= 1.0" if target else "-",
                    value <= floor if target else True,
                    {"onnx_min": min(single_us[0]), "native_min": min(single_us[1])},
                )
            )
        for q in (50, 99):
            figures.append(
                Figure(
                    f"{scorers.label}: {BATCH:,} rows, p{q}",
                    "ms",
                    percentile(onnx_batch, q),
                    percentile(native_batch, q),
                    f"{floor_name}, {batch_threads} thread{'s' if batch_threads > 1 else ''}",
                    "-",
                    True,
                    {"onnx_min": min(onnx_batch), "native_min": min(native_batch)},
                )
            )
    return write_report("model_latency", figures, context)


def write_training_set(directory: Path, rows: int, seed: int) -> Path:
    """A fraud-shaped training set in the layout ``models/dataset.py`` loads: data.parquet + manifest.json.

    Counts, amounts and shares are drawn with plausible shapes. The 2% positives are the rows with
    the highest fraud score, an oblique mix of spend far above the customer's own average and the
    credit limit, bursts on the card, recency and e-commerce at merchants that rarely sell online,
    plus a little noise: trees approximate such a boundary in many small steps, so early stopping
    keeps a few hundred trees, as on the reference data (293 trees for the same parameters), rather
    than a handful. Like there, behaviour features are missing for 2% of rows and card velocity for
    35%.
    """
    import pandas as pd

    from models.dataset import save_training_set

    rng = np.random.default_rng(seed)
    n = rows
    avg_30d = rng.lognormal(5.0, 0.8, n)
    amount = avg_30d * rng.lognormal(0.0, 0.7, n)
    count_1h = rng.poisson(0.5, n)
    card_1h = np.minimum(count_1h, rng.poisson(0.4, n))
    limit = rng.choice([5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0], n)
    merchant_online = (rng.random(n) < 0.3).astype(np.int64)
    share = rng.beta(np.where(merchant_online == 1, 8.0, 1.0), 3.0)
    ecommerce = (rng.random(n) < np.where(merchant_online == 1, 0.8, 0.1)).astype(np.int64)
    minutes = rng.exponential(600.0, n)
    columns = {
        "txn_count_1h": count_1h,
        "txn_count_24h": count_1h + rng.poisson(3.0, n),
        "spend_24h_aed": avg_30d * rng.gamma(2.0, 1.5, n),
        "avg_amount_30d_aed": avg_30d,
        "card_txn_count_1h": card_1h,
        "card_txn_count_24h": card_1h + rng.poisson(2.0, n),
        "card_spend_1h_aed": card_1h * amount * rng.lognormal(0.0, 0.5, n),
        "credit_limit_aed": limit,
        "birth_year": rng.integers(1950, 2006, n),
        "mcc": rng.choice([4111, 4814, 5311, 5411, 5541, 5732, 5812, 5912, 5999, 6011, 7011, 7995], n),
        "merchant_is_online": merchant_online,
        "merchant_txn_count_24h": rng.poisson(60.0, n),
        "merchant_avg_amount_30d_aed": rng.lognormal(5.0, 0.6, n),
        "merchant_ecommerce_share_30d": share,
        "txn_amount_aed": amount,
        "amount_vs_avg_30d": amount / avg_30d,
        "minutes_since_last_txn": minutes,
        "is_ecommerce": ecommerce,
    }
    frame = pd.DataFrame({name: np.asarray(columns[name], dtype=np.float64) for name in FEATURES})
    score = (
        np.log(amount / avg_30d)
        + 0.5 * np.log(amount / limit * 100)
        + 0.6 * card_1h
        - 0.4 * np.log1p(minutes / 60)
        + 0.8 * ecommerce * (1 - share)
        + rng.normal(0.0, 0.1, n)
    )
    label = (score > np.quantile(score, 0.98)).astype(np.int64)
    behaviour = ["txn_count_1h", "txn_count_24h", "spend_24h_aed", "avg_amount_30d_aed", "amount_vs_avg_30d"]
    frame.loc[rng.random(n) < 0.02, [*behaviour, "minutes_since_last_txn"]] = np.nan
    frame.loc[rng.random(n) < 0.35, ["card_txn_count_1h", "card_txn_count_24h", "card_spend_1h_aed"]] = np.nan
    frame["is_fraud"] = label
    order = rng.permutation(n)
    frame["split"] = np.select([order < 0.65 * n, order < 0.8 * n], ["train", "valid"], "test")
    frame["transaction_id"] = [f"t{i}" for i in range(n)]
    return save_training_set(directory, frame, FEATURES, "is_fraud", USE_CASE)


def train(training_set: Path, family: str, params: dict[str, Any], output: Path, seed: int) -> Path:
    """Trains one family through the platform's entrypoint; raises with its stderr if it fails."""
    command = [
        sys.executable,
        "-m",
        "models.train",
        "--training-set",
        str(training_set),
        "--family",
        family,
        "--params",
        json.dumps(params),
        "--output",
        str(output),
        "--seed",
        str(seed),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"models.train --family {family} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return output


def load_scorers(
    family: str, model_dir: Path, data: TrainingSet, params: dict[str, Any], seed: int, batch_threads: int
) -> Scorers:
    """ONNX Runtime on the ``model.onnx`` training wrote, and the family's native runtime.

    Both return calibrated P(y=1): the ONNX graph holds the Platt step, and the native side applies
    the calibrator the manifest records, as ``predict_proba`` does. LightGBM is the ``model.txt``
    training wrote, scored by ``Booster.predict(raw_score=True)``. The MLP is refitted in-process by
    the family's ``fit`` (same rows, params and seed; deterministic on CPU) and scored by the family's
    ``predict_proba``, eager under ``torch.no_grad()``: rebuilding it from ``model.pt`` would copy the
    family's private layout. Parity then proves both sides are the same model.
    """
    import onnxruntime as ort

    from models.calibration import PlattCalibrator
    from models.interface import ONNX_INPUT, ONNX_PROBABILITIES

    manifest = json.loads((model_dir / "manifest.json").read_text())
    if manifest["onnx_model"] is None:
        raise ParityError(f"{family}: training kept no ONNX model (parity {manifest['parity']})")
    onnx_model = crypto.unseal(model_dir / manifest["onnx_model"])
    sessions = {}
    for threads in {1, batch_threads}:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        sessions[threads] = ort.InferenceSession(
            onnx_model, sess_options=options, providers=["CPUExecutionProvider"]
        )
    threads = {"now": 1}

    def onnx(X: np.ndarray) -> np.ndarray:
        (probabilities,) = sessions[threads["now"]].run([ONNX_PROBABILITIES], {ONNX_INPUT: X})
        return probabilities[:, 1]

    def set_threads(count: int) -> None:
        threads["now"] = count
        if family == "pytorch_mlp":
            import torch

            torch.set_num_threads(count)

    if family == "lightgbm":
        import lightgbm as lgb

        booster = lgb.Booster(model_str=crypto.unseal(model_dir / manifest["native_model"]).decode())
        calibration = manifest["calibration"]
        calibrator = PlattCalibrator(slope=calibration["slope"], intercept=calibration["intercept"])

        def native(X: np.ndarray) -> np.ndarray:
            return calibrator.probabilities(booster.predict(X, raw_score=True, num_threads=threads["now"]))

        label = f"lightgbm, {booster.num_trees()} trees"
        facts: dict[str, Any] = {"trees": booster.num_trees(), "fit": manifest["fit"]}
    elif family == "pytorch_mlp":
        from models.families import get_family

        mlp = get_family(family)
        fitted = mlp.fit(data.train, data.valid, params, seed)

        def native(X: np.ndarray) -> np.ndarray:
            return mlp.predict_proba(fitted, X)

        hidden = params.get("hidden", [])
        label = f"pytorch_mlp, {'-'.join(map(str, hidden))} hidden"
        facts = {"fit": manifest["fit"], "refit_in_process": dict(fitted.summary)}
    else:
        raise ValueError(f"no native runtime for family '{family}'")
    set_threads(1)
    facts |= {"calibration": manifest["calibration"], "training_parity": manifest["parity"]}
    return Scorers(onnx, native, set_threads, label, facts)


def check_parity(family: str, scorers: Scorers, test: np.ndarray, batch_threads: int) -> float:
    """Largest |ONNX - native| P(y=1) over the test rows, one row and 1,000 rows at a time.

    Raises:
        ParityError: If it exceeds ``TOLERANCE`` or either runtime returns a non-finite value.
    """
    worst = 0.0
    for threads, size in ((1, 1), (batch_threads, BATCH)):
        scorers.set_threads(threads)
        onnx = np.concatenate([scorers.onnx(test[i : i + size]) for i in range(0, len(test), size)])
        native = np.concatenate([scorers.native(test[i : i + size]) for i in range(0, len(test), size)])
        diff = np.abs(onnx.astype(np.float64) - native.astype(np.float64))
        if len(diff) != len(test) or not np.isfinite(diff).all() or diff.max() > TOLERANCE:
            raise ParityError(
                f"{family}: ONNX and native disagree on {size}-row calls: max |diff| "
                f"{np.nanmax(diff):.3g} > {TOLERANCE} over {len(test)} test rows; refusing to time it"
            )
        worst = max(worst, float(diff.max()))
    scorers.set_threads(1)
    return worst


def _alternating(scorers: Scorers, inputs: list[np.ndarray], repeats: int) -> tuple[list[float], list[float]]:
    """ONNX and native latencies (ms) over the same inputs, in ``ROUNDS`` alternating rounds."""
    onnx_samples: list[float] = []
    native_samples: list[float] = []
    per_round = max(1, repeats // ROUNDS)
    for _ in range(ROUNDS):
        for score, samples in ((scorers.onnx, onnx_samples), (scorers.native, native_samples)):
            rows = cycle(inputs)
            samples += latencies_ms(_next_call(score, rows), per_round)
    return onnx_samples, native_samples


def _next_call(score: Callable[[np.ndarray], np.ndarray], rows: Iterator[np.ndarray]) -> Callable[[], Any]:
    return lambda: score(next(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000, help="Rows of the synthetic training set.")
    parser.add_argument("--repeats", type=int, default=2000, help="Timed single-row calls per runtime.")
    parser.add_argument("--batch-threads", type=int, default=1, help="Threads for 1,000-row calls.")
    parser.add_argument("--seed", type=int, default=42)
    arguments = parser.parse_args()
    main(arguments.rows, arguments.repeats, arguments.batch_threads, arguments.seed)
