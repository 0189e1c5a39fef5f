"""The Kubernetes manifests in deploy/k8s, checked without a cluster: what a broken manifest would only show
at `kubectl apply` time, or worse, in a running worker.

Each check is a function returning the problems it finds; every test runs it on the real manifests (no
problems) and on a copy broken the way a person would break it (the problem is named)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import reference_table

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
SETTING_NAME = re.compile(r"PACKWISE_[A-Z0-9_]+")

Manifest = dict[str, Any]


def load(folder: Path = K8S) -> dict[str, list[Manifest]]:
    """Every YAML document under `folder`, by file name (kustomization.yaml included)."""
    return {path.name: [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
            for path in sorted(folder.glob("*.yaml"))}


def resources(manifests: dict[str, list[Manifest]]) -> list[Manifest]:
    return [doc for name, docs in manifests.items() if name != "kustomization.yaml" for doc in docs]


def one(manifests: dict[str, list[Manifest]], kind: str, name: str | None = None) -> Manifest:
    found = [d for d in resources(manifests) if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def worker(manifests: dict[str, list[Manifest]]) -> Manifest:
    return one(manifests, "StatefulSet", "packwise-worker")


def container(statefulset: Manifest) -> Manifest:
    return statefulset["spec"]["template"]["spec"]["containers"][0]


def settings_map(manifests: dict[str, list[Manifest]]) -> dict[str, str]:
    return one(manifests, "ConfigMap", "packwise-settings")["data"]


@pytest.fixture
def manifests() -> dict[str, list[Manifest]]:
    return load()


# -- checks ---------------------------------------------------------------------------------------------


def kustomization_problems(kustomization: Manifest, files: set[str]) -> list[str]:
    listed = kustomization.get("resources", [])
    present = files - {"kustomization.yaml"}
    return ([f"{name} is listed in kustomization.yaml but missing" for name in sorted(set(listed) - present)]
            + [f"{name} is not listed in kustomization.yaml" for name in sorted(present - set(listed))]
            + [f"{name} is listed twice" for name in sorted({n for n in listed if listed.count(n) > 1})])


def unknown_settings(texts: dict[str, str]) -> list[str]:
    known = {name for name, _, _ in reference_table()}
    return [f"{file}: {name} is not a packwise setting" for file, text in texts.items()
            for name in sorted(set(SETTING_NAME.findall(text)) - known)]


def worker_name_problems(statefulset: Manifest) -> list[str]:
    env = {e["name"]: e for e in container(statefulset).get("env", [])}
    source = env.get("PACKWISE_WORKER_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    return [] if source == "metadata.name" else [
        f"PACKWISE_WORKER_NAME comes from {source or 'nowhere'}, not the pod name (metadata.name): workers "
        "would share a state folder"]


def probe_problems(statefulset: Manifest) -> list[str]:
    c = container(statefulset)
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    problems = [] if "web" in ports else ["the container has no port named web"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        port = c.get(probe, {}).get("httpGet", {}).get("port")
        if probe != "startupProbe" and port is None:
            problems.append(f"{probe} is missing")
        elif port is not None and port not in ports:
            problems.append(f"{probe} probes port {port!r}, which the container does not declare")
    return problems


def replica_problems(statefulset: Manifest, settings: dict[str, str]) -> list[str]:
    replicas, partitions = statefulset["spec"]["replicas"], int(settings["PACKWISE_PARTITIONS"])
    return [] if replicas <= partitions else [
        f"{replicas} replicas but PACKWISE_PARTITIONS={partitions}: a worker beyond the partitions owns none"]


def selector_problems(manifests: dict[str, list[Manifest]]) -> list[str]:
    """Services and the PodDisruptionBudget must select the workers' pods, and the StatefulSet its own."""
    statefulset = worker(manifests)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    selectors = {f"StatefulSet {statefulset['metadata']['name']}": statefulset["spec"]["selector"]["matchLabels"]}
    for doc in resources(manifests):
        if doc["kind"] == "Service":
            selectors[f"Service {doc['metadata']['name']}"] = doc["spec"]["selector"]
        elif doc["kind"] == "PodDisruptionBudget":
            selectors[f"PodDisruptionBudget {doc['metadata']['name']}"] = doc["spec"]["selector"]["matchLabels"]
    return [f"{owner} selects {selector}, which the worker pods ({labels}) do not match"
            for owner, selector in selectors.items() if any(labels.get(k) != v for k, v in selector.items())]


