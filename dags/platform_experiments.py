"""Review every live or recently ended experiment once a day, on the labels that have arrived since.

One `review_<use case>` task per use case joins the late labels to the prediction log, compares the
arms (per-arm metrics, a unit-bootstrap CI of challenger − champion on the gate's metric, a precision
test at the served threshold), stores the review and audits its proposal. `notify_<use case>` posts a
`promote` or `rollback` proposal to the alert webhook. Nothing here promotes or rolls back: an approver
decides, with `falaj models promote` or `falaj rollout stop --rolled-back`.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task
from falaj_airflow.runs import platform_dag_args

from pipelines.spec import list_specs


@dag(**platform_dag_args("experiments", CronDataIntervalTimetable("@daily", timezone="UTC")), doc_md=__doc__)
def experiments_dag() -> None:
    @task
    def review(use_case: str) -> list[dict[str, object]]:
        from pipelines.experiment_analysis import review_all, to_xcom
        from pipelines.settings import get_settings
        from pipelines.spec import load_spec

        return [to_xcom(done) for done in review_all(load_spec(use_case), get_settings().actor)]

    @task
    def notify(reviews: list[dict[str, object]]) -> list[object]:
        from falaj_airflow.alerts import WebhookNotifier

        from pipelines.settings import get_settings

        actionable = [r for r in reviews if r["proposal"] in ("promote", "rollback")]
        url = get_settings().alert_webhook_url
        if actionable and url:
            # The payload's reason is the context's "exception"; here it is the proposal, for an approver.
            reason = "\n".join(str(r["message"]) for r in actionable)
            WebhookNotifier(url, kind="experiment_proposal", severity="info")(
                {**get_current_context(), "exception": reason}
            )
        return [r["review_id"] for r in actionable]

    for spec in list_specs():
        reviewed = review.override(task_id=f"review_{spec.name}")(spec.name)
        notify.override(task_id=f"notify_{spec.name}")(reviewed)


experiments_dag()
