"""``docker run`` options read off the rendered DaemonSet, so the container test runs the image
the way kubelet would and breaks when k8s/ drifts from what was tested.

Translated: the pod's and container's securityContext (user and group, read-only root
filesystem, dropped and added capabilities, no privilege escalation, RuntimeDefault seccomp =
Docker's default profile), every volume mount (hostPath under a simulated node's root, at
the same path inside; emptyDir as a sized tmpfs), the environment (envFrom the ConfigMap,
fieldRef values, literals), the CPU and memory limits and the termination grace period.
Anything else in those fields (a privileged container, another volume or seccomp type, an
env source not handled here) raises :class:`UntranslatableError`, so a new setting is either
translated here or noticed.

Example::

    run = DaemonSetRun.from_objects(objects, node_root=tmp / "node", pod_name="podhose-x")
    docker_args = run.docker_args(env_overrides={"PODHOSE_HTTP_PORT": "2021"})
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Kubernetes quantity suffixes docker understands the same way (bytes).
_BINARY = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


class UntranslatableError(Exception):
    """A DaemonSet setting this module does not know how to run under docker."""


def quantity_bytes(value: str) -> int:
    """``16Mi`` -> 16777216 (the binary suffixes and plain bytes)."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(value))
    if match is None:
        raise UntranslatableError(f"memory quantity {value!r}")
    return int(match.group(1)) * _BINARY.get(match.group(2) or "", 1)


def quantity_cpus(value: str) -> str:
    """``500m`` -> ``0.5``; ``2`` -> ``2``."""
    text = str(value)
    return str(int(text[:-1]) / 1000) if text.endswith("m") else text


@dataclass
class DaemonSetRun:
    """One forwarder pod of the DaemonSet, on a simulated node rooted at ``node_root``."""

    pod: dict[str, Any]
    container: dict[str, Any]
    config_data: dict[str, str]
    node_root: Path
    pod_name: str
    pod_namespace: str

    @classmethod
    def from_objects(
        cls, objects: list[dict[str, Any]], *, node_root: Path, pod_name: str
    ) -> DaemonSetRun:
        daemonset = _only(objects, "DaemonSet")
        pod = daemonset["spec"]["template"]["spec"]
        if len(pod["containers"]) != 1 or pod.get("initContainers"):
            raise UntranslatableError("expected exactly one container and no init containers")
        config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
        container = pod["containers"][0]
        data: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if set(source) != {"configMapRef"}:
                raise UntranslatableError(f"envFrom {source}")
            data.update(config_maps[source["configMapRef"]["name"]]["data"])
        namespace = daemonset["metadata"]["namespace"]
        return cls(pod, container, data, node_root, pod_name, namespace)

    @property
    def grace_period_s(self) -> int:
        return int(self.pod.get("terminationGracePeriodSeconds", 30))

    @property
    def env(self) -> dict[str, str]:
        """The container's environment as kubelet would set it."""
        env = dict(self.config_data)
        fields = {"metadata.name": self.pod_name, "metadata.namespace": self.pod_namespace}
        for var in self.container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "fieldRef" in var.get("valueFrom", {}):
                env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
            else:
                raise UntranslatableError(f"env {var}")
        return env

    def security_args(self) -> list[str]:
        pod_sc = self.pod.get("securityContext", {})
        sc = {**pod_sc, **self.container.get("securityContext", {})}
        if sc.get("privileged"):
            raise UntranslatableError("privileged container")
        args = ["--user", f"{sc.get('runAsUser', 0)}:{sc.get('runAsGroup', 0)}"]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        capabilities = sc.get("capabilities", {})
        args += [f"--cap-drop={cap}" for cap in capabilities.get("drop", [])]
        args += [f"--cap-add={cap}" for cap in capabilities.get("add", [])]
        seccomp = sc.get("seccompProfile", {}).get("type", "RuntimeDefault")
        if seccomp != "RuntimeDefault":
            raise UntranslatableError(f"seccompProfile {seccomp}")
        return args

    def host_path(self, path: str) -> Path:
        """Where the node's ``path`` is on this machine."""
        return self.node_root / path.lstrip("/")

    def mount_args(self) -> list[str]:
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        args: list[str] = []
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            target = mount["mountPath"]
            if "hostPath" in volume:
                source = self._prepare_host_path(volume["hostPath"])
                spec = f"type=bind,source={source},target={target}"
                args += ["--mount", spec + (",readonly" if mount.get("readOnly") else "")]
            elif "emptyDir" in volume:
                size = volume["emptyDir"].get("sizeLimit")
                spec = f"type=tmpfs,target={target}"
                args += ["--mount", spec + (f",tmpfs-size={quantity_bytes(size)}" if size else "")]
            else:
                raise UntranslatableError(f"volume {volume}")
        return args

    def _prepare_host_path(self, host_path: dict[str, Any]) -> Path:
        """Check or create the node directory the way kubelet does for the hostPath type."""
        source = self.host_path(host_path["path"])
        kind = host_path.get("type", "")
        if kind == "DirectoryOrCreate":
            source.mkdir(parents=True, exist_ok=True)
        elif kind == "Directory":
            if not source.is_dir():
                raise FileNotFoundError(f"hostPath type Directory: {source} does not exist")
        else:
            raise UntranslatableError(f"hostPath type {kind!r}")
        return source

    def resource_args(self) -> list[str]:
        limits = self.container.get("resources", {}).get("limits", {})
        args: list[str] = []
        if "memory" in limits:
            args += ["--memory", str(quantity_bytes(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", quantity_cpus(limits["cpu"])]
        return args

    def docker_args(self, env_overrides: dict[str, str] | None = None) -> list[str]:
        """``docker run`` flags (before the image) for this pod on the host network."""
        env = {**self.env, **(env_overrides or {})}
        env_args = [
            arg for name, value in sorted(env.items()) for arg in ("--env", f"{name}={value}")
        ]
        return [
            "--network",
            "host",
            *self.security_args(),
            *self.mount_args(),
            *self.resource_args(),
            *env_args,
        ]


def _only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    if len(found) != 1:
        raise UntranslatableError(f"expected one {kind}, found {len(found)}")
    return found[0]
