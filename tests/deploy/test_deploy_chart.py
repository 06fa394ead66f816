"""charts/podhose renders what k8s/ renders, refuses bad values, and gives the forwarder
settings it parses.

The chart is rendered by the helm that `make deploy-tools` builds from its Go module under
.tools/helm, k8s/ by the pinned kubectl under .tools/k8s (`make test` builds both before the
tests run). Objects are compared whole, after removing the four labels Helm adds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from forwarder import config as fconfig
from forwarder import config_schema

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "helm" / "helm"
KUBECTL = ROOT / ".tools" / "k8s" / "bin" / "kubectl"
CHART = ROOT / "charts" / "podhose"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
)

Objects = dict[tuple[str, str], dict[str, Any]]


def _tool(path: Path) -> str:
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} missing: run `make deploy-tools` (make test does)")
    return str(path)


def helm_template(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool(HELM), "template", "podhose", str(CHART), *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=60,
    )


class StrictLoader(yaml.SafeLoader):
    """Refuses a mapping with a key twice (PyYAML keeps the last; kustomize refuses it)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = {key for key in keys if keys.count(key) > 1}
        assert not duplicates, f"duplicate keys {duplicates} at {node.start_mark}"
        return super().construct_mapping(node, deep=deep)


def _objects(text: str) -> Objects:
    """Rendered objects by (kind, name), without Helm's own labels."""
    found: Objects = {}
    for doc in yaml.load_all(text, Loader=StrictLoader):
        if not doc:
            continue
        labels = doc["metadata"].get("labels", {})
        for label in HELM_LABELS:
            labels.pop(label, None)
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in found, f"{key} rendered twice"
        found[key] = doc
    return found


def chart(*args: str) -> Objects:
    return _objects(helm_template(*args).stdout)


