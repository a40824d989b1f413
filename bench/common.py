"""Shared by the benchmarks: timing, percentiles and the report every benchmark appends to."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One measured figure next to its floor, measured in the same run."""

    name: str
    unit: str
    value: float
    floor: float
    floor_name: str
    target: str
    met: bool
    spread: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.value / self.floor if self.floor else float("inf")


def latencies_ms(call: Callable[[], Any], repeats: int, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def alternating(calls: list[Callable[[], Any]], repeats: int) -> list[list[float]]:
    """Seconds of each call per round; the calls alternate so a change in the machine's load hits all."""
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for call, taken in zip(calls, samples, strict=True):
            started = time.perf_counter()
            call()
            taken.append(time.perf_counter() - started)
    return samples


def rates(rows: int, seconds: dict[str, float]) -> dict[str, float]:
    """The spread of run times as rows/s: the slowest run is the lowest rate."""
    return {
        "min": rows / seconds["max"],
        "max": rows / seconds["min"],
        "floor_min": rows / seconds["floor_max"],
        "floor_max": rows / seconds["floor_min"],
        "runs": seconds["runs"],
    }


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def compare(
    name: str,
    unit: str,
    values: list[float],
    floors: list[float],
    floor_name: str,
    target: str,
    met: Callable[[float], bool],
) -> Figure:
    """The median of repeated runs next to the floor's median from the same runs; both ranges in spread."""
    value, floor = statistics.median(values), statistics.median(floors)
    spread = {"min": min(values), "max": max(values), "floor_min": min(floors), "floor_max": max(floors)}
    return Figure(
        name, unit, value, floor, floor_name, target, met(value / floor), {**spread, "runs": len(values)}
    )


def median_of_runs(run: Callable[[], float], runs: int) -> tuple[float, dict[str, float]]:
    values = [run() for _ in range(runs)]
    return statistics.median(values), {"min": min(values), "max": max(values), "runs": float(runs)}


def write_report(name: str, figures: list[Figure], context: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "context": context,
        "figures": [{**asdict(figure), "ratio": figure.ratio} for figure in figures],
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    lines = [
        f"## {name}",
        "",
        "| figure | value | floor | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for figure in figures:
        met = "yes" if figure.met else "NO"
        lines.append(
            f"| {figure.name} | {figure.value:,.3f} {figure.unit} | {figure.floor:,.3f} {figure.unit} "
            f"({figure.floor_name}) | {figure.ratio:.2f}x | {figure.target} | {met} |"
        )
    markdown = "\n".join(lines) + "\n"
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
    return RESULTS / f"{name}.json"
