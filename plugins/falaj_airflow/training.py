"""The `train_<family>` task: the same entrypoint on the local backend or in a Kubernetes GPU pod."""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from pipelines.settings import get_settings
from pipelines.spec import UseCaseSpec

TRAINING_SET_URI = "{{ ti.xcom_pull(task_ids='build_training_set')['uri'] }}"
TRAINING_SET_KEY = "{{ ti.xcom_pull(task_ids='build_training_set')['sha256'][:16] }}"


def kubernetes_train_operator(spec: UseCaseSpec, family: str) -> Any:
    """A KubernetesPodOperator that runs ``python -m models.train`` in the training image.

    The pod is fully described by :func:`pipelines.k8s.training_pod`; only the argv is templated here,
    because the training set is known when the run starts, not when the DAG is parsed.
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from pipelines.k8s import training_pod
    from pipelines.training import train_command

    output_uri = f"{get_settings().artifacts_dir}/models/{spec.name}/{TRAINING_SET_KEY}/{family}"
    params = spec.model_params(family)
    argv = train_command(TRAINING_SET_URI, family, params, output_uri)
    return KubernetesPodOperator(
        task_id=f"train_{family}",
        full_pod_spec=training_pod(spec, family, TRAINING_SET_URI, output_uri),
        cmds=argv[:3],
        arguments=argv[3:],
        on_finish_action="delete_pod",
        get_logs=True,
        do_xcom_push=False,
        startup_timeout_seconds=900,
        termination_message_policy="FallbackToLogsOnError",  # the failure reason reaches the task log
    )


def train_task(spec: UseCaseSpec, family: str, training_set: Any) -> Any:
    """The training task of one family, on the backend the spec picks for the profile (or the override)."""
    if spec.training_backend() == "kubernetes":
        return kubernetes_train_operator(spec, family)

    @task(task_id=f"train_{family}")
    def train_local(training_set: dict[str, object]) -> str:
        from pipelines.spec import load_spec
        from pipelines.training import train_local as run

        return run(load_spec(spec.name), str(training_set["uri"]), str(training_set["sha256"]), family)

    return train_local(training_set)
