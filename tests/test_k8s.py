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
