"""The CycloneDX SBOM of the installed environment against the locked requirements.

``make sbom`` writes ``dist/sbom.cdx.json`` with ``cyclonedx-py environment`` (every installed distribution
with its licenses and dependency graph), then ``python -m pipelines.sbom SBOM LOCK ...`` fails, naming the
file and the line, for every pin of a lock the SBOM does not list at that version: an SBOM that misses a
pin, or an environment that drifted from the lock, is not the SBOM of the locked environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.supply_chain import locked_pins


class SbomError(ValueError):
    """The SBOM is not a CycloneDX JSON document with components; the message says why."""


def components(sbom: Path) -> dict[str, set[str]]:
    """Canonical package name -> the versions the SBOM lists for it.

    Raises:
        SbomError: the file is not JSON, not CycloneDX, or lists no component.
    """
    from packaging.utils import canonicalize_name

    try:
        document = json.loads(sbom.read_text())
    except json.JSONDecodeError as bad:
        raise SbomError(f"{sbom}: not JSON ({bad})") from None
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        raise SbomError(f"{sbom}: not a CycloneDX document")
    listed: dict[str, set[str]] = {}
    for component in document.get("components") or []:
        listed.setdefault(str(canonicalize_name(component["name"])), set()).add(str(component.get("version")))
    if not listed:
        raise SbomError(f"{sbom}: lists no component")
    return listed


def missing_pins(listed: dict[str, set[str]], lock: Path) -> list[str]:
    """``file:line: pin`` for every pin of ``lock`` that ``listed`` lacks at its version (PEP 440 ``==``)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    def has(name: str, version: str) -> bool:
        for candidate in listed.get(name, set()):
            try:
                if SpecifierSet(f"=={version}").contains(Version(candidate), prereleases=True):
                    return True
            except InvalidVersion:
                continue
        return False

    return [
        f"{lock}:{number}: {pin} is not in the SBOM"
        + (f" (it lists {', '.join(sorted(listed[name]))})" if name in listed else "")
        for number, pin, name, version in locked_pins(lock)
        if not has(name, version)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sbom", type=Path)
    parser.add_argument("locks", nargs="+", type=Path)
    arguments = parser.parse_args(argv)
    try:
        listed = components(arguments.sbom)
    except (SbomError, OSError) as bad:
        print(f"sbom: {bad}", file=sys.stderr)
        return 2
    missing = [gap for lock in arguments.locks for gap in missing_pins(listed, lock)]
    for gap in missing:
        print(gap, file=sys.stderr)
    pins = sum(1 for lock in arguments.locks for _ in locked_pins(lock))
    print(
        f"sbom: {arguments.sbom} lists {sum(map(len, listed.values()))} components; "
        f"{pins - len(missing)} of {pins} locked pins at their versions"
    )
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
