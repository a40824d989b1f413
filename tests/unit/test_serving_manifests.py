"""The scorer's image and Kubernetes manifests: valid API objects that agree with each other and the platform.

No cluster here: every manifest is checked against the Kubernetes client's API models, field by field (the
client itself ignores unknown fields, so a misspelled probe would otherwise pass), and then for the facts
a deployment depends on: the autoscaler, Service, budget and policy find the pods; probes, ports and the
image agree; the pods are locked down, sized, pinned to the residency regions and get their secrets by
reference, mounted where the platform's code looks for them.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.settings import PROJECT_DIR, Settings, get_settings

K8S_DIR = PROJECT_DIR / "docker" / "k8s"
DOCKERFILE = PROJECT_DIR / "docker" / "Dockerfile.serve"
RESIDENCY = PROJECT_DIR / "policies" / "residency.yaml"
KUSTOMIZATION = "kustomization.yaml"
APP_LABEL = "app.kubernetes.io/name"
APP = "falaj-scorer"

# Connection strings and credentials: never an inline value, in the pod's env or in the ConfigMap.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|URL|DSN|CONNECTION|CREDENTIAL", re.IGNORECASE)
CREDENTIAL_VALUE = re.compile(
    r"://[^/\s@]*:[^/\s@]+@|password\s*=|passwd\s*=|-----BEGIN|\bfk_[0-9a-f]{16}_", re.IGNORECASE
)
# Read from a Secret, always.
SECRET_ENV = ("FALAJ_DATABASE_URL", "FALAJ_FEAST_REGISTRY_URL", "FALAJ_REDIS_CONNECTION")
# FALAJ_* variables that are not fields of pipelines.settings.Settings, and who reads them.
NON_SETTINGS_ENV = {
    "FALAJ_USER": "pipelines/authz.py",
    "FALAJ_SERVE_SSL_CERTFILE": "docker/Dockerfile.serve's entrypoint",
    "FALAJ_SERVE_SSL_KEYFILE": "docker/Dockerfile.serve's entrypoint",
}


# --- loading ------------------------------------------------------------------------------------------------


def _manifest_files() -> list[Path]:
    return sorted(path for path in K8S_DIR.glob("*.y*ml") if path.name != KUSTOMIZATION)


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    """Every object of the folder by kind (each kind appears once)."""
    found: dict[str, dict[str, Any]] = {}
    for path in _manifest_files():
        for doc in _documents(path):
            assert doc["kind"] not in found, f"{path.name}: a second {doc['kind']}"
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def deployment(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return objects["Deployment"]


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"])


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (scorer,) = pod["containers"]
    return dict(scorer)


@pytest.fixture(scope="module")
def config(objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    return dict(objects["ConfigMap"]["data"])


def _all_containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers") or []
    yield from pod["containers"]


def _container_port(container: dict[str, Any], port: int | str) -> int:
    """The number a probe's or Service's port (a name or a number) reaches in the container."""
    by_name = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    number = by_name[port] if isinstance(port, str) else port
    assert number in {p["containerPort"] for p in container["ports"]}, f"port {port} is not declared"
    return int(number)


# --- strict validation against the API models ---------------------------------------------------------------


def _model_name(api_version: str, kind: str) -> str:
    """``apps/v1`` + ``Deployment`` -> ``V1Deployment``; ``autoscaling/v2`` + ``HPA`` -> ``V2HPA``."""
    return api_version.rsplit("/", 1)[-1].capitalize() + kind


def _api_errors(value: Any, type_name: str, where: str) -> list[str]:
    """Each field of ``value`` that model ``type_name`` lacks or types otherwise (the client never says)."""
    from kubernetes.client import models

    if value is None or type_name == "object":  # null is any optional field's JSON; int-or-string is "object"
        return []
    if match := re.fullmatch(r"list\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [err for i, item in enumerate(value) for err in _api_errors(item, match[1], f"{where}[{i}]")]
    if match := re.fullmatch(r"dict[\[(]str, (.+)[\])]", type_name):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {value!r}"]
        return [err for key, item in value.items() for err in _api_errors(item, match[1], f"{where}.{key}")]
    primitives: dict[str, type | tuple[type, ...]] = {
        "str": str,
        "int": int,
        "float": (int, float),
        "bool": bool,
        "datetime": str,
        "date": str,
    }
    if type_name in primitives:
        ok = isinstance(value, primitives[type_name]) and not (
            type_name in ("int", "float") and isinstance(value, bool)
        )
        return [] if ok else [f"{where}: expected {type_name}, got {value!r}"]
    model = getattr(models, type_name)
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} mapping, got {value!r}"]
    attribute_of = {json_key: attribute for attribute, json_key in model.attribute_map.items()}
    errors = [f"{where}.{key}: no such field in {type_name}" for key in value if key not in attribute_of]
    for key, item in value.items():
        if key in attribute_of:
            errors += _api_errors(item, model.openapi_types[attribute_of[key]], f"{where}.{key}")
    return errors


def _validate(doc: dict[str, Any], where: str) -> list[str]:
    """Strict field check, then the client's own deserialization (required fields, e.g. a container name)."""
    from kubernetes.client import ApiClient

    class _Response:  # what ApiClient.deserialize reads: a body as the API server would send it
        data = json.dumps(doc)

    model_name = _model_name(doc["apiVersion"], doc["kind"])
    errors = _api_errors(doc, model_name, where)
    try:
        obj = ApiClient().deserialize(_Response(), model_name)
    except (ValueError, TypeError) as bad:
        return [*errors, f"{where}: {bad}"]
    if type(obj).__name__ != model_name:
        errors.append(f"{where}: deserialized as {type(obj).__name__}")
    return errors


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda path: path.name)
def test_every_manifest_is_a_valid_kubernetes_object(path: Path) -> None:
    # Given one manifest file
    docs = _documents(path)

    # Then it holds objects, each one exactly as the API models define it
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        assert _validate(doc, f"{path.name}:{doc.get('kind')}") == []
        assert doc["metadata"].get("name")
        assert "namespace" not in doc["metadata"], "kustomization.yaml sets the namespace for all"


