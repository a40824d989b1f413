"""`make bench`'s one report: every figure of every benchmark with its floor, ratio, spread and verdict."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from bench import __main__ as bench
from bench.common import Figure, compare


def _write(results: Path, name: str, figures: list[Figure]) -> None:
    payload = {"figures": [{**asdict(figure), "ratio": figure.ratio} for figure in figures]}
    (results / f"{name}.json").write_text(json.dumps(payload))


def test_compare_takes_medians_of_both_sides_and_keeps_their_ranges() -> None:
    figure = compare(
        "p50", "ms", [3.0, 1.0, 2.0], [1.0, 1.5, 0.5], "floor", "ratio <= 1.5", lambda r: r <= 1.5
    )
    assert (figure.value, figure.floor, figure.ratio) == (2.0, 1.0, 2.0)
    assert not figure.met
    assert figure.spread == {"min": 1.0, "max": 3.0, "floor_min": 0.5, "floor_max": 1.5, "runs": 3}


def test_the_report_lists_every_figure_with_ratio_target_and_verdict(tmp_path: Path) -> None:
    fast = compare("fetch p50", "ms", [0.2, 0.3], [0.1, 0.1], "raw HMGET", "ratio <= 3", lambda r: r <= 3)
    slow = compare(
        "parse", "s", [4.0, 4.0], [1.0, 1.0], "import airflow.sdk", "ratio <= 1.5", lambda r: r <= 1.5
    )
    _write(tmp_path, "feature_store", [fast])
    _write(tmp_path, "dag_parse", [slow])
    figures = [*bench.collect(["feature_store", "dag_parse"], tmp_path), bench.demo_figure(330.0)]
    machine = {"when": "2026-11-29T00:00:00+00:00", "cpu_cores": 2, "platform": "linux", "python": "3.11"}
    markdown = bench.render(figures, {"feature_store": 60.0, "dag_parse": 30.0, "demo": 330.0}, machine)

    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 3
    assert "| feature_store | fetch p50 | 0.250 ms | 0.100 ms (raw HMGET) | 2.50x |" in rows[0]
    assert rows[0].endswith("| ratio <= 3 | yes |")
    assert "| 4.00x |" in rows[1] and rows[1].endswith("| ratio <= 1.5 | **NO** |")
    assert rows[2].startswith("| demo | `make demo` end to end") and "| 330.000 s | - | - |" in rows[2]
    assert "**2 of 3 figures meet their target.**" in markdown
    assert "total 7.0 min" in markdown


def test_an_unknown_benchmark_is_refused_by_name() -> None:
    with pytest.raises(SystemExit, match="no benchmark \\['servng'\\]"):
        bench.main(["servng"], skip_demo=True)