def volume_problems(statefulset: Manifest, settings: dict[str, str]) -> list[str]:
    """RocksDB state on a per-pod claim at PACKWISE_STATE_DIR; the model bundle read-only under its mount."""
    mounts = {m["mountPath"]: m for m in container(statefulset).get("volumeMounts", [])}
    claims = {t["metadata"]["name"] for t in statefulset["spec"].get("volumeClaimTemplates", [])}
    problems = []
    state = mounts.get(settings["PACKWISE_STATE_DIR"])
    if state is None or state["name"] not in claims:
        problems.append(f"PACKWISE_STATE_DIR={settings['PACKWISE_STATE_DIR']} is not on a volumeClaimTemplate "
                        "(one volume per worker)")
    model = next((m for path, m in mounts.items() if settings["PACKWISE_MODEL_PATH"].startswith(path + "/")), None)
    if model is None or not model.get("readOnly"):
        problems.append(f"PACKWISE_MODEL_PATH={settings['PACKWISE_MODEL_PATH']} is not under a read-only mount")
    return problems


# -- the manifests --------------------------------------------------------------------------------------


def test_every_document_parses_and_is_named(manifests: dict[str, list[Manifest]]) -> None:
    docs = resources(manifests)
    assert {d["kind"] for d in docs} >= {"Namespace", "ConfigMap", "StatefulSet", "Service", "PodDisruptionBudget",
                                         "Job", "PersistentVolumeClaim"}
    assert all(d.get("apiVersion") and d.get("metadata", {}).get("name") for d in docs)
    assert one(manifests, "Namespace")["metadata"]["name"] == manifests["kustomization.yaml"][0]["namespace"]


def test_kustomization_lists_exactly_the_files_present(manifests: dict[str, list[Manifest]]) -> None:
    kustomization = manifests["kustomization.yaml"][0]
    assert kustomization_problems(kustomization, set(manifests)) == []
    assert kustomization_problems(kustomization, set(manifests) | {"forgotten.yaml"}) == [
        "forgotten.yaml is not listed in kustomization.yaml"]
    dropped = sorted(set(manifests) - {"kustomization.yaml"})[0]
    assert kustomization_problems(kustomization, set(manifests) - {dropped}) == [
        f"{dropped} is listed in kustomization.yaml but missing"]


def test_every_packwise_variable_is_a_real_setting() -> None:
    texts = {path.name: path.read_text(encoding="utf-8") for path in [*K8S.glob("*.yaml"), K8S / "README.md"]}
    assert unknown_settings(texts) == []
    assert sum(len(SETTING_NAME.findall(text)) for text in texts.values()) >= 10  # the check saw the names
    broken = {"configmap.yaml": texts["configmap.yaml"].replace("PACKWISE_STATE_DIR", "PACKWISE_STATEDIR")}
    assert unknown_settings(broken) == ["configmap.yaml: PACKWISE_STATEDIR is not a packwise setting"]


def test_configmap_values_are_accepted_by_the_settings_parser(manifests: dict[str, list[Manifest]]) -> None:
    from streams.errors import PackwiseError
    from streams.settings import Settings

    values = settings_map(manifests)
    settings = Settings.from_env(values)
    assert (settings.store, settings.web_host, settings.log_format) == ("rocksdb", "0.0.0.0", "json")
    with pytest.raises(PackwiseError, match="PACKWISE_STORE='RocksDB'"):
        Settings.from_env({**values, "PACKWISE_STORE": "RocksDB"})


def test_worker_name_is_the_pod_name(manifests: dict[str, list[Manifest]]) -> None:
    statefulset = worker(manifests)
    assert worker_name_problems(statefulset) == []
    broken = copy.deepcopy(statefulset)
    container(broken)["env"] = [{"name": "PACKWISE_WORKER_NAME", "value": "worker-0"}]
    assert worker_name_problems(broken) == [
        "PACKWISE_WORKER_NAME comes from nowhere, not the pod name (metadata.name): workers would share a state folder"]


