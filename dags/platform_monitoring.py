"""Monitor every use case's champion once a day: drift and input quality of the traffic it served.

`monitor_<use case>` compares the day's prediction log with the reference profile in the champion's
lineage (PSI with a KS or chi-square test per feature and for the score, Benjamini-Hochberg across
features), judges performance on the last days' predictions whose labels have landed, records the
run and writes its HTML report (the path is in the task log), and raises deduplicated alerts (`falaj
alerts list`). `deliver_<use case>` posts each new or escalated alert to the webhook and mails it.
`request_retraining_<use case>` emits the `retrain` asset, which triggers the use case's training DAG,
only when a critical drift or performance alert was just raised; otherwise it is skipped.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, get_current_context, task
from falaj_airflow.alerts import failure_alerts
from falaj_airflow.runs import asset_name, platform_dag_args, run_window

from pipelines.spec import list_specs


@dag(**platform_dag_args("monitoring", CronDataIntervalTimetable("@daily", timezone="UTC")), doc_md=__doc__)
def monitoring_dag() -> None:
    # A monitor that cannot judge (a reference profile that does not verify) is itself an incident.
    @task(on_failure_callback=failure_alerts("monitoring_failed", "critical"))
    def monitor(use_case: str) -> dict[str, Any]:
        import logging

        from pipelines.monitoring import monitor_window
        from pipelines.overview import report_link
        from pipelines.spec import load_spec

        start, end = run_window(get_current_context())
        result = monitor_window(load_spec(use_case), start, end)
        if result.report_uri:
            logging.getLogger(__name__).info("report: %s", report_link(result.report_uri))
        return result.to_xcom()

    @task
    def deliver(result: dict[str, Any]) -> int:
        from falaj_airflow.alerts import monitoring_notifiers

        context = get_current_context()
        alerts = result["to_deliver"]
        for alert in alerts:
            for notifier in monitoring_notifiers(alert):
                notifier(context)
        return len(alerts)

    for spec in list_specs():
        retrain = Asset(name=asset_name(spec.name, "retrain"))

        @task(task_id=f"request_retraining_{spec.name}", outlets=[retrain])
        def request_retraining(result: dict[str, Any], retrain: Asset = retrain) -> str:
            from datetime import datetime

            from airflow.sdk.exceptions import AirflowSkipException

            from pipelines.windows import window_extra

            if not result["retrain"]:
                raise AirflowSkipException("nothing new and critical: the champion keeps serving")
            start, end = (datetime.fromisoformat(moment) for moment in result["window"])
            get_current_context()["outlet_events"][retrain].extra = window_extra(start, end)
            return f"retraining requested: drift in {', '.join(result['drifted'])}"

        monitored = monitor.override(task_id=f"monitor_{spec.name}")(spec.name)
        deliver.override(task_id=f"deliver_{spec.name}")(monitored)
        request_retraining(monitored)


monitoring_dag()