def test_the_strict_check_catches_what_the_client_lets_through() -> None:
    # Given a Deployment with a misspelled probe, a boolean annotation and a number where a list belongs
    broken = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x", "annotations": {"prometheus.io/scrape": True}},
        "spec": {
            "selector": {"matchLabels": {APP_LABEL: APP}},
            "template": {
                "metadata": {"labels": {APP_LABEL: APP}},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "i", "readinessprobe": {}, "args": 5},
                    ]
                },
            },
        },
    }

    # When it is checked
    errors = _validate(broken, "broken")

    # Then each mistake is named with its path
    assert any("readinessprobe: no such field in V1Container" in error for error in errors)
    assert any("annotations.prometheus.io/scrape: expected str" in error for error in errors)
    assert any("args: expected a list" in error for error in errors)
    # And a missing required field (a container's name) fails the client's own deserialization
    nameless = json.loads(json.dumps(broken))
    nameless["metadata"].pop("annotations")
    nameless["spec"]["template"]["spec"]["containers"] = [{"image": "i"}]
    assert _api_errors(nameless, "V1Deployment", "nameless") == []
    assert any("`name`, must not be `None`" in error for error in _validate(nameless, "nameless"))


# --- the folder as one deployable unit ----------------------------------------------------------------------


def test_kustomization_lists_every_manifest_in_the_folder(objects: dict[str, dict[str, Any]]) -> None:
    # Given the kustomization
    (kustomization,) = _documents(K8S_DIR / KUSTOMIZATION)

    # Then it applies every manifest file, and no file that is not there
    assert sorted(kustomization["resources"]) == [path.name for path in _manifest_files()]
    # And it puts them in the namespace the folder defines, and sets the Deployment's image
    assert kustomization["namespace"] == objects["Namespace"]["metadata"]["name"]
    image = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] in {entry["name"] for entry in kustomization["images"]}


def test_one_app_label_names_every_object_and_selects_the_pods(objects: dict[str, dict[str, Any]]) -> None:
    # Given the Deployment's selector and its pods' labels
    deployment = objects["Deployment"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    # Then the selector is the one app label, and the pods carry it
    assert selector == {APP_LABEL: APP}
    assert selector.items() <= pod_labels.items()
    # And every namespaced object carries it too
    for kind, obj in objects.items():
        if kind != "Namespace":
            assert obj["metadata"]["labels"][APP_LABEL] == APP, kind
    # And the Service, the budget, the network policy and the spread constraints select those same pods
    assert objects["Service"]["spec"]["selector"] == selector
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == selector
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)


