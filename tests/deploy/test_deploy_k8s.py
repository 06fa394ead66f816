"""k8s/ renders to a DaemonSet the real forwarder accepts and that can see its files.

The manifests are rendered by the pinned kubectl that `make deploy-tools` installs under
.tools/k8s (`make test` installs it before the tests run), and the DaemonSet's settings go
through forwarder.config's own parser: nothing here lists the forwarder's flags by hand.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from forwarder import config as fconfig

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "k8s" / "bin" / "kubectl"

# Where kubelet and containerd / CRI-O put the files the forwarder reads ...
LOG_DIRS = ("/var/log/containers", "/var/log/pods")
# ... and where Docker Engine nodes keep them (k8s/components/docker-engine-nodes).
DOCKER_DIR = "/var/lib/docker/containers"


def _render(directory: str | Path) -> list[dict[str, Any]]:
    if not KUBECTL.exists():
        pytest.fail("pinned kubectl missing: run `make deploy-tools` (make test does)")
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return _render("k8s")


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def daemonset(objects) -> dict[str, Any]:
    return _one(objects, "DaemonSet")


@pytest.fixture(scope="module")
def container(daemonset) -> dict[str, Any]:
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(scope="module")
def pod_env(objects, container) -> dict[str, str]:
    """The container's environment as the forwarder sees it (downward API filled in)."""
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            field = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = {
                "metadata.name": "podhose-forwarder-abcde",
                "metadata.namespace": "podhose",
            }[field]
    return env


@pytest.fixture(scope="module")
def forwarder_config(container, pod_env) -> fconfig.Config:
    return fconfig.parse_config(container.get("args", []), env=pod_env)


def _options() -> dict[str, argparse.Action]:
    parser = fconfig.build_parser()
    return {opt: a for a in parser._actions for opt in a.option_strings if opt.startswith("--")}


def _flag_for(env_name: str) -> str:
    return "--" + env_name.removeprefix(fconfig.ENV_PREFIX).lower().replace("_", "-")


def test_every_podhose_variable_is_a_forwarder_flag(pod_env):
    options = _options()
    unknown = [n for n in pod_env if n.startswith("PODHOSE_") and _flag_for(n) not in options]
    assert not unknown, f"the forwarder has no flag for {unknown}"


def test_args_are_forwarder_flags(container):
    options = _options()
    for arg in container.get("args", []):
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in options, arg
    assert "command" not in container or container["command"], "empty command"


def test_environment_means_the_same_as_the_flags(container, pod_env, forwarder_config):
    """Each PODHOSE_* variable is read: as flags, the same values give the same Config."""
    options = _options()
    argv = list(container.get("args", []))
    for name, value in pod_env.items():
        if not name.startswith("PODHOSE_"):
            continue
        flag = _flag_for(name)
        if options[flag].nargs == 0:  # store_const switches
            if value.strip().lower() in fconfig.TRUE_WORDS:
                argv.append(flag)
        elif value != "":
            argv += [flag, value]
    downward = {k: v for k, v in pod_env.items() if not k.startswith("PODHOSE_")}
    assert fconfig.parse_config(argv, env=downward) == forwarder_config


def test_forwarder_settings_fit_a_daemonset(daemonset, forwarder_config):
    assert forwarder_config.delivery_stream
    assert not forwarder_config.exit_on_eof
    assert not forwarder_config.include_self
    # It knows its own pod, so it skips its own container's logs.
    assert forwarder_config.self_prefix == "podhose-forwarder-abcde_podhose_"
    grace = daemonset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > forwarder_config.shutdown_timeout


def test_downward_api(container):
    fields = {
        v["name"]: v["valueFrom"]["fieldRef"]["fieldPath"]
        for v in container["env"]
        if "valueFrom" in v
    }
    assert fields == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


