"""The working tree against the committed secrets baseline (``make secrets``).

``python -m pipelines.secret_scan`` runs detect-secrets, with the plugins and filters that
``.secrets.baseline`` records, over every file of the checkout, tracked or not, except what the baseline's
exclude pattern names (the virtual environment, caches, build output, the platform home). It fails, naming
the file, the line and the kind of secret, for every finding the baseline does not hold, and for every
baseline entry not audited as a false positive. A new false positive is added with
``detect-secrets scan --baseline .secrets.baseline`` and labelled with ``detect-secrets audit`` (docs/ci.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.settings import PROJECT_DIR

BASELINE = PROJECT_DIR / ".secrets.baseline"
EXCLUDE_FILTER = "detect_secrets.filters.regex.should_exclude_file"


class BaselineError(ValueError):
    """The baseline is missing or malformed; the message names it."""


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    kind: str
    verdict: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}: {self.verdict}"


def load_baseline(path: Path = BASELINE) -> dict:
    """The baseline as detect-secrets wrote it.

    Raises:
        BaselineError: the file is missing, not JSON, or lacks its plugins or results.
    """
    try:
        recorded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as bad:
        raise BaselineError(f"{path}: {bad}") from None
    missing = [key for key in ("plugins_used", "filters_used", "results") if key not in recorded]
    if missing:
        raise BaselineError(f"{path}: lacks {', '.join(missing)}")
    return recorded


def excluded_paths(recorded: dict) -> list[re.Pattern[str]]:
    """The baseline's ``--exclude-files`` patterns, matched against '/'-separated paths under the root."""
    return [
        re.compile(pattern)
        for entry in recorded["filters_used"]
        if entry["path"] == EXCLUDE_FILTER
        for pattern in entry["pattern"]
    ]


def files_to_scan(root: Path, excluded: list[re.Pattern[str]]) -> list[str]:
    """Every regular file under ``root`` (relative paths) that no pattern excludes; excluded folders are
    not entered, and links are not followed (one could point out of the tree)."""

    def skip(relative: str) -> bool:
        return any(pattern.search(relative) for pattern in excluded)

    found = []
    for folder, subfolders, names in os.walk(root):
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        subfolders[:] = [name for name in subfolders if not skip(f"{prefix}{name}/")]
        found += [
            f"{prefix}{name}"
            for name in names
            if not skip(f"{prefix}{name}") and not Path(folder, name).is_symlink()
        ]
    return sorted(found)


def scan(root: Path = PROJECT_DIR, baseline: Path = BASELINE) -> tuple[int, list[Finding]]:
    """(files scanned, findings): secrets the baseline lacks, and baseline entries not audited as false.

    Raises:
        BaselineError: the baseline is missing or malformed.
    """
    from detect_secrets.core.secrets_collection import SecretsCollection
    from detect_secrets.settings import transient_settings

    recorded = load_baseline(baseline)
    known = SecretsCollection.load_from_baseline(recorded)
    files = files_to_scan(root, excluded_paths(recorded))
    found = SecretsCollection()
    # detect-secrets compares findings by path, so it scans from the root with the baseline's relative paths.
    with contextlib.chdir(root), transient_settings(recorded):
        found.scan_files(*files)
    findings = [
        Finding(path, secret.line_number, secret.type, f"not in {baseline.name}")
        for path, secret in found - known
    ]
    for path, secret in known:
        if secret.is_secret is None:
            findings.append(Finding(path, secret.line_number, secret.type, "in the baseline, not audited"))
        elif secret.is_secret:
            verdict = "audited as a real secret: rotate it and remove it"
            findings.append(Finding(path, secret.line_number, secret.type, verdict))
    return len(files), sorted(findings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=PROJECT_DIR)
    parser.add_argument("--baseline", type=Path, default=None, help="default: ROOT/.secrets.baseline")
    arguments = parser.parse_args(argv)
    root = arguments.root.resolve()
    try:
        scanned, findings = scan(root, arguments.baseline or root / ".secrets.baseline")
    except BaselineError as bad:
        print(f"secrets: {bad}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding, file=sys.stderr)
    print(f"secrets: {scanned} files scanned, {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