def test_autoscaler_scales_the_deployment_on_cpu(objects: dict[str, dict[str, Any]]) -> None:
    # Given the autoscaler, the Deployment and the disruption budget
    hpa, deployment = objects["HorizontalPodAutoscaler"]["spec"], objects["Deployment"]
    budget = objects["PodDisruptionBudget"]["spec"]

    # Then it targets that Deployment by kind, API group and name
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    # And scales between 2 and 10 on CPU around 70% of the request, starting from the Deployment's count
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert deployment["spec"]["replicas"] == hpa["minReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # And scales down only after a stabilization window
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    # And the budget leaves room to evict: a drain never blocks at the minimum count
    assert budget["minAvailable"] == 1
    assert budget["minAvailable"] < hpa["minReplicas"]


def test_service_reaches_the_container_port(
    objects: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    # Given the Service
    service = objects["Service"]["spec"]

    # Then it is cluster-internal HTTPS on 443, landing on the scorer's port 3000
    assert service["type"] == "ClusterIP"
    (port,) = service["ports"]
    assert (port["name"], port["port"], port.get("protocol", "TCP")) == ("https", 443, "TCP")
    assert _container_port(container, port["targetPort"]) == 3000


def test_probes_hit_bentoml_health_routes_on_the_container_port(
    container: dict[str, Any], config: dict[str, str]
) -> None:
    # Given the three probes
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "readiness", "liveness")}

    # Then readiness asks /readyz, liveness and startup ask /livez, all on the serving port
    assert probes["readiness"]["path"] == "/readyz"
    assert probes["liveness"]["path"] == "/livez"
    assert probes["startup"]["path"] == "/livez"
    assert {_container_port(container, probe["port"]) for probe in probes.values()} == {3000}
    # And over HTTPS, because the pods are given a certificate to serve with
    assert config["FALAJ_SERVE_SSL_CERTFILE"] and config["FALAJ_SERVE_SSL_KEYFILE"]
    assert {probe["scheme"] for probe in probes.values()} == {"HTTPS"}
    # And startup allows a minute or more for loading the model before liveness can restart the pod
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    liveness = container["livenessProbe"]
    assert liveness["timeoutSeconds"] < liveness["periodSeconds"]


def test_every_container_has_cpu_and_memory_requests_and_limits(pod: dict[str, Any]) -> None:
    from kubernetes.utils import parse_quantity

    for each in _all_containers(pod):
        # Given a container's resources
        requests, limits = each["resources"]["requests"], each["resources"]["limits"]

        # Then CPU and memory are both requested and capped, the request within the cap
        for resource in ("cpu", "memory"):
            assert parse_quantity(requests[resource]) > 0, (each["name"], resource)
            assert parse_quantity(requests[resource]) <= parse_quantity(limits[resource]), each["name"]
        # And a scorer is a small pod: one worker, one ONNX Runtime thread, at most one core
        assert parse_quantity(limits["cpu"]) <= 1


def test_pods_run_locked_down(pod: dict[str, Any]) -> None:
    # Given the pod's security settings
    pod_security = pod["securityContext"]

    # Then the pod runs as a non-root user under the runtime's seccomp profile, with no API token
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for each in _all_containers(pod):
        # And every container cannot write its root filesystem, escalate, or keep a capability
        security = each["securityContext"]
        assert security["runAsNonRoot"] is True, each["name"]
        assert security.get("runAsUser", pod_security["runAsUser"]) != 0
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security.get("privileged", False) is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert not security["capabilities"].get("add")


