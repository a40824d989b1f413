"""Data residency: storage and compute only in the regions ``policies/residency.yaml`` allows."""

from __future__ import annotations

from functools import lru_cache

from pipelines.settings import get_settings


class ResidencyError(PermissionError):
    """An off-region write or compute target; refused before anything moved."""


@lru_cache(maxsize=1)
def allowed_regions() -> tuple[str, ...]:
    import yaml

    policy = yaml.safe_load((get_settings().project_dir / "policies" / "residency.yaml").read_text())
    return tuple(policy["allowed_regions"])


def require(region: str, what: str) -> None:
    """Refuse, and audit the refusal, unless ``region`` is allowed."""
    if region in allowed_regions():
        return
    from pipelines import audit

    reason = f"{what} is in region {region}; the residency policy allows only {', '.join(allowed_regions())}"
    audit.emit("residency.check", what, outcome="denied", reason=reason, details={"region": region})
    raise ResidencyError(reason)


def require_storage(what: str) -> None:
    require(get_settings().storage_region, what)
