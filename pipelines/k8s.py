"""The Kubernetes pod that runs the training entrypoint on a GPU node in the data's region."""

from __future__ import annotations

from typing import Any

from pipelines import residency
from pipelines.spec import UseCaseSpec
from pipelines.training import train_command

TRAINING_IMAGE = "falaj/train:0.1.0-cuda"
GPU_FAMILIES = {"pytorch_mlp"}


def training_pod(
    spec: UseCaseSpec,
    family: str,
    training_set_uri: str,
    output_uri: str,
    *,
    image: str = TRAINING_IMAGE,
    namespace: str = "falaj-training",
) -> Any:
    """A ``V1Pod`` for one training run; GPU families get a GPU, tolerations and a GPU node pool."""
    from kubernetes.client import models as k8s

    residency.require(spec.region, f"training pod {spec.name}/{family}")  # before it can be scheduled

    params = spec.model_params(family)
    gpu = family in GPU_FAMILIES
    limits = {"cpu": "4", "memory": "16Gi", **({"nvidia.com/gpu": "1"} if gpu else {})}
    container = k8s.V1Container(
        name="base",  # the name KubernetesPodOperator expects for the main container
        image=image,
        command=train_command(training_set_uri, family, params, output_uri),
        env=[
            k8s.V1EnvVar(name="FALAJ_PROFILE", value="prod"),
            k8s.V1EnvVar(
                name="FALAJ_DATABASE_URL",
                value_from=k8s.V1EnvVarSource(
                    secret_key_ref=k8s.V1SecretKeySelector(name="falaj-platform-db", key="url")
                ),
            ),
        ],
        resources=k8s.V1ResourceRequirements(requests={"cpu": "2", "memory": "8Gi"}, limits=limits),
        security_context=k8s.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=10001,
            read_only_root_filesystem=True,
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
        # A private emptyDir: the only writable path under a read-only root.
        volume_mounts=[k8s.V1VolumeMount(name="scratch", mount_path="/tmp")],  # noqa: S108
        termination_message_policy="FallbackToLogsOnError",
    )
    region_affinity = k8s.V1Affinity(
        node_affinity=k8s.V1NodeAffinity(
            required_during_scheduling_ignored_during_execution=k8s.V1NodeSelector(
                node_selector_terms=[
                    k8s.V1NodeSelectorTerm(
                        match_expressions=[
                            k8s.V1NodeSelectorRequirement(
                                key="topology.kubernetes.io/region", operator="In", values=[spec.region]
                            )
                        ]
                    )
                ]
            )
        )
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            generate_name=f"train-{spec.name}-{family.replace('_', '-')}-",
            namespace=namespace,
            labels={
                "app.kubernetes.io/part-of": "falaj",
                "falaj/use-case": spec.name,
                "falaj/family": family,
            },
        ),
        spec=k8s.V1PodSpec(
            containers=[container],
            restart_policy="Never",
            service_account_name="falaj-training",
            automount_service_account_token=False,
            security_context=k8s.V1PodSecurityContext(
                run_as_non_root=True,
                fs_group=10001,
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            ),
            node_selector={"falaj/pool": "gpu"} if gpu else {"falaj/pool": "cpu"},
            tolerations=[k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
            if gpu
            else [],
            affinity=region_affinity,
            volumes=[k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="20Gi"))],
        ),
    )
