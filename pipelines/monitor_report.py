"""The monitoring run's HTML report: one self-contained page a person opens from the alert or the log.

It shows what drifted (reference vs current distribution of each flagged feature), serving data
quality, and trends of drift and performance over the past windows. Plots are matplotlib SVG inlined
in the page, so the file needs nothing else to open, offline or attached to a ticket.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from pipelines import lake


@dataclass(frozen=True)
class Distribution:
    """One feature's reference and current shares over the same bins (or categories)."""

    feature: str
    bins: Sequence[str]
    reference: Sequence[float]
    current: Sequence[float]
    caption: str


@dataclass(frozen=True)
class Trend:
    """A series per name over the windows, e.g. each drifting feature's PSI, or ROC-AUC."""

    title: str
    windows: Sequence[str]
    series: dict[str, Sequence[float | None]]
    threshold: float | None = None


@dataclass(frozen=True)
class Report:
    title: str
    summary: Sequence[tuple[str, str]]  # (label, value) lines at the top
    table_header: Sequence[str]
    table_rows: Sequence[Sequence[str]]  # one per monitored feature; flagged ones first
    distributions: Sequence[Distribution] = ()
    trends: Sequence[Trend] = ()
    notes: Sequence[str] = field(default_factory=list)


def write_report(path: Path, report: Report) -> Path:
    """Render ``report`` to one HTML file at ``path`` (written atomically)."""
    parts = [
        f"<h1>{escape(report.title)}</h1>",
        "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in report.summary) + "</dl>",
    ]
    parts += [f"<p class='note'>{escape(note)}</p>" for note in report.notes]
    header = "".join(f"<th>{escape(cell)}</th>" for cell in report.table_header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in report.table_rows
    )
    parts.append(f"<h2>Features</h2><table><tr>{header}</tr>{rows}</table>")
    if report.distributions:
        parts.append("<h2>Reference vs current</h2>")
        parts += [
            f"<figure>{_distribution_svg(d)}<figcaption>{escape(d.caption)}</figcaption></figure>"
            for d in report.distributions
        ]
    if report.trends:
        parts.append("<h2>Over time</h2>")
        parts += [f"<figure>{_trend_svg(trend)}</figure>" for trend in report.trends]
    html = _PAGE.format(title=escape(report.title), body="\n".join(parts))
    with lake.atomic_path(path) as partial:
        partial.write_text(html)
    return path


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: a scheduler's worker
    from matplotlib.figure import Figure

    return Figure(figsize=(7.5, 2.8), layout="constrained")


def _svg(figure: Any) -> str:
    import matplotlib

    out = io.StringIO()
    # No date and fixed element ids: the same window gives the same report, byte for byte.
    with matplotlib.rc_context({"svg.hashsalt": "falaj-report"}):
        figure.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog: inlined in HTML


def _distribution_svg(distribution: Distribution) -> str:
    figure = _figure()
    axes = figure.add_subplot()
    positions = range(len(distribution.bins))
    width = 0.4
    axes.bar([p - width / 2 for p in positions], distribution.reference, width, label="reference")
    axes.bar([p + width / 2 for p in positions], distribution.current, width, label="current window")
    axes.set_xticks(list(positions), list(distribution.bins), rotation=30, ha="right", fontsize=7)
    axes.set_ylabel("share of rows")
    axes.set_title(distribution.feature)
    axes.legend(fontsize=8)
    return _svg(figure)


def _trend_svg(trend: Trend) -> str:
    figure = _figure()
    axes = figure.add_subplot()
    for name, values in trend.series.items():
        points = [(i, v) for i, v in enumerate(values) if v is not None]
        if points:
            axes.plot([i for i, _ in points], [v for _, v in points], marker="o", markersize=3, label=name)
    if trend.threshold is not None:
        axes.axhline(trend.threshold, color="red", linestyle="--", linewidth=1, label="threshold")
    step = max(1, len(trend.windows) // 10)
    axes.set_xticks(range(0, len(trend.windows), step), list(trend.windows)[::step], fontsize=7)
    axes.set_title(trend.title)
    axes.legend(fontsize=7, ncols=2)
    return _svg(figure)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1b1f23; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }}
dt {{ font-weight: 600; }} dd {{ margin: 0; }}
table {{ border-collapse: collapse; font-size: .85rem; }}
td, th {{ border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; }}
figure {{ margin: 1rem 0; }} figcaption {{ font-size: .8rem; color: #57606a; }}
.note {{ background: #fff8c5; padding: .5rem; }}
</style></head>
<body>
{body}
</body></html>
"""
