"""The training pod: GPU only where the family needs one, pinned to the data's region, locked down."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipelines.k8s import TRAINING_IMAGE, training_pod
from pipelines.spec import UseCaseSpec

TRAINING_SET = "/lake/training_sets/fraud/0123456789abcdef"
OUTPUT = "/artifacts/models/fraud/0123456789abcdef/pytorch_mlp"


def _as_dict(pod: Any) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    return dict(ApiClient().sanitize_for_serialization(pod))


@pytest.fixture
def gpu_pod(fraud_spec: UseCaseSpec) -> Any:
    return training_pod(fraud_spec, "pytorch_mlp", TRAINING_SET, OUTPUT)


def test_gpu_family_gets_one_gpu_its_toleration_and_the_gpu_pool(gpu_pod: Any) -> None:
    # Given the PyTorch MLP pod
    container = gpu_pod.spec.containers[0]

    # Then it asks for exactly one GPU, tolerates the GPU taint and lands on the GPU pool
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert [(t.key, t.operator, t.effect) for t in gpu_pod.spec.tolerations] == [
        ("nvidia.com/gpu", "Exists", "NoSchedule")
    ]
    assert gpu_pod.spec.node_selector == {"falaj/pool": "gpu"}
    assert container.image == TRAINING_IMAGE


def test_pod_is_pinned_to_the_spec_region(fraud_spec: UseCaseSpec, gpu_pod: Any) -> None:
    # Given the pod of a use case whose data lives in ae-dubai-1
    # Then scheduling requires (not prefers) a node in that region
    node_affinity = gpu_pod.spec.affinity.node_affinity
    assert node_affinity.preferred_during_scheduling_ignored_during_execution is None
    terms = node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
    requirements = [(r.key, r.operator, r.values) for term in terms for r in term.match_expressions]
    assert requirements == [("topology.kubernetes.io/region", "In", [fraud_spec.region])]
    assert fraud_spec.region == "ae-dubai-1"


def test_region_follows_the_spec(fraud_spec: UseCaseSpec) -> None:
    # Given the same use case declared in another region
    elsewhere = fraud_spec.model_copy(update={"region": "ae-abudhabi-1"})

    # When its pod is built
    pod = training_pod(elsewhere, "lightgbm", TRAINING_SET, OUTPUT)

    # Then the affinity names that region, not a hard-coded one
    required = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    terms = required.node_selector_terms
    assert terms[0].match_expressions[0].values == ["ae-abudhabi-1"]


def test_container_runs_locked_down(gpu_pod: Any) -> None:
    # Given the training container and its pod
    security = gpu_pod.spec.containers[0].security_context

    # Then it runs as a non-root user, cannot write its root filesystem, escalate, or keep any capability
    assert security.run_as_non_root is True
    assert security.run_as_user not in (None, 0)
    assert security.read_only_root_filesystem is True
    assert security.allow_privilege_escalation is False
    assert security.capabilities.drop == ["ALL"]
    assert not security.capabilities.add
    assert security.privileged in (None, False)
    assert gpu_pod.spec.security_context.run_as_non_root is True
    assert gpu_pod.spec.automount_service_account_token is False
    # And the only writable path is the scratch volume mounted where Python writes temporaries
    assert [(m.name, m.mount_path) for m in gpu_pod.spec.containers[0].volume_mounts] == [("scratch", "/tmp")]


def test_database_url_comes_from_a_secret_never_a_literal(gpu_pod: Any) -> None:
    # Given the container's environment
    env = {var.name: var for var in gpu_pod.spec.containers[0].env}

    # Then the platform DB URL is a secret reference and the profile is prod
    url = env["FALAJ_DATABASE_URL"]
    assert url.value is None
    assert url.value_from.secret_key_ref.name == "falaj-platform-db"
    assert url.value_from.secret_key_ref.key == "url"
    assert env["FALAJ_PROFILE"].value == "prod"


def test_command_is_the_one_training_entrypoint(fraud_spec: UseCaseSpec, gpu_pod: Any) -> None:
    # Given the PyTorch MLP pod
    command = gpu_pod.spec.containers[0].command

    # Then it runs `python -m models.train` with the given training set, family, the spec's params and output
    assert command[:3] == ["python", "-m", "models.train"]
    args = dict(zip(command[3::2], command[4::2], strict=True))
    assert args["--training-set"] == TRAINING_SET
    assert args["--output"] == OUTPUT
    assert args["--family"] == "pytorch_mlp"
    params = next(model.params for model in fraud_spec.models if model.family == "pytorch_mlp")
    assert json.loads(args["--params"]) == params


def test_cpu_family_gets_no_gpu(fraud_spec: UseCaseSpec) -> None:
    # Given the LightGBM pod
    pod = training_pod(fraud_spec, "lightgbm", TRAINING_SET, OUTPUT)
    container = pod.spec.containers[0]

    # Then it neither requests nor tolerates a GPU and goes to the CPU pool, still pinned and locked down
    assert "nvidia.com/gpu" not in container.resources.limits
    assert "nvidia.com/gpu" not in (container.resources.requests or {})
    assert not pod.spec.tolerations
    assert pod.spec.node_selector == {"falaj/pool": "cpu"}
    assert pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution is not None
    assert container.security_context.capabilities.drop == ["ALL"]
    assert "--family" in container.command and "lightgbm" in container.command


def test_serialized_gpu_pod_is_what_the_api_server_receives(fraud_spec: UseCaseSpec, gpu_pod: Any) -> None:
    # Given the pod serialized as the Kubernetes client would send it
    pod = _as_dict(gpu_pod)
    spec = pod["spec"]
    container = spec["containers"][0]

    # Then the camelCase manifest carries the same guarantees
    assert container["name"] == "base"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["nodeSelector"] == {"falaj/pool": "gpu"}
    required = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "topology.kubernetes.io/region", "operator": "In", "values": [fraud_spec.region]}
            ]
        }
    ]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    env = {var["name"]: var for var in container["env"]}
    assert env["FALAJ_DATABASE_URL"] == {
        "name": "FALAJ_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "falaj-platform-db", "key": "url"}},
    }
    assert container["command"][:3] == ["python", "-m", "models.train"]
    assert TRAINING_SET in container["command"] and OUTPUT in container["command"]
    assert spec["restartPolicy"] == "Never"
    assert pod["metadata"]["labels"]["falaj/use-case"] == "fraud"
    assert pod["metadata"]["generateName"].startswith("train-fraud-pytorch-mlp-")
    # And no environment variable carries a literal connection string
    assert not [var for var in container["env"] if "://" in str(var.get("value", ""))]


def test_serialized_cpu_pod_has_no_gpu_anywhere(fraud_spec: UseCaseSpec) -> None:
    # Given the LightGBM pod serialized
    pod = _as_dict(training_pod(fraud_spec, "lightgbm", TRAINING_SET, OUTPUT))

    # Then no GPU resource, toleration or pool appears in it
    text = json.dumps(pod)
    assert "nvidia.com/gpu" not in text
    assert pod["spec"]["nodeSelector"] == {"falaj/pool": "cpu"}
