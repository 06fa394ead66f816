"""Where kubelet and the container runtimes put a container's log on a node: the one layout
the demo's simulated node, the tests' node and the benchmarks' backlogs all create.

- CRI (containerd / CRI-O): ``var/log/pods/<ns>_<pod>_<uid>/<container>/0.log``.
- Docker (json-file driver): ``var/lib/docker/containers/<id>/<id>-json.log``; with
  ``pod_log_link`` the pod directory's ``0.log`` links to it (the dockershim layout).
- ``var/log/containers/<pod>_<ns>_<container>-<id>.log`` links to the pod log (Docker without
  ``pod_log_link``: to the runtime's file itself), as kubelet makes it.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> files = add_container(root, "web-1", container_id="c0ffee", uid="u1")
>>> str(files.link.relative_to(root)), str(files.log.relative_to(root))
('var/log/containers/web-1_default_app-c0ffee.log', 'var/log/pods/default_web-1_u1/app/0.log')
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

#: The directory of kubelet's symlinks, relative to the node's root.
CONTAINERS_DIR = "var/log/containers"


@dataclass(frozen=True)
class ContainerFiles:
    """A container's kubelet symlink and the file its runtime writes."""

    link: Path
    log: Path


def add_container(
    root: Path,
    pod: str,
    *,
    namespace: str = "default",
    name: str = "app",
    runtime: str = "cri",
    container_id: str | None = None,
    uid: str | None = None,
    pod_log_link: bool = False,
) -> ContainerFiles:
    """Create one container's (empty) log file and the symlinks to it under `root`."""
    if runtime not in ("docker", "cri"):
        raise ValueError(runtime)
    cid = container_id or secrets.token_hex(32)
    pod_log = root / "var/log/pods" / f"{namespace}_{pod}_{uid or uuid.uuid4()}" / name / "0.log"
    if runtime == "docker":
        log = root / "var/lib/docker/containers" / cid / f"{cid}-json.log"
    else:
        log = pod_log
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    target = log
    if runtime == "docker" and pod_log_link:
        pod_log.parent.mkdir(parents=True, exist_ok=True)
        pod_log.symlink_to(log)
        target = pod_log
    links = root / CONTAINERS_DIR
    links.mkdir(parents=True, exist_ok=True)
    link = links / f"{pod}_{namespace}_{name}-{cid}.log"
    link.symlink_to(target)
    return ContainerFiles(link, log)
