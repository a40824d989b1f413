"""Land and validate a use case's sources for the window this run owns.

`ingest` lands each source file as an immutable, pseudonymized Parquet partition (a rerun changes
nothing); `validate` runs the Great Expectations suite of each dataset and publishes the window to the
validated zone only if every expectation passes, then marks the `validated` asset.
Param `lookback_days` widens the window backwards (a backfill in one run).
"""

from __future__ import annotations

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, get_current_context, task
from falaj_airflow.alerts import data_quality_alerts
from falaj_airflow.runs import asset_name, dag_args, run_window

from pipelines.spec import UseCaseSpec, list_specs


def build(spec: UseCaseSpec) -> None:
    validated = Asset(name=asset_name(spec.name, "validated"))

    @dag(**dag_args(spec, "ingest", CronDataIntervalTimetable(spec.schedule, timezone="UTC")), doc_md=__doc__)
    def ingest_dag() -> None:
        @task
        def ingest() -> list[dict[str, object]]:
            from pipelines.ingest import ingest as land
            from pipelines.spec import load_spec

            start, end = run_window(get_current_context())
            return [partition.to_xcom() for partition in land(load_spec(spec.name), start.date(), end.date())]

        @task(outlets=[validated], on_failure_callback=data_quality_alerts())
        def validate(landed: list[dict[str, object]]) -> dict[str, object]:
            from airflow.sdk.exceptions import AirflowFailException

            from pipelines.spec import load_spec
            from pipelines.validate import DataValidationError
            from pipelines.validate import validate as check
            from pipelines.windows import window_extra

            context = get_current_context()
            partitions = [(str(p["dataset"]), str(p["partition"])) for p in landed]
            try:
                summary = check(load_spec(spec.name), partitions)
            except DataValidationError as failed:
                raise AirflowFailException(str(failed)) from None  # bad data: retrying cannot help
            context["outlet_events"][validated].extra = window_extra(*run_window(context))
            return {"partitions": summary.partitions, "rows": summary.rows, "data_docs": summary.data_docs}

        validate(ingest())

    ingest_dag()


for use_case in list_specs():
    build(use_case)
