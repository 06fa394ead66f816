"""Routing: which delivery stream each file's lines go to, by its pod's namespace.

`--route GLOB=STREAM` (repeatable; `PODHOSE_ROUTES="GLOB=STREAM,GLOB=STREAM"`) sends the
files of pods whose namespace matches GLOB (fnmatch, case-sensitive; the first matching
route wins) to STREAM; every other file, and every file whose namespace its path does not
tell, goes to `--delivery-stream`.

    >>> router = Router("logs", [Route("kube-*", "platform"), Route("team-a", "team-a")])
    >>> router.stream_for("/var/log/containers/web-1_team-a_app-" + "0" * 64 + ".log")
    'team-a'
    >>> router.stream_for("/var/log/pods/kube-system_dns-0_4f1c/coredns/0.log")
    'platform'
    >>> router.stream_for("/var/log/app.log"), router.streams
    ('logs', ['logs', 'platform', 'team-a'])
    >>> router.stream_for("/var/log/app/kube-x_access_v2/worker/out.log")  # not kubelet's
    'logs'

"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass

from forwarder.pod_metadata import pod_of

# kubelet's /var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log
_POD_DIR = re.compile(r"/pods/(?P<namespace>[^/_]+)_[^/_]+_[^/_]+/[^/]+/[^/]+$")


@dataclass(frozen=True)
class Route:
    """Files of pods whose namespace matches `glob` go to `stream`."""

    glob: str
    stream: str


def namespace_of(path: str) -> str | None:
    """The pod namespace a kubelet log path names (/var/log/containers or /var/log/pods
    layout), or None."""
    pod = pod_of(os.path.basename(path))
    if pod is not None:
        return pod[0]
    match = _POD_DIR.search(path)
    return match["namespace"] if match else None


class Router:
    """The stream of each file: the first route whose glob matches its namespace."""

    def __init__(self, default: str, routes: list[Route]) -> None:
        self.default = default
        self.routes = routes
        self.streams = list(dict.fromkeys([default, *(r.stream for r in routes)]))

    def stream_for(self, path: str) -> str:
        """The stream for the lines of the file at `path` (the path it was found by)."""
        if not self.routes:
            return self.default
        namespace = namespace_of(path)
        if namespace is None:
            return self.default
        for route in self.routes:
            if fnmatch.fnmatchcase(namespace, route.glob):
                return route.stream
        return self.default
