"""The Kubernetes backend: the pod KubernetesPodOperator would create for the one training entrypoint.

No cluster runs here, so the operator renders its pod and the Kubernetes client's models validate it.
"""

from __future__ import annotations

from typing import Any

import pytest

TRAINING_SET = {"uri": "s3://falaj-lake/training_sets/fraud/abc", "sha256": "f" * 64}


class XComFromBuild:
    """What a finished `build_training_set` task would have pushed."""

    def xcom_pull(self, task_ids: str) -> dict[str, str]:
        assert task_ids == "build_training_set"
        return TRAINING_SET


@pytest.fixture
def rendered_pod(dag_env: dict[str, str]) -> Any:
    from falaj_airflow.training import kubernetes_train_operator
    from kubernetes.client import ApiClient

    from pipelines.spec import load_spec

    def render(family: str) -> dict[str, Any]:
        operator = kubernetes_train_operator(load_spec("fraud"), family)
        context: Any = {"ti": XComFromBuild()}
        operator.render_template_fields(context)
        pod = operator.build_pod_request_obj(dry_run=True)  # no cluster: skip the in-cluster probe
        return dict(ApiClient().sanitize_for_serialization(pod))

    return render


def test_gpu_pod_runs_the_training_entrypoint(rendered_pod: Any) -> None:
    pod = rendered_pod("pytorch_mlp")
    container = pod["spec"]["containers"][0]
    argv = container["command"] + container["args"]
    assert argv[:3] == ["python", "-m", "models.train"]
    assert argv[argv.index("--training-set") + 1] == TRAINING_SET["uri"]
    assert argv[argv.index("--family") + 1] == "pytorch_mlp"
    assert argv[argv.index("--output") + 1].endswith(f"/models/fraud/{'f' * 16}/pytorch_mlp")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    assert pod["spec"]["nodeSelector"] == {"falaj/pool": "gpu"}


def test_pod_is_locked_down_and_pinned_to_the_region(rendered_pod: Any) -> None:
    pod = rendered_pod("pytorch_mlp")
    container = pod["spec"]["containers"][0]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expression = terms["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expression == {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["ae-dubai-1"]}
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert secret_env["FALAJ_DATABASE_URL"] == {"name": "falaj-platform-db", "key": "url"}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_cpu_family_gets_no_gpu(rendered_pod: Any) -> None:
    pod = rendered_pod("lightgbm")
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits
    assert not pod["spec"].get("tolerations")


@pytest.mark.parametrize(
    ("profile", "override", "expected"),
    [("local", None, "_PythonDecoratedOperator"), ("prod", None, "KubernetesPodOperator"),
     ("prod", "local", "_PythonDecoratedOperator"), ("local", "kubernetes", "KubernetesPodOperator")],
)  # fmt: skip
def test_backend_follows_the_spec_per_profile_unless_overridden(
    dag_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    profile: str,
    override: str | None,
    expected: str,
) -> None:
    from airflow.sdk import DAG
    from falaj_airflow.training import train_task

    from pipelines.settings import get_settings
    from pipelines.spec import load_spec

    monkeypatch.setenv("FALAJ_PROFILE", profile)
    if override:
        monkeypatch.setenv("FALAJ_TRAINING_BACKEND", override)
    else:
        monkeypatch.delenv("FALAJ_TRAINING_BACKEND", raising=False)
    get_settings.cache_clear()
    try:
        with DAG("backend_probe", schedule=None):
            task = train_task(load_spec("fraud"), "lightgbm", TRAINING_SET)
    finally:
        get_settings.cache_clear()
    operator = getattr(task, "operator", task)
    assert type(operator).__name__ == expected


def test_pod_validates_as_a_kubernetes_model_and_is_always_cleaned_up(
    rendered_pod: Any, dag_env: dict[str, str]
) -> None:
    from falaj_airflow.training import kubernetes_train_operator
    from kubernetes.client import ApiClient, V1Pod

    from pipelines.spec import load_spec

    pod = rendered_pod("pytorch_mlp")
    # The client's models check required fields and types as they are built from the manifest.
    model = ApiClient()._ApiClient__deserialize(pod, "V1Pod")  # type: ignore[attr-defined]
    assert isinstance(model, V1Pod) and model.spec.containers[0].resources.requests == {
        "cpu": "2",
        "memory": "8Gi",
    }
    operator = kubernetes_train_operator(load_spec("fraud"), "pytorch_mlp")
    assert operator.on_finish_action.value == "delete_pod"  # succeeded or failed, the pod goes
