"""Declared feature tables: how a use case computes each feature view's input from its validated data.

A use case's module in the feature repository (``feature_repo/<use_case>.py``) holds its Feast
definitions and, beside them, one builder per feature view it fills from the lake::

    @feature_table(view="card_velocity", inputs=["transactions"])
    def card_velocity_table(transactions: pd.DataFrame) -> pd.DataFrame: ...

The builder gets one frame per input, in the declared order: every validated partition of the dataset,
or only the latest one where the spec declares a dimension snapshot (a csv source without ``{date}``).
`pipelines.features.build_feature_tables` finds the module's tables as Feast finds its objects (the
module's attributes), checks each frame against its view and suite, and writes it where the view's
source reads. A decorated builder stays callable as the plain function it was.

This module imports neither airflow nor feast, and pandas only when a table is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec

if TYPE_CHECKING:
    import pandas as pd

P = ParamSpec("P")


class FeatureTableError(ValueError):
    """A use case's feature tables are missing or declared wrongly; the message names the module and view."""


@dataclass(frozen=True)
class FeatureTable(Generic[P]):
    """One feature view's input, computed by ``builder`` from the validated datasets ``inputs``."""

    view: str
    inputs: tuple[str, ...]
    builder: Callable[P, pd.DataFrame]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> pd.DataFrame:
        return self.builder(*args, **kwargs)

    @property
    def name(self) -> str:
        return f"{self.builder.__module__}.{self.builder.__qualname__}"

    def build(self, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        """Run the builder on the frames of its inputs."""
        build: Callable[..., pd.DataFrame] = self.builder
        return build(*(frames[dataset] for dataset in self.inputs))


def feature_table(
    *, view: str, inputs: Sequence[str]
) -> Callable[[Callable[P, pd.DataFrame]], FeatureTable[P]]:
    """Declare ``builder`` as the function that computes feature view ``view`` from ``inputs``.

    Args:
        view: The name of the Feast feature view (defined in the same module) the table feeds.
        inputs: The spec's datasets the builder takes, in the order of its parameters.

    Raises:
        FeatureTableError: No inputs, a repeated one, or a builder that cannot take them.
    """
    datasets = tuple(inputs)
    if isinstance(inputs, str) or not datasets or len(set(datasets)) != len(datasets):
        raise FeatureTableError(
            f"feature table {view!r}: inputs must be distinct dataset names, got {inputs!r}"
        )

    def declare(builder: Callable[P, pd.DataFrame]) -> FeatureTable[P]:
        try:
            inspect.signature(builder).bind(*datasets)
        except TypeError as wrong:
            raise FeatureTableError(
                f"feature table {view!r}: {builder.__qualname__} cannot take its inputs "
                f"{list(datasets)} as positional arguments ({wrong})"
            ) from None
        return FeatureTable(view=view, inputs=datasets, builder=builder)

    return declare


def declared_tables(module: ModuleType) -> list[FeatureTable[Any]]:
    """The tables a module declares, in the order it defines them.

    Raises:
        FeatureTableError: The module declares none, or two for one view.
    """
    tables = [value for value in vars(module).values() if isinstance(value, FeatureTable)]
    where = getattr(module, "__file__", None) or module.__name__
    if not tables:
        raise FeatureTableError(
            f"{where} declares no feature tables: decorate a builder per feature view with "
            "@feature_table(view=..., inputs=[...]) from pipelines.feature_tables"
        )
    views = [table.view for table in tables]
    repeated = sorted({view for view in views if views.count(view) > 1})
    if repeated:
        raise FeatureTableError(f"{where} declares more than one table for view(s) {repeated}")
    return tables


def one_row_per_instant(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Keep the state after the *last* event of each entity and instant.

    Two transactions of a card in the same second give two rows with one timestamp; a point-in-time
    join cannot tell them apart and would pick either, so the same data could build different
    training sets. The last row already counts both, which is also what the stream pushes.
    """
    ordered = frame.sort_values([key, "event_timestamp"], kind="stable")
    return ordered.drop_duplicates(subset=[key, "event_timestamp"], keep="last").reset_index(drop=True)
