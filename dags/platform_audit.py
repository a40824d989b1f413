"""Export the audit trail once a day, write-once, and verify the whole chain.

`export` writes the UTC day of the data interval (triggered without one: the day before) as JSON Lines
with a manifest and an Ed25519-signed checkpoint of the chain head (`falaj audit export`); `verify` then
checks every link and every signed checkpoint (`falaj audit verify`) and fails, with an alert, naming
the first bad record.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task
from falaj_airflow.alerts import data_quality_alerts
from falaj_airflow.runs import platform_dag_args


@dag(**platform_dag_args("audit", CronDataIntervalTimetable("@daily", timezone="UTC")), doc_md=__doc__)
def audit_dag() -> None:
    @task
    def export() -> str:
        from datetime import timedelta

        from pipelines import audit, registry
        from pipelines.settings import get_settings

        context = get_current_context()
        # A run triggered without a logical date has no data interval: it exports the last whole day.
        start = context.get("data_interval_start") or context["dag_run"].run_after - timedelta(days=1)
        day = start.strftime("%Y-%m-%d")
        with registry.session() as db:
            return str(audit.export_day(db, day, get_settings().home / "audit" / "exports"))

    @task(on_failure_callback=data_quality_alerts())
    def verify(exported: str) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines import audit, registry
        from pipelines.settings import get_settings

        checkpoints = audit.load_checkpoints(get_settings().home / "audit" / "exports")
        with registry.session() as db:
            verdict = audit.verify(audit.load(db), checkpoints)
        if not verdict.ok:
            raise AirflowFailException(f"audit trail: {verdict}")  # tampering is not transient
        return f"{verdict}; exported {exported}"

    verify(export())


audit_dag()
