"""Registry of the model families ``models.train`` can fit."""

from __future__ import annotations

from models import lightgbm_family, torch_mlp
from models.interface import Family

FAMILIES: dict[str, Family] = {
    "lightgbm": lightgbm_family.FAMILY,
    "pytorch_mlp": torch_mlp.FAMILY,
}


def get_family(name: str) -> Family:
    """Looks a family up by name.

    Args:
        name: A key of ``FAMILIES``.

    Returns:
        The family.

    Raises:
        ValueError: Naming the known families, if ``name`` is not registered.
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown family '{name}'; choose one of {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]
