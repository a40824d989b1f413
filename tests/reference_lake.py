"""The reference data taken, as the DAGs take it, through ingest, validation, feature tables and apply."""

from __future__ import annotations

from pipelines.datagen import SIZES, GeneratedData, generate
from pipelines.features import apply_definitions, build_feature_tables
from pipelines.ingest import ingest
from pipelines.settings import get_settings
from pipelines.spec import UseCaseSpec, load_spec
from pipelines.validate import validate


def prepare_features(days: int, size: str = "tiny") -> tuple[UseCaseSpec, GeneratedData]:
    """Generate ``days`` of data into the current home and make its features ready to materialize."""
    use_case = load_spec("fraud")
    data = generate(get_settings().source_dir, SIZES[size], days=days)
    landed = ingest(use_case, data.start, data.end)
    validate(use_case, [(item.dataset, item.partition) for item in landed])
    build_feature_tables(use_case)
    apply_definitions()
    return use_case, data