def kustomize(tmp_path: Path, resources: list[str], components: list[str]) -> Objects:
    """An overlay of k8s/ directories (relative paths: kustomize refuses absolute ones)."""
    up = os.path.relpath(ROOT, tmp_path)
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"{up}/{r}" for r in resources],
        "components": [f"{up}/{c}" for c in components],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    out = subprocess.run(
        [_tool(KUBECTL), "kustomize", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return _objects(out)


def assert_same(chart_objects: Objects, k8s_objects: Objects) -> None:
    assert sorted(chart_objects) == sorted(k8s_objects)
    for key, expected in k8s_objects.items():
        assert chart_objects[key] == expected, f"{key} differs from k8s/"


# ----- one source of truth


def test_default_values_render_the_kustomization(tmp_path: Path) -> None:
    assert_same(chart(), kustomize(tmp_path, ["k8s"], []))


def test_the_release_namespace_does_not_move_the_objects(tmp_path: Path) -> None:
    assert_same(chart("--namespace", "kube-system"), kustomize(tmp_path, ["k8s"], []))


def test_every_optional_part_renders_k8s_with_its_components_and_monitoring(
    tmp_path: Path,
) -> None:
    expected = kustomize(
        tmp_path,
        ["k8s", "k8s/monitoring"],
        ["k8s/components/pod-metadata", "k8s/components/docker-engine-nodes"],
    )
    assert_same(chart("--values", str(ALL_ON)), expected)


def test_the_all_on_values_turn_on_every_optional_part() -> None:
    """Every `enabled: false` of values.yaml is on in ci/all-on-values.yaml (a new optional
    part is compared with k8s/ too, or this fails)."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    all_on = yaml.safe_load(ALL_ON.read_text())
    optional = {
        key
        for key, value in defaults.items()
        if isinstance(value, dict) and value.get("enabled") is False
    }
    assert optional == {key for key, value in all_on.items() if value.get("enabled") is True}


# ----- values the schema refuses


@pytest.mark.parametrize(
    "setting",
    [
        "tolerration[0].operator=Exists",  # a typo of a value
        "config.deliveryStrem=podhose",  # a typo of a forwarder setting
        "config.zstdLevel=25",  # out of the option's range
        "metricsPort=null",  # required: Helm drops null keys before the schema sees them
        "serviceAccount.create=false",  # then a name is required
        "routes[0].namespaces=team-a\\,team-b",  # a comma would split the route
        "podMetadata.annotations[0]=a\\,b",  # the same for a list item
        "dnsPolicy=None",  # needs dnsConfig
        "podMonitor.interval=90 seconds",  # not a Prometheus duration
        "tmpSizeLimit=lots",  # not a quantity
        "tolerations[0].operater=Exists",  # a typo inside a Kubernetes object we pass on
        "config.compression=brotli",  # not one of its choices
        "config.flushInterval=soon",  # not a number of seconds
        "config.deliveryStream=logs/prod",  # a name Firehose refuses
        "config.httpPort=9000",  # the chart's own: metricsPort
        "metricsPort=http",  # wrong type
        "image.digest=latest",  # not a digest
        "podMetadata.enabled=yes-please",  # not a boolean
        "routes[0].namespaces=kube-*",  # a route without its stream
        "updateStrategy.type=Recreate",  # not a DaemonSet strategy
    ],
)
def test_the_schema_refuses_bad_values(setting: str) -> None:
    result = helm_template("--set", setting, check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert "schema" in result.stderr.lower(), result.stderr


def test_numbers_as_text_are_refused_not_let_past_their_range() -> None:
    for text in ("25", "3"):
        result = helm_template("--set-string", f"config.zstdLevel={text}", check=False)
        assert result.returncode != 0 and "zstdLevel" in result.stderr


def test_the_selector_label_cannot_be_overridden_by_pod_labels() -> None:
    result = helm_template("--set", "podLabels.app\\.kubernetes\\.io/name=x", check=False)
    assert result.returncode != 0 and "selector" in result.stderr, result.stderr


def test_user_keys_replace_the_charts_own_without_duplicates() -> None:
    objects = chart(
        "--set-string", "podAnnotations.prometheus\\.io/scrape=false",
        "--set", "rollOnConfigChange=true",
        "--set-string", "annotations.checkov\\.io/skip1=mine",
        "--set-string", "labels.app\\.kubernetes\\.io/component=logs",
        "--set", "podMonitor.enabled=true",
        "--set-string", "podMonitor.additionalLabels.app\\.kubernetes\\.io/part-of=obs",
        "--set", "dashboards.enabled=true",
        "--set", "dashboards.labelKey=app.kubernetes.io/part-of",
    )  # fmt: skip
    ds = objects[("DaemonSet", "podhose-forwarder")]
    assert ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "false"
    assert ds["metadata"]["annotations"]["checkov.io/skip1"] == "mine"
    assert ds["metadata"]["labels"]["app.kubernetes.io/component"] == "logs"
    monitor = objects[("PodMonitor", "podhose-forwarder")]["metadata"]["labels"]
    assert monitor["app.kubernetes.io/part-of"] == "obs"


def test_names_that_look_like_numbers_or_booleans_stay_text() -> None:
    objects = chart(
        "--set-string", "fullnameOverride=0755", "--set-string", "priorityClassName=true"
    )
    ds = objects[("DaemonSet", "0755")]
    assert ds["metadata"]["name"] == "0755"
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "0755"
    assert ds["spec"]["template"]["spec"]["priorityClassName"] == "true"


def test_prometheus_durations_and_dns_config_as_the_api_takes_them() -> None:
    objects = chart(
        "--set", "podMonitor.enabled=true", "--set", "podMonitor.interval=1m30s",
        "--set", "dnsPolicy=None", "--set-json", 'dnsConfig={"nameservers": ["192.0.2.53"]}',
    )  # fmt: skip
    monitor = objects[("PodMonitor", "podhose-forwarder")]["spec"]["podMetricsEndpoints"][0]
    assert monitor["interval"] == "1m30s"
    pod = objects[("DaemonSet", "podhose-forwarder")]["spec"]["template"]["spec"]
    assert pod["dnsPolicy"] == "None" and pod["dnsConfig"] == {"nameservers": ["192.0.2.53"]}


def test_a_values_file_with_a_wrong_type_is_refused(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("resources: 128Mi\nconfig:\n  maxBufferBytes: [1]\n")
    result = helm_template("--values", str(values), check=False)
    assert result.returncode != 0
    assert "resources" in result.stderr and "maxBufferBytes" in result.stderr, result.stderr


def test_the_config_schema_is_the_forwarder_option_table() -> None:
    current = (CHART / "values.schema.json").read_text()
    assert config_schema.chart_schema_text(current) == current, (
        "run `make chart-docs`: values.schema.json's config is not forwarder/config.py's OPTIONS"
    )


def test_the_values_table_in_the_docs_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "chart_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# ----- what the forwarder gets


def _forwarder_env(objects: Objects) -> dict[str, str]:
    env = dict(objects[("ConfigMap", "podhose-forwarder")]["data"])
    container = objects[("DaemonSet", "podhose-forwarder")]["spec"]["template"]["spec"]
    for var in container["containers"][0]["env"]:
        env[var["name"]] = var.get("value", "from-the-downward-api")
    return env


def test_settings_of_every_type_reach_the_forwarder_as_it_parses_them(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "config": {
                    "deliveryStream": "logs.prod",
                    "maxBufferBytes": 4294967296,  # float64 in templates: no exponent
                    "maxDeletedBytes": 10737418240,
                    "flushInterval": 0.5,
                    "path": ["/var/log/containers/*.log", "/var/log/pods/*/*/*.log"],
                    "exclude": "*_kube-system_*",
                    "metricsFileLabels": True,
                    "zstdLevel": 3,
                    "includeSelf": "on",  # a boolean as the forwarder's words
                    "logLevel": "debug",
                },
                "routes": [
                    {"namespaces": "kube-*", "deliveryStream": "platform"},
                    {"namespaces": "team-a", "deliveryStream": "team-a"},
                ],
                "metricsPort": 9102,
                "podMetadata": {"enabled": True, "annotations": ["example.com/*", "team"]},
            }
        )
    )
    objects = chart("--values", str(values))
    env = _forwarder_env(objects)
    assert env["PODHOSE_MAX_BUFFER_BYTES"] == "4294967296"
    assert env["PODHOSE_MAX_DELETED_BYTES"] == "10737418240"
    assert env["PODHOSE_FLUSH_INTERVAL"] == "0.5"
    cfg = fconfig.parse_config([], env)
    assert cfg.delivery_stream == "logs.prod"
    assert cfg.max_buffer_bytes == 4 * 1024**3
    assert cfg.flush_interval == 0.5
    assert cfg.paths == ["/var/log/containers/*.log", "/var/log/pods/*/*/*.log"]
    assert cfg.excludes == ["*_kube-system_*"]
    assert cfg.metrics_file_labels is True
    assert cfg.zstd_level == 3
    assert cfg.include_self is True
    assert cfg.log_level == "DEBUG"
    assert [(r.glob, r.stream) for r in cfg.routes] == [
        ("kube-*", "platform"),
        ("team-a", "team-a"),
    ]
    assert cfg.http_port == 9102
    assert cfg.kubernetes_metadata is True
    assert cfg.kubernetes_annotations == ["example.com/*", "team"]
    pod = objects[("DaemonSet", "podhose-forwarder")]["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9102"
    assert pod["spec"]["containers"][0]["ports"][0]["containerPort"] == 9102
    ingress = objects[("NetworkPolicy", "podhose-forwarder")]["spec"]["ingress"][0]
    assert ingress["ports"][0]["port"] == 9102


# A value each option accepts, where its default is none the schema takes.
SAMPLE_VALUES = {
    "--delivery-stream": "logs",
    "--region": "eu-west-1",
    "--endpoint-url": "http://127.0.0.1:4566",
    "--kubernetes-api": "https://127.0.0.1:6443",
    "--multiline-start": "^\\S",
    "--exclude": "*_kube-system_*",
}


def test_every_config_key_becomes_the_forwarders_own_variable(tmp_path: Path) -> None:
    """Rendered by Helm (its snakecase, not a copy of it): every option but the chart's own
    reaches the forwarder under its variable, with the value given."""
    options = [opt for opt in fconfig.OPTIONS if opt.flag not in config_schema.CHART_OWNED]
    config = {}
    for opt in options:
        value = SAMPLE_VALUES.get(opt.flag, opt.default)
        config[config_schema.option_key(opt)] = (
            ",".join(value) if isinstance(value, list) else value
        )
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": config}))
    data = chart("--values", str(values))[("ConfigMap", "podhose-forwarder")]["data"]
    expected = {opt.env for opt in options} | {"PODHOSE_HTTP_PORT"}
    assert set(data) == expected
    assert fconfig.unknown_variables(data) == []
    assert set(config_schema.config_schema()["properties"]) == set(config)


def test_image_digest_wins_over_the_tag() -> None:
    digest = "sha256:" + "ab" * 32
    objects = chart("--set", f"image.digest={digest}", "--set", "image.tag=9.9.9")
    pod = objects[("DaemonSet", "podhose-forwarder")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"ghcr.io/podhose/forwarder@{digest}"


def test_peer_chart_values_render_where_users_expect_them() -> None:
    """The values users of the fluent-bit and aws-for-fluent-bit charts ask for."""
    values = {
        "hostNetwork": True,
        "priorityClassName": "logging-critical",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "20%"}},
        "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "podMonitor": {"enabled": True, "additionalLabels": {"release": "kps"}},
    }
    args = [
        arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")
    ]
    objects = chart(*args)
    ds = objects[("DaemonSet", "podhose-forwarder")]["spec"]
    pod = ds["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["priorityClassName"] == "logging-critical"
    assert ds["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "20%"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in pod["containers"][0]["env"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    sa = objects[("ServiceAccount", "podhose-forwarder")]["metadata"]
    assert sa["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::1:role/x"
    assert objects[("PodMonitor", "podhose-forwarder")]["metadata"]["labels"]["release"] == "kps"


def test_namespace_create_false_leaves_the_namespace_alone() -> None:
    objects = chart("--set", "namespace.create=false", "--set", "namespace.name=logging")
    assert ("Namespace", "podhose") not in objects and ("Namespace", "logging") not in objects
    assert {o["metadata"].get("namespace") for o in objects.values()} == {"logging"}


def test_roll_on_config_change_follows_the_configmap() -> None:
    def checksum(*args: str) -> str:
        objects = chart("--set", "rollOnConfigChange=true", *args)
        pod = objects[("DaemonSet", "podhose-forwarder")]["spec"]["template"]
        return pod["metadata"]["annotations"]["checksum/config"]

    assert checksum() == checksum()
    assert checksum() != checksum("--set", "config.zstdLevel=3")
