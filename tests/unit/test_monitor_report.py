"""The monitoring report: one self-contained HTML page with its plots inlined."""

from __future__ import annotations

from pathlib import Path

from pipelines.monitor_report import Distribution, Report, Trend, write_report


def test_the_report_is_one_page_with_inline_plots(tmp_path: Path) -> None:
    report = Report(
        title="fraud monitoring 2026-11-20 <v3>",
        summary=[("Window", "2026-11-20 to 2026-11-21"), ("Rows", "4,812")],
        table_header=["feature", "PSI", "drifted"],
        table_rows=[["txn_amount_aed", "0.61", "yes"], ["mcc", "0.01", "no"]],
        distributions=[
            Distribution(
                "txn_amount_aed", ["<20", "20-50", ">50"], [0.3, 0.4, 0.3], [0.1, 0.3, 0.6], "PSI 0.61"
            )
        ],
        trends=[
            Trend("PSI by window", ["11-18", "11-19", "11-20"], {"txn_amount_aed": [0.02, None, 0.61]}, 0.2)
        ],
        notes=["1 feature drifted"],
    )
    page = write_report(tmp_path / "reports" / "2026-11-20.html", report).read_text()
    assert page.startswith("<!doctype html>") and "<?xml" not in page
    assert page.count("<svg") == 2 and "<img" not in page and "http" not in page.split("<svg")[0]
    assert "fraud monitoring 2026-11-20 &lt;v3&gt;" in page  # escaped, not markup
    assert "<td>txn_amount_aed</td><td>0.61</td><td>yes</td>" in page
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["2026-11-20.html"]  # nothing half-written