def _covers(mount: str, path: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def test_mounts_cover_every_path_the_forwarder_reads(daemonset, container, forwarder_config):
    pod = daemonset["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = container["volumeMounts"]

    def mount_for(path: str) -> dict[str, Any]:
        best = [m for m in mounts if _covers(m["mountPath"], path)]
        assert best, f"nothing mounted at {path}"
        mount = max(best, key=lambda m: len(m["mountPath"]))
        host = volumes[mount["name"]].get("hostPath")
        assert host, f"{path} must come from the node (hostPath), got {volumes[mount['name']]}"
        # The same path on the node as in the container: kubelet's symlinks stay valid.
        assert host["path"] == mount["mountPath"]
        return mount

    read = list(LOG_DIRS) + [posixpath.dirname(glob) for glob in forwarder_config.paths]
    for path in read:
        assert mount_for(path).get("readOnly") is True, f"{path} should be read-only"

    db_dir = posixpath.dirname(forwarder_config.db)
    db_mount = mount_for(db_dir)
    assert not db_mount.get("readOnly"), "the offsets DB directory must be writable"
    assert volumes[db_mount["name"]]["hostPath"]["type"] == "DirectoryOrCreate"


def _pod_volumes(daemonset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}


def test_only_the_log_directories_are_mounted_and_none_is_created(daemonset, container):
    host_paths = {
        m["mountPath"]: _pod_volumes(daemonset)[m["name"]]["hostPath"]
        for m in container["volumeMounts"]
        if "hostPath" in _pod_volumes(daemonset)[m["name"]]
    }
    assert set(host_paths) == {*LOG_DIRS, "/var/lib/podhose"}  # not all of /var/log
    for path in LOG_DIRS:
        assert host_paths[path]["type"] == "Directory"  # must exist; never created


def _render_with_component(tmp_path: Path, component: str) -> list[dict[str, Any]]:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = Path(os.path.relpath(ROOT / "k8s", overlay))
    kustomization = {"resources": [str(base)], "components": [str(base / "components" / component)]}
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return _render(overlay)


def test_docker_engine_component_adds_dockers_directory_read_only(tmp_path: Path) -> None:
    daemonset = _one(_render_with_component(tmp_path, "docker-engine-nodes"), "DaemonSet")
    mounts = daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    mount = next(m for m in mounts if m["mountPath"] == DOCKER_DIR)
    assert mount["readOnly"] is True
    assert _pod_volumes(daemonset)[mount["name"]]["hostPath"] == {
        "path": DOCKER_DIR,
        "type": "Directory",
    }


def test_pod_metadata_component_grants_only_pod_reads_and_configures_the_forwarder(
    tmp_path: Path,
) -> None:
    objects = _render_with_component(tmp_path, "pod-metadata")
    role = _one(objects, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    binding = _one(objects, "ClusterRoleBinding")
    account = _one(objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]  # fmt: skip
    pod = _one(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True  # the token only with this component
    env = {v["name"]: v for v in pod["containers"][0]["env"]}
    assert env["PODHOSE_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    configmap = _one(objects, "ConfigMap")["data"]
    switch = env["PODHOSE_KUBERNETES_METADATA"]["value"]
    node = {"PODHOSE_NODE_NAME": "ip-10-0-0-1.ec2.internal"}
    cfg = fconfig.parse_config([], env={**configmap, "PODHOSE_KUBERNETES_METADATA": switch, **node})
    assert cfg.kubernetes_metadata and cfg.node_name == "ip-10-0-0-1.ec2.internal"


def test_http_port_probes_and_scrape_annotations(daemonset, container, forwarder_config):
    port = forwarder_config.http_port
    assert port > 0
    assert forwarder_config.http_host in ("0.0.0.0", "::", "")  # reachable by kubelet
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == port
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port


def test_pod_hardening_and_scheduling(daemonset, container):
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    limits = container["resources"]["limits"]
    assert limits["memory"].endswith("Mi")
    strategy = daemonset["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"]


def test_everything_in_the_podhose_namespace(objects):
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"podhose"}
    assert _one(objects, "Namespace")["metadata"]["name"] == "podhose"
    sa = _one(objects, "ServiceAccount")["metadata"]["name"]
    assert sa == "podhose-forwarder"
    ds = _one(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert ds["serviceAccountName"] == sa


def test_example_app_renders():
    objects = _render("k8s/examples")
    deployment = _one(objects, "Deployment")
    assert deployment["metadata"]["name"] == "fakenerd"
    app = (ROOT / "k8s" / "examples" / "app.py").read_text()
    assert '"fakenerd"' in app
    assert "flush=True" in app


def test_the_configmap_names_every_setting_with_its_default() -> None:
    """Each forwarder option is in k8s/configmap.yaml: set, or as a comment with its default
    (a user looking for PODHOSE_MULTILINE finds it there)."""
    import re

    text = (ROOT / "k8s" / "configmap.yaml").read_text()
    data = yaml.safe_load(text)["data"]
    commented = dict(re.findall(r'^  # (PODHOSE_[A-Z_]+): "([^"]*)"', text, re.MULTILINE))
    for opt in fconfig.OPTIONS:
        assert opt.env in data or opt.env in commented, f"{opt.env} missing from the ConfigMap"
        if opt.env in commented:
            default = opt.default if opt.default is not None else ""
            default = ",".join(default) if isinstance(default, list) else default
            parsed = opt.parse(commented[opt.env]) if commented[opt.env] else ""
            assert parsed == (opt.parse(default) if isinstance(default, str) and default else
                              default), opt.env  # fmt: skip


def test_the_metrics_port_is_admitted_only_from_the_scraper() -> None:
    """The NetworkPolicy let anyone reach /metrics (which held every pod's file name) and the
    HTTP server: ingress now comes only from the documented Prometheus selector."""
    [policy] = [o for o in _render("k8s") if o["kind"] == "NetworkPolicy"]
    [rule] = policy["spec"]["ingress"]
    [peer] = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert [p["port"] for p in rule["ports"]] == [2020]
