"""k8s/monitoring uses only metrics the forwarder exposes, and renders with the pinned kubectl."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from forwarder.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
KUBECTL = ROOT / ".tools" / "k8s" / "bin" / "kubectl"
METRIC = re.compile(r"\bpodhose_[a-z_]+")


def exposed() -> set[str]:
    """Every series name the forwarder's registry can expose (counters as *_total)."""
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_rules_and_dashboard_use_only_existing_metrics() -> None:
    rules = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    exprs = [rule["expr"] for group in rules["spec"]["groups"] for rule in group["rules"]]
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs.append(dashboard["templating"]["list"][0]["query"])
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used - exposed() == set()
    alerts = {rule["alert"] for group in rules["spec"]["groups"] for rule in group["rules"]}
    assert alerts >= {
        "PodhoseForwarderDown",
        "PodhoseDeliveryLag",
        "PodhoseErrorRate",
        "PodhoseBufferFull",
        "PodhoseRecordsSkipped",
        "PodhoseOversizeLines",
    }


def test_monitoring_renders_and_is_not_in_the_default_kustomization() -> None:
    out = subprocess.run([str(KUBECTL), "kustomize", str(MONITORING)], check=True,
                         capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    kinds = {doc["kind"] for doc in yaml.safe_load_all(out) if doc}
    assert kinds == {"PodMonitor", "PrometheusRule", "ConfigMap"}
    default = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    assert "monitoring" not in " ".join(default.get("resources", []))