def test_pods_are_pinned_to_the_residency_regions(pod: dict[str, Any], config: dict[str, str]) -> None:
    # Given the regions policies/residency.yaml allows
    allowed = yaml.safe_load(RESIDENCY.read_text())["allowed_regions"]

    # Then scheduling requires (not prefers) a node in exactly those regions
    node_affinity = pod["affinity"]["nodeAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in node_affinity
    terms = node_affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    requirements = [req for term in terms for req in term["matchExpressions"]]
    region = [req for req in requirements if req["key"] == "topology.kubernetes.io/region"]
    assert len(region) == len(terms) == 1  # one term: terms are ORed, a second could escape the region
    assert region[0]["operator"] == "In"
    assert sorted(region[0]["values"]) == sorted(allowed)
    # And the storage region the service declares is one of them
    assert config["FALAJ_STORAGE_REGION"] in allowed


def test_no_credential_is_written_into_the_manifests(
    objects: dict[str, dict[str, Any]], pod: dict[str, Any], config: dict[str, str]
) -> None:
    # Given every inline setting: container env values and the ConfigMap's data
    inline = [
        (var["name"], var["value"])
        for c in _all_containers(pod)
        for var in c.get("env", [])
        if "value" in var
    ]
    inline += list(config.items())

    # Then none looks like a credential, and a credential-like name holds at most a file path
    for name, value in inline:
        assert not CREDENTIAL_VALUE.search(str(value)), name
        if SECRET_NAME.search(name):
            assert str(value).startswith("/") and "://" not in str(value), f"{name} is inline: {value!r}"
    # And the connection strings come from Secrets, by reference
    env = {var["name"]: var for c in _all_containers(pod) for var in c.get("env", [])}
    for name in SECRET_ENV:
        assert name not in config
        assert set(env[name]) == {"name", "valueFrom"}, name
        assert set(env[name]["valueFrom"]["secretKeyRef"]) == {"name", "key"}, name
    assert env["FALAJ_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "falaj-platform-db",
        "key": "url",
    }
    # And the folder defines no Secret, so none can carry a value
    assert "Secret" not in objects


def test_configmap_is_a_valid_prod_settings_object(
    config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the ConfigMap's FALAJ_* variables
    falaj = {name: value for name, value in config.items() if name.startswith("FALAJ_")}

    # Then each is a setting pipelines/settings.py reads, or one a named reader takes
    fields = {f"FALAJ_{name.upper()}" for name in Settings.model_fields}
    assert {name for name in falaj if name not in fields} <= set(NON_SETTINGS_ENV)
    assert set(SECRET_ENV) <= fields
    # And together they make the prod profile, TLS required and verified against the mounted CA
    for name, value in falaj.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.profile == "prod"
    assert settings.tls_required is True
    assert str(settings.tls_ca_file) == config["FALAJ_TLS_CA_FILE"]


def test_key_store_signing_key_and_tls_files_are_mounted_where_the_code_looks(
    pod: dict[str, Any], container: dict[str, Any], config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import crypto, keys, signing

    # Given the paths the platform's code derives from the ConfigMap's FALAJ_HOME
    monkeypatch.setenv("FALAJ_HOME", config["FALAJ_HOME"])
    get_settings.cache_clear()
    try:
        kms_dir = crypto.LocalKeyProvider().root
        public_key = keys.public_key_path(signing.PURPOSE)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}

    # Then the key store is the falaj-kms Secret and the signing public key comes from a Secret, read-only
    kms = mounts[str(kms_dir)]
    assert volumes[kms["name"]]["secret"]["secretName"] == "falaj-kms"
    signing_mount = mounts[str(public_key)]
    signing_items = volumes[signing_mount["name"]]["secret"]["items"]
    assert signing_mount["subPath"] in {item["path"] for item in signing_items}
    # And the CA, the serving certificate and its key are files inside read-only mounts
    for setting in ("FALAJ_TLS_CA_FILE", "FALAJ_SERVE_SSL_CERTFILE", "FALAJ_SERVE_SSL_KEYFILE"):
        path = Path(config[setting])
        assert str(path.parent) in mounts, setting
        assert mounts[str(path.parent)].get("readOnly") is True, setting
    tls_volume = volumes[mounts[str(Path(config["FALAJ_SERVE_SSL_CERTFILE"]).parent)]["name"]]
    assert tls_volume["secret"]["secretName"] == "falaj-scorer-tls"
    # And every Secret or ConfigMap mount is read-only; only emptyDirs are writable, /tmp among them
    for mount in mounts.values():
        volume = volumes[mount["name"]]
        if "secret" in volume or "configMap" in volume:
            assert mount.get("readOnly") is True, mount["mountPath"]
        else:
            assert "emptyDir" in volume, mount["name"]
            assert volume["emptyDir"].get("sizeLimit"), mount["name"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert "emptyDir" in volumes[mounts[config["FALAJ_HOME"]]["name"]]


def test_pods_drain_before_they_stop(
    deployment: dict[str, Any], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    # Given the rollout strategy, the pre-stop hook and the server's graceful shutdown
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    args = container["args"]
    graceful = int(args[args.index("--timeout-graceful-shutdown") + 1])

    # Then a rollout never removes a pod before its replacement is ready
    assert rolling["maxUnavailable"] == 0
    assert rolling["maxSurge"] >= 1
    # And a stopping pod first waits for routing to stop, then drains, all within its grace period
    assert pre_stop[0] == "sleep"
    assert int(pre_stop[1]) > 0
    assert int(pre_stop[1]) + graceful < pod["terminationGracePeriodSeconds"]


def test_network_policy_allows_only_the_serving_port_in_and_dns_postgres_redis_out(
    objects: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    # Given the scorer's network policy
    policy = objects["NetworkPolicy"]["spec"]

    # Then it governs both directions
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    # And lets traffic in only to the serving port
    ingress = {(p.get("protocol", "TCP"), p["port"]) for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress == {("TCP", _container_port(container, "https"))}
    # And out only to DNS, PostgreSQL and Redis, every rule naming its ports
    assert all(rule.get("ports") for rule in policy["egress"])
    egress = {(p.get("protocol", "TCP"), p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 6379)}


# --- the image ----------------------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [
        (text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in logical
    ]


def test_image_runs_as_the_pods_user_and_exposes_their_port(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    # Given the serving Dockerfile
    instructions = _instructions(DOCKERFILE)
    user = [args for name, args in instructions if name == "USER"][-1]
    exposed = {
        int(port.split("/")[0]) for name, args in instructions if name == "EXPOSE" for port in args.split()
    }

    # Then its final user is the numeric, non-root uid the pods run as
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert int(uid) == pod["securityContext"]["runAsUser"] == container["securityContext"]["runAsUser"]
    # And it exposes the port the manifests use
    assert _container_port(container, "https") in exposed
    # And it checks its own health on the liveness route
    (healthcheck,) = [args for name, args in instructions if name == "HEALTHCHECK"]
    assert "/livez" in healthcheck


def test_image_base_is_pinned_and_carries_no_secret() -> None:
    # Given the Dockerfile's stages and environment
    instructions = _instructions(DOCKERFILE)
    bases = [args.split()[0] for name, args in instructions if name == "FROM"]
    env_names = [
        word.split("=", 1)[0]
        for name, args in instructions
        if name in ("ENV", "ARG")
        for word in shlex.split(args)
    ]

    # Then every base image is pinned to an exact version (major.minor.patch) or a digest
    for base in bases:
        assert "@sha256:" in base or re.search(r":\d+\.\d+\.\d+", base), base
    # And no credential is set in it: those arrive at run time
    assert not [
        name for name in env_names if re.search(r"PASSWORD|SECRET|TOKEN|DATABASE_URL|CONNECTION", name)
    ]
    assert not CREDENTIAL_VALUE.search(DOCKERFILE.read_text())
    assert not [args for name, args in instructions if name in ("COPY", "ADD") and "secrets" in args]


def _entrypoint_argv(tmp_path: Path, env: dict[str, str], args: list[str]) -> list[str]:
    """What the image's ENTRYPOINT runs `bentoml` with, given the container's env and args (CMD)."""
    instructions = _instructions(DOCKERFILE)
    (entrypoint,) = [json.loads(args) for name, args in instructions if name == "ENTRYPOINT"]
    fake = tmp_path / "bin" / "bentoml"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    base = {"PATH": f"{fake.parent}:/usr/bin:/bin", "BENTO_PATH": "/opt/bento"}
    result = subprocess.run(
        [*entrypoint, *args], env={**base, **env}, capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def test_entrypoint_serves_https_with_the_mounted_certificate_and_passes_the_pods_args(
    tmp_path: Path, container: dict[str, Any], config: dict[str, str]
) -> None:
    # Given the image's entrypoint run with the ConfigMap's environment and the container's args
    tls = {name: config[name] for name in ("FALAJ_SERVE_SSL_CERTFILE", "FALAJ_SERVE_SSL_KEYFILE")}
    argv = _entrypoint_argv(tmp_path, tls, container["args"])

    # Then it serves the Bento on the container's port with the certificate and key, plus the pod's args
    assert argv[:2] == ["serve", "/opt/bento"]
    assert int(argv[argv.index("--port") + 1]) == _container_port(container, "https")
    assert argv[argv.index("--ssl-certfile") + 1] == config["FALAJ_SERVE_SSL_CERTFILE"]
    assert argv[argv.index("--ssl-keyfile") + 1] == config["FALAJ_SERVE_SSL_KEYFILE"]
    assert argv[-len(container["args"]) :] == container["args"]


def test_entrypoint_serves_plain_http_without_a_certificate(tmp_path: Path) -> None:
    # Given the entrypoint run without the TLS settings (`docker run` on a laptop)
    argv = _entrypoint_argv(tmp_path, {}, [])

    # Then it serves without TLS flags, and nothing else changes
    # (0.0.0.0 inside the container: the pod's network namespace is the boundary, the Service the door)
    assert argv == ["serve", "/opt/bento", "--host", "0.0.0.0", "--port", "3000"]  # noqa: S104
