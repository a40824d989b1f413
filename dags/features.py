"""Build a use case's feature tables, apply its Feast definitions and materialize the window.

Triggered by the `validated` asset; the window comes from the triggering asset events (or, when run
by hand, from the run's date and `lookback_days`). Marks the `features` asset.
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, get_current_context, task
from falaj_airflow.alerts import data_quality_alerts
from falaj_airflow.runs import asset_name, dag_args, run_window

from pipelines.spec import UseCaseSpec, list_specs


def build(spec: UseCaseSpec) -> None:
    features = Asset(name=asset_name(spec.name, "features"))

    @dag(**dag_args(spec, "features", [Asset(name=asset_name(spec.name, "validated"))]), doc_md=__doc__)
    def features_dag() -> None:
        @task(on_failure_callback=data_quality_alerts())
        def build_tables() -> dict[str, int]:
            from airflow.sdk.exceptions import AirflowFailException

            from pipelines.feature_tables import FeatureTableError
            from pipelines.features import build_feature_tables
            from pipelines.spec import load_spec
            from pipelines.validate import DataValidationError

            try:
                return build_feature_tables(load_spec(spec.name)).rows
            except (DataValidationError, FeatureTableError) as failed:
                raise AirflowFailException(str(failed)) from None  # a broken feature is not transient

        @task
        def apply() -> None:
            from pipelines.features import apply_definitions

            apply_definitions()

        @task(outlets=[features])
        def materialize() -> dict[str, int]:
            from pipelines.features import materialize as load_online
            from pipelines.spec import load_spec
            from pipelines.windows import window_extra

            context = get_current_context()
            start, end = run_window(context)
            loaded = load_online(load_spec(spec.name), start, end)  # this use case's views only
            written = {result.view: result.written for result in loaded}
            context["outlet_events"][features].extra = window_extra(start, end)
            return written  # rows each view changed online; 0 everywhere on a rerun

        build_tables() >> apply() >> materialize()

    features_dag()


for use_case in list_specs():
    build(use_case)
