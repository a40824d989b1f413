"""`make bench`: every benchmark in bench/, each in an interpreter of its own, then one report.

Each benchmark times its figures next to a floor measured in the same run (medians over repeated,
alternating runs, with the range) and writes ``bench/results/<name>.json``; this runs them one after the
other, times ``falaj demo`` end to end in a home of its own, and gathers everything into
``bench/results/report.md`` and ``report.json``: every figure with its ratio, target and whether it is
met. Targets are reported, never asserted; the run fails only when a benchmark itself fails.

Run: `make bench` (about 8 minutes on 2 cores), or `.venv/bin/python -m bench --only serving,drift`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS

#: Benchmark module -> its arguments in `make bench` (the whole run: about 8 minutes on 2 cores).
SUITE: dict[str, list[str]] = {
    "dag_parse": [],
    "validation": [],
    "training_set": [],
    "feature_store": ["--size", "demo", "--copies", "30"],
    "serving": ["--seconds", "5", "--rounds", "2"],
    "model_latency": [],
    "drift": [],
}
DEMO = "demo"


def run_benchmark(name: str, arguments: list[str]) -> tuple[float, bool]:
    """One benchmark in its own interpreter (no state shared with the next); its wall seconds and success."""
    started = time.monotonic()
    print(f"\n=== bench.{name} {' '.join(arguments)}", flush=True)
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", *arguments], check=False)
    return time.monotonic() - started, done.returncode == 0


def time_demo() -> float:
    """`falaj demo` (what `make demo` runs once the venv exists) in a fresh home; its wall seconds."""
    falaj = str(Path(sys.executable).with_name("falaj"))
    with tempfile.TemporaryDirectory(prefix="falaj-bench-demo-") as home:
        started = time.monotonic()
        print("\n=== falaj demo (default size, fresh home)", flush=True)
        subprocess.run([falaj, "demo"], check=True, env={**os.environ, "FALAJ_HOME": home})
        return time.monotonic() - started


def demo_figure(seconds: float) -> dict[str, Any]:
    return {
        "benchmark": DEMO,
        "name": "`make demo` end to end (falaj demo, default size, fresh home)",
        "unit": "s",
        "value": seconds,
        "floor": None,
        "floor_name": "-",
        "ratio": None,
        "target": "reported",
        "met": True,
        "spread": {},
    }


def collect(names: list[str], results: Path = RESULTS) -> list[dict[str, Any]]:
    """Every figure the named benchmarks wrote, each tagged with its benchmark."""
    figures = []
    for name in names:
        report = json.loads((results / f"{name}.json").read_text())
        figures += [{"benchmark": name, **figure} for figure in report["figures"]]
    return figures


def render(figures: list[dict[str, Any]], wall_s: dict[str, float], machine: dict[str, Any]) -> str:
    """The report's Markdown: one table, every figure with its floor, ratio, spread, target and verdict."""
    met = sum(1 for figure in figures if figure["met"])
    lines = [
        "# Falaj benchmark report",
        "",
        f"{machine['when']} on {machine['cpu_cores']} cores ({machine['platform']}, Python "
        f"{machine['python']}). Every figure is the median of repeated runs next to a floor measured "
        "in the same run; spread is the range over the runs (figure, then floor).",
        "",
        f"**{met} of {len(figures)} figures meet their target.** Wall time: "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in wall_s.items())
        + f"; total {sum(wall_s.values()) / 60:.1f} min.",
        "",
        "| benchmark | figure | value | floor | ratio | spread | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for figure in figures:
        unit = figure["unit"]
        floor = (
            "-" if figure["floor"] is None else f"{_number(figure['floor'])} {unit} ({figure['floor_name']})"
        )
        ratio = "-" if figure["ratio"] is None else f"{figure['ratio']:.2f}x"
        lines.append(
            f"| {figure['benchmark']} | {figure['name']} | {_number(figure['value'])} {unit} "
            f"| {floor} | {ratio} | {_spread(figure['spread'])} | {figure['target']} "
            f"| {'yes' if figure['met'] else '**NO**'} |"
        )
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.3f}"


def _spread(spread: dict[str, float]) -> str:
    if "min" not in spread:
        return "-"
    text = f"{_number(spread['min'])}-{_number(spread['max'])}"
    if "floor_min" in spread:
        text += f" / {_number(spread['floor_min'])}-{_number(spread['floor_max'])}"
    return text + (f" ({spread['runs']:.0f} runs)" if "runs" in spread else "")


def main(only: list[str] | None, skip_demo: bool) -> Path:
    names = only or list(SUITE)
    if unknown := sorted(set(names) - set(SUITE) - {DEMO}):
        raise SystemExit(f"no benchmark {unknown}; known: {', '.join([*SUITE, DEMO])}")
    runs = {name: run_benchmark(name, SUITE[name]) for name in names if name in SUITE}
    wall_s = {name: seconds for name, (seconds, _) in runs.items()}
    failed = [name for name, (_, ok) in runs.items() if not ok]
    figures = collect([name for name, (_, ok) in runs.items() if ok])
    if not skip_demo and (only is None or DEMO in only):
        wall_s[DEMO] = time_demo()
        figures.append(demo_figure(wall_s[DEMO]))
    machine = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine, "wall_s": wall_s, "figures": figures}
    (RESULTS / "report.json").write_text(json.dumps(report, indent=2))
    markdown = render(figures, wall_s, machine)
    (RESULTS / "report.md").write_text(markdown)
    print("\n" + markdown)
    if failed:  # the others' figures are in the report; these have none
        raise SystemExit(f"benchmark(s) failed: {', '.join(failed)} (their output above says why)")
    return RESULTS / "report.md"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=lambda text: text.split(","), help="Comma-separated benchmarks.")
    parser.add_argument("--skip-demo", action="store_true", help="Do not time `falaj demo`.")
    arguments = parser.parse_args()
    main(arguments.only, arguments.skip_demo)
