"""The lock against the committed known-vulnerable versions: a planted vulnerable pin fails, naming the
file, the line and the advisory; an accepted advisory passes with its reason; a bad list is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.supply_chain import DENY_LIST, DenyListError, audit, load_deny_list, main

PROJECT = Path(__file__).resolve().parents[2]
LOCK = PROJECT / "requirements" / "lock.txt"


def test_the_shipped_lock_passes_with_only_accepted_advisories(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(LOCK)]) == 0
    out = capsys.readouterr().out
    assert "0 vulnerable pin(s)" in out and "accepted: " in out


def test_a_planted_vulnerable_pin_fails_naming_the_file_line_and_advisory(tmp_path: Path) -> None:
    # Given the lock with BentoML pinned back to a release with the pickle RCE
    planted = tmp_path / "lock.txt"
    lines = LOCK.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, start=1) if line.startswith("bentoml=="))
    lines[number - 1] = "bentoml==1.4.2"
    planted.write_text("\n".join(lines) + "\n")
    # When the audit runs as `make audit` runs it
    ran = subprocess.run(
        [sys.executable, "-m", "pipelines.supply_chain", str(planted)], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    # Then it fails, naming where and why
    assert ran.returncode == 1
    assert f"{planted}:{number}: bentoml==1.4.2 is affected by CVE-2025-27520" in ran.stderr
    assert "CVE-2025-32375" in ran.stderr and "[not accepted]" in ran.stderr
    assert "CVE-2026-27905" in ran.stderr  # every advisory whose range holds the pin
    assert " 1 vulnerable pin(s) (4 advisories), 2 accepted" in ran.stdout


def test_a_version_outside_every_range_and_a_local_label_are_matched_by_pep_440(tmp_path: Path) -> None:
    advisories, accepted = load_deny_list()
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "bentoml==1.4.40\ntorch==2.13.0+cpu\nTorch==2.14.0\nh11==0.15.0 ; python_version >= '3'\n"
    )
    found = {(finding.line, finding.advisory.id) for finding in audit(lock, advisories, accepted)}
    assert found == {(2, "CVE-2026-136426"), (4, "CVE-2025-43859")}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('affected: "<0.16.0"', 'affected: "below 0.16"', "is not a range"),
        ("  CVE-2026-92786: >-", "  CVE-2099-00001: >-", "not among the advisories"),
        ("    summary: Lenient chunked-encoding parsing allows request smuggling.\n", "", "lacks summary"),
    ],
    ids=["bad range", "unknown acceptance", "missing field"],
)
def test_a_malformed_deny_list_is_refused_naming_the_entry(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    text = DENY_LIST.read_text()
    assert old in text  # the mutation applies
    broken = tmp_path / "vulnerable-versions.yaml"
    broken.write_text(text.replace(old, new))
    with pytest.raises(DenyListError, match=message):
        load_deny_list(broken)
    assert main([str(LOCK), "--deny-list", str(broken)]) == 2