def test_probes_use_the_declared_web_port(manifests: dict[str, list[Manifest]]) -> None:
    statefulset = worker(manifests)
    assert probe_problems(statefulset) == []
    assert container(statefulset)["ports"] == [{"name": "web", "containerPort": int(settings_map(manifests)
                                                                                       ["PACKWISE_WEB_PORT"])}]
    broken = copy.deepcopy(statefulset)
    container(broken)["ports"][0]["name"] = "http"
    assert probe_problems(broken) == ["the container has no port named web"] + [
        f"{probe} probes port 'web', which the container does not declare"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe")]


def test_replicas_do_not_exceed_partitions(manifests: dict[str, list[Manifest]]) -> None:
    statefulset, settings = worker(manifests), settings_map(manifests)
    assert replica_problems(statefulset, settings) == []
    broken = copy.deepcopy(statefulset)
    broken["spec"]["replicas"] = 13
    assert replica_problems(broken, settings) == [
        "13 replicas but PACKWISE_PARTITIONS=12: a worker beyond the partitions owns none"]


def test_services_and_budget_select_the_workers(manifests: dict[str, list[Manifest]]) -> None:
    assert selector_problems(manifests) == []
    assert worker(manifests)["spec"]["serviceName"] == one(manifests, "Service", "packwise-worker")["metadata"]["name"]
    assert one(manifests, "Service", "packwise-worker")["spec"]["clusterIP"] == "None"
    broken = copy.deepcopy(manifests)
    one(broken, "Service", "packwise-web")["spec"]["selector"]["app.kubernetes.io/component"] = "web"
    assert [p.split(" selects")[0] for p in selector_problems(broken)] == ["Service packwise-web"]


def test_state_is_per_worker_and_the_model_read_only(manifests: dict[str, list[Manifest]]) -> None:
    statefulset, settings = worker(manifests), settings_map(manifests)
    assert volume_problems(statefulset, settings) == []
    broken = copy.deepcopy(statefulset)
    for mount in container(broken)["volumeMounts"]:
        mount.pop("readOnly", None)
    broken["spec"].pop("volumeClaimTemplates")
    assert len(volume_problems(broken, settings)) == 2


def test_worker_runs_as_non_root_with_the_requested_shape(manifests: dict[str, list[Manifest]]) -> None:
    spec = worker(manifests)["spec"]
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container(worker(manifests))["command"] == ["packwise", "worker"]
    assert (spec["podManagementPolicy"], pod["terminationGracePeriodSeconds"]) == ("Parallel", 60)
    assert container(worker(manifests))["resources"]["limits"] == {"cpu": "2", "memory": "3Gi"}
    assert one(manifests, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert one(manifests, "Job")["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "packwise", "topics", "create"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_everything_into_the_namespace() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert len(docs) == len(resources(load()))
    assert all(d["metadata"].get("namespace") == "packwise" for d in docs if d["kind"] != "Namespace")


# -- security (issue 13) --------------------------------------------------------------------------------

SECRETS = K8S / "secrets" / "credentials.yaml"  # a template, applied by hand: never in kustomization.yaml
KUBERNETES_VERSION = "1.33"


def secret_templates() -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(SECRETS.read_text(encoding="utf-8")) if doc is not None]


def schema_problems(docs: list[Manifest]) -> list[str]:
    """What the Kubernetes API would refuse, from its published JSON schemas (strict: unknown fields too)."""
    import kubernetes_validate

    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: {error.message}")
    return problems


def pod_templates(manifests: dict[str, list[Manifest]]) -> dict[str, Manifest]:
    return {f"{d['kind']} {d['metadata']['name']}": d["spec"]["template"]["spec"] for d in resources(manifests)
            if d["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job")}


RESTRICTED_CONTAINER = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}


def security_context_problems(pods: dict[str, Manifest]) -> list[str]:
    """Every pod and container: non-root, the runtime's seccomp profile, no privilege escalation, no
    capabilities, a read-only root filesystem."""
    problems = []
    for owner, pod in pods.items():
        context = pod.get("securityContext", {})
        if context.get("runAsNonRoot") is not True or context.get("runAsUser", 0) == 0:
            problems.append(f"{owner}: the pod may run as root")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{owner}: the pod has no RuntimeDefault seccomp profile")
        for c in pod.get("initContainers", []) + pod["containers"]:
            context = c.get("securityContext", {})
            problems += [f"{owner} container {c['name']}: {key} is not {value}"
                         for key, value in RESTRICTED_CONTAINER.items() if context.get(key) is not value]
            if context.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{owner} container {c['name']}: capabilities are not all dropped")
            if context.get("seccompProfile", {}).get("type", "RuntimeDefault") != "RuntimeDefault":
                problems.append(f"{owner} container {c['name']}: seccomp profile is not RuntimeDefault")
    return problems


def credential_problems(manifests: dict[str, list[Manifest]], secrets: list[Manifest]) -> list[str]:
    """No credential in the ConfigMap (no secret setting, no value of a Secret); every Secret a pod refers
    to, by key or as a volume, is one the template defines, with that key."""
    import dataclasses

    from streams.settings import Settings, env_name

    settings = settings_map(manifests)
    secret_settings = {env_name(f.name) for f in dataclasses.fields(Settings) if f.metadata["secret"]}
    problems = [f"ConfigMap holds {name}, a secret setting: put it in a Secret"
                for name in sorted(secret_settings & set(settings))]
    keys = {s["metadata"]["name"]: {**s.get("data", {}), **s.get("stringData", {})} for s in secrets}
    problems += [f"ConfigMap {name} holds the value of {secret} key {key}" for secret, values in keys.items()
                 for key, value in values.items() if value for name, text in settings.items() if value in text]
    for owner, pod in pod_templates(manifests).items():
        refs = [(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                for c in pod["containers"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
        refs += [(v["secret"]["secretName"], None) for v in pod.get("volumes", []) if "secret" in v]
        problems += [f"{owner} refers to Secret {name}{f' key {key}' if key else ''}, which the template lacks"
                     for name, key in refs if name not in keys or (key is not None and key not in keys[name])]
    return problems


def network_policy_problems(manifests: dict[str, list[Manifest]]) -> list[str]:
    """A policy selects the worker pods, both ways: ingress only from the monitoring namespace to the web
    port; egress only to named destinations (Kafka, the registry) and DNS."""
    labels = worker(manifests)["spec"]["template"]["metadata"]["labels"]
    web_port = int(settings_map(manifests)["PACKWISE_WEB_PORT"])
    policies = [d for d in resources(manifests) if d["kind"] == "NetworkPolicy"
                and all(labels.get(k) == v for k, v in d["spec"]["podSelector"].get("matchLabels", {}).items())]
    if not policies:
        return ["no NetworkPolicy selects the worker pods"]
    problems = []
    for policy in policies:
        name, spec = policy["metadata"]["name"], policy["spec"]
        if set(spec.get("policyTypes", [])) != {"Ingress", "Egress"}:
            problems.append(f"NetworkPolicy {name} does not restrict both ingress and egress")
        for rule in spec.get("ingress", []):
            sources = rule.get("from", [])
            if not sources or any(s.get("namespaceSelector", {}).get("matchLabels") !=
                                  {"kubernetes.io/metadata.name": "monitoring"} for s in sources):
                problems.append(f"NetworkPolicy {name} admits traffic from outside the monitoring namespace")
            if [p.get("port") for p in rule.get("ports", [])] != [web_port]:
                problems.append(f"NetworkPolicy {name} admits traffic to ports other than the web port {web_port}")
        egress = spec.get("egress", [])
        if any(not rule.get("to") or not rule.get("ports") for rule in egress):
            problems.append(f"NetworkPolicy {name} lets the workers reach any destination or port")
        if not any(p.get("port") == 53 for rule in egress for p in rule.get("ports", [])):
            problems.append(f"NetworkPolicy {name} blocks DNS")
    return problems


def test_manifests_match_the_kubernetes_schemas(manifests: dict[str, list[Manifest]]) -> None:
    assert schema_problems(resources(manifests) + secret_templates()) == []
    misspelt, mistyped = copy.deepcopy(worker(manifests)), copy.deepcopy(one(manifests, "NetworkPolicy"))
    container(misspelt)["securityContext"]["readOnlyRootFileSystem"] = True  # a capital S: the API ignores it
    mistyped["spec"]["policyTypes"] = "Ingress"
    problems = schema_problems([misspelt, mistyped])
    assert [p.split(":")[0] for p in problems] == ["StatefulSet packwise-worker", "NetworkPolicy packwise"]
    assert "readOnlyRootFileSystem" in problems[0] and "'Ingress' is not of type 'array'" in problems[1]


def test_every_pod_and_container_is_locked_down(manifests: dict[str, list[Manifest]]) -> None:
    pods = pod_templates(manifests)
    assert set(pods) == {"StatefulSet packwise-worker", "Job packwise-topics-create"}
    assert security_context_problems(pods) == []
    broken = copy.deepcopy(pods)
    job = broken["Job packwise-topics-create"]
    del job["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
    job["securityContext"]["runAsUser"] = 0
    assert security_context_problems(broken) == [
        "Job packwise-topics-create: the pod may run as root",
        "Job packwise-topics-create container topics: readOnlyRootFilesystem is not True"]


def test_writable_paths_are_volumes(manifests: dict[str, list[Manifest]]) -> None:
    """With a read-only root, the state folder and /tmp must be volumes, or the worker cannot write them."""
    mounts = {m["mountPath"] for m in container(worker(manifests))["volumeMounts"]}
    assert {settings_map(manifests)["PACKWISE_STATE_DIR"], "/tmp"} <= mounts


def test_credentials_come_from_secrets_not_the_configmap(manifests: dict[str, list[Manifest]]) -> None:
    secrets = secret_templates()
    assert {s["kind"] for s in secrets} == {"Secret"}
    assert "secrets/credentials.yaml" not in manifests["kustomization.yaml"][0]["resources"]
    assert credential_problems(manifests, secrets) == []
    settings = settings_map(manifests)
    mount = {m["name"]: m["mountPath"] for m in container(worker(manifests))["volumeMounts"]}["credentials"]
    files = {k: v for k, v in settings.items() if k.endswith("_FILE")}
    keys = {**secrets[0]["stringData"]}
    assert files and all(v.startswith(mount + "/") and v.removeprefix(mount + "/") in keys for v in files.values())
    leaked = copy.deepcopy(manifests)
    settings_map(leaked)["PACKWISE_KAFKA_PASSWORD"] = keys["kafka-password"]
    assert credential_problems(leaked, secrets) == [
        "ConfigMap holds PACKWISE_KAFKA_PASSWORD, a secret setting: put it in a Secret",
        "ConfigMap PACKWISE_KAFKA_PASSWORD holds the value of packwise-worker-credentials key kafka-password"]
    renamed = copy.deepcopy(manifests)
    container(worker(renamed))["env"][0]["valueFrom"]["secretKeyRef"]["key"] = "user"
    assert credential_problems(renamed, secrets) == [
        "StatefulSet packwise-worker refers to Secret packwise-worker-credentials key user, which the template lacks"]


def test_network_policy_confines_the_workers(manifests: dict[str, list[Manifest]]) -> None:
    assert network_policy_problems(manifests) == []
    policy = one(manifests, "NetworkPolicy")
    job_labels = one(manifests, "Job")["spec"]["template"]["metadata"]["labels"]
    assert all(job_labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
    broken = copy.deepcopy(manifests)
    spec = one(broken, "NetworkPolicy")["spec"]
    spec["ingress"][0]["from"] = [{"namespaceSelector": {}}]
    spec["egress"].append({"ports": [{"protocol": "TCP", "port": 443}]})
    assert network_policy_problems(broken) == [
        "NetworkPolicy packwise admits traffic from outside the monitoring namespace",
        "NetworkPolicy packwise lets the workers reach any destination or port"]
    unselected = copy.deepcopy(manifests)
    one(unselected, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] = "other"
    assert network_policy_problems(unselected) == ["no NetworkPolicy selects the worker pods"]
