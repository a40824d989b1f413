"""The locked requirements against the committed list of known-vulnerable versions.

``python -m pipelines.supply_chain [LOCK ...]`` (``make audit``) reads ``policies/vulnerable-versions.yaml``
and fails, naming the file, the line and the advisory, for every pin inside an advisory's affected range,
unless the advisory is accepted there with a reason. pip-audit does the same against live databases where
one can be reached (the hosted workflow); this list is what every other machine can check.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.settings import PROJECT_DIR

DENY_LIST = PROJECT_DIR / "policies" / "vulnerable-versions.yaml"


class DenyListError(ValueError):
    """The deny-list itself is malformed; the message names the entry."""


@dataclass(frozen=True)
class Advisory:
    id: str
    package: str
    affected: str  # a PEP 440 specifier set
    summary: str
    source: str


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    pin: str
    advisory: Advisory
    accepted: str | None  # why the pin stays, when the deny-list accepts the advisory

    def __str__(self) -> str:
        verdict = f"accepted: {self.accepted}" if self.accepted else "not accepted"
        return (
            f"{self.path}:{self.line}: {self.pin} is affected by {self.advisory.id} "
            f"({self.advisory.package} {self.advisory.affected}): {self.advisory.summary} [{verdict}]"
        )


def _name(package: str) -> str:
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(package))


def load_deny_list(path: Path = DENY_LIST) -> tuple[list[Advisory], dict[str, str]]:
    """The advisories and the accepted ones (id -> reason).

    Raises:
        DenyListError: a missing field, a bad version range, or an acceptance without a reason or of an
            advisory the list does not hold.
    """
    import yaml
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    raw = yaml.safe_load(path.read_text()) or {}
    advisories = []
    for number, entry in enumerate(raw.get("advisories") or [], start=1):
        missing = [key for key in ("id", "package", "affected", "summary", "source") if not entry.get(key)]
        if missing:
            raise DenyListError(f"{path}: advisory #{number} lacks {', '.join(missing)}")
        try:
            SpecifierSet(str(entry["affected"]))
        except InvalidSpecifier:
            raise DenyListError(
                f"{path}: {entry['id']}: affected {entry['affected']!r} is not a range"
            ) from None
        advisories.append(Advisory(**{key: str(entry[key]) for key in Advisory.__dataclass_fields__}))
    accepted = {str(key): str(reason or "").strip() for key, reason in (raw.get("accepted") or {}).items()}
    known = {advisory.id for advisory in advisories}
    for advisory_id, reason in accepted.items():
        if advisory_id not in known:
            raise DenyListError(f"{path}: accepted {advisory_id} is not among the advisories")
        if not reason:
            raise DenyListError(f"{path}: accepted {advisory_id} needs its reason")
    return advisories, accepted


def locked_pins(lock: Path) -> Iterator[tuple[int, str, str, str]]:
    """(line number, pin, canonical name, version) of every ``name==version`` line of ``lock``."""
    for number, text in enumerate(lock.read_text().splitlines(), start=1):
        pin = text.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" not in pin:
            continue
        name, version = (part.strip() for part in pin.split("==", 1))
        yield number, pin, _name(name.split("[", 1)[0]), version


def audit(lock: Path, advisories: list[Advisory], accepted: dict[str, str]) -> list[Finding]:
    """Every pin of ``lock`` (``name==version`` lines) inside an advisory's affected range."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    by_package: dict[str, list[Advisory]] = {}
    for advisory in advisories:
        by_package.setdefault(_name(advisory.package), []).append(advisory)
    findings = []
    for number, pin, name, version in locked_pins(lock):
        for advisory in by_package.get(name, []):
            if SpecifierSet(advisory.affected).contains(Version(version), prereleases=True):
                findings.append(Finding(lock, number, pin, advisory, accepted.get(advisory.id)))
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("locks", nargs="*", type=Path, default=[PROJECT_DIR / "requirements" / "lock.txt"])
    parser.add_argument("--deny-list", type=Path, default=DENY_LIST)
    parser.add_argument(
        "--accepted", action="store_true", help="print the accepted advisory ids, one a line (for pip-audit)"
    )
    arguments = parser.parse_args(argv)
    try:
        advisories, accepted = load_deny_list(arguments.deny_list)
    except (DenyListError, OSError) as bad:
        print(f"supply chain: {bad}", file=sys.stderr)
        return 2
    if arguments.accepted:
        print("\n".join(accepted))
        return 0
    findings = [finding for lock in arguments.locks for finding in audit(lock, advisories, accepted)]
    for finding in findings:
        print(finding, file=sys.stderr if finding.accepted is None else sys.stdout)
    refused = [finding for finding in findings if finding.accepted is None]
    pins = sum(1 for lock in arguments.locks for _ in locked_pins(lock))
    vulnerable = len({(finding.path, finding.line) for finding in refused})
    print(
        f"supply chain: {pins} pins against {len(advisories)} advisories: {vulnerable} vulnerable pin(s) "
        f"({len(refused)} advisories), {len(findings) - len(refused)} accepted"
    )
    return 1 if refused else 0


if __name__ == "__main__":
    raise SystemExit(main())
