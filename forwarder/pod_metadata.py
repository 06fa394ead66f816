"""Pod labels and annotations from the Kubernetes API (opt-in: ``--kubernetes-metadata``).

One background thread lists the pods of this node (``fieldSelector=spec.nodeName=<node>``)
and then follows them with a watch, the API server's own protocol: a JSON event per line
(``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK``, ``ERROR``), resumed from the last
``resourceVersion`` after a dropped connection and re-listed after ``410 Gone``. The cache
keeps, per (namespace, pod name), what the record header carries: labels, the annotations
chosen by ``--kubernetes-annotations``, the node name and the pod uid. It never blocks the
log path: lookups read a dict; while the API server is down or slow, records go out
without the metadata (``podhose_records_without_metadata_total`` counts them) and the
thread retries with backoff.

Memory is bounded: at most ``MAX_PODS`` pods are kept (least recently changed dropped
first); a deleted pod stays ``DELETED_TTL_S`` so the last lines of its files still find it.

Example::

    watcher = PodMetadataWatcher(ApiAccess.in_cluster(), node="ip-10-0-0-1", annotations=[])
    watcher.start()
    watcher.header_field("default", "web-7d9f")  # b"eyJsYWJlbHMi..." or None
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import os
import ssl
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPResponse, HTTPSConnection
from typing import Any

from forwarder import limits
from podhose_wire.kubelet_name import KubeletName

log = logging.getLogger("forwarder")

#: Pods kept in the cache (a node runs at most a few hundred; kubelet's default is 110).
MAX_PODS = 2048
#: How long a deleted pod's metadata is kept for the lines still draining from its files.
DELETED_TTL_S = 300.0
#: A header field larger than this is left out (and the record counted without metadata).
MAX_FIELD_BYTES = limits.MAX_METADATA_BYTES
#: The watch's server-side timeout; the client's socket timeout is a little longer.
WATCH_TIMEOUT_S = 290
RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class ApiAccess:
    """Where the API server is and how to authenticate (the pod's service account)."""

    url: str
    token_path: str = f"{SERVICE_ACCOUNT}/token"
    ca_path: str = f"{SERVICE_ACCOUNT}/ca.crt"

    @classmethod
    def in_cluster(
        cls, url: str | None = None, token_path: str = f"{SERVICE_ACCOUNT}/token"
    ) -> ApiAccess:
        """``url`` or the in-cluster address from KUBERNETES_SERVICE_HOST/PORT."""
        if not url:
            host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            url = f"https://{host}:{port}"
        return cls(url, token_path)

    def token(self) -> str | None:
        """The bearer token, re-read on every connection (kubelet rotates it)."""
        try:
            with open(self.token_path) as fh:
                return fh.read().strip() or None
        except OSError:
            return None

    def connect(self, timeout: float) -> HTTPConnection:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme == "https":
            context = ssl.create_default_context(
                cafile=self.ca_path if os.path.exists(self.ca_path) else None
            )
            return HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=timeout,
                                   context=context)  # fmt: skip
        return HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)


@dataclass
class _Pod:
    field: bytes | None  # the encoded header field, or None when too large
    deleted_at: float | None = None


@dataclass
class PodMetadataWatcher:
    """The node's pods, listed and watched on a daemon thread; ``header_field`` reads them."""

    access: ApiAccess
    node: str
    annotations: list[str]
    max_pods: int = MAX_PODS
    pods: OrderedDict[tuple[str, str], _Pod] = field(default_factory=OrderedDict)
    synced: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> PodMetadataWatcher:
        threading.Thread(target=self._run, name="pod-metadata", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def header_field(self, namespace: str, pod: str) -> bytes | None:
        """The ``k8s=`` header value for a pod of this node, or None if unknown."""
        with self._lock:
            entry = self.pods.get((namespace, pod))
        return entry.field if entry is not None else None

    # --- the list/watch loop -------------------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_MIN_S
        version: str | None = None
        while not self.stopped.is_set():
            try:
                if version is None:
                    version = self._list()
                    self.synced.set()
                    log.info(
                        "pod metadata listed", extra={"pods": len(self.pods), "node": self.node}
                    )
                started = time.monotonic()
                version = self._watch(version)
                delay = RETRY_MIN_S
                if time.monotonic() - started < RETRY_MIN_S:  # ended at once: do not spin
                    self.stopped.wait(RETRY_MIN_S)
            except Exception as exc:  # best effort: the thread must outlive any failure
                log.warning("pod metadata unavailable, retrying",
                            extra={"error": str(exc), "retry_s": delay})  # fmt: skip
                if isinstance(exc, ApiError) and exc.status == 410:
                    version = None  # too old to resume: list again
                self.stopped.wait(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    def _path(self, **params: str) -> str:
        query = {"fieldSelector": f"spec.nodeName={self.node}", **params}
        return "/api/v1/pods?" + urllib.parse.urlencode(query)

    def _request(self, path: str, timeout: float) -> tuple[HTTPConnection, HTTPResponse]:
        conn = self.access.connect(timeout)
        token = self.access.token()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            body = response.read(2048).decode("utf-8", "replace")
            conn.close()
            raise ApiError(response.status, body)
        return conn, response

    def _list(self) -> str:
        conn, response = self._request(self._path(), timeout=60)
        try:
            doc = json.loads(response.read())
        finally:
            conn.close()
        now = time.monotonic()
        with self._lock:
            for key in list(self.pods):
                self.pods[key].deleted_at = self.pods[key].deleted_at or now  # gone unless listed
            for item in doc.get("items", []):
                self._put(item, deleted=False)
        return str(doc.get("metadata", {}).get("resourceVersion", ""))

    def _watch(self, version: str) -> str:
        params = {"watch": "1", "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(WATCH_TIMEOUT_S), "resourceVersion": version}  # fmt: skip
        conn, response = self._request(self._path(**params), timeout=WATCH_TIMEOUT_S + 30)
        try:
            while not self.stopped.is_set():
                line = response.readline()
                if not line:
                    return version  # the server ended the watch: resume from here
                version = self._event(json.loads(line)) or version
        finally:
            conn.close()
        return version

    def _event(self, event: dict[str, Any]) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise ApiError(int(obj.get("code", 500)), str(obj.get("message", "")))
        with self._lock:
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._put(obj, deleted=kind == "DELETED")
            self._expire(time.monotonic())
        return obj.get("metadata", {}).get("resourceVersion")

    # --- the cache -------------------------------------------------------------------------

    def _put(self, pod: dict[str, Any], *, deleted: bool) -> None:
        meta = pod.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        entry = _Pod(self._encode(pod), time.monotonic() if deleted else None)
        self.pods.pop(key, None)
        self.pods[key] = entry  # most recently changed last
        while len(self.pods) > self.max_pods:
            self.pods.popitem(last=False)

    def _expire(self, now: float) -> None:
        gone = [
            k for k, p in self.pods.items() if p.deleted_at and now - p.deleted_at > DELETED_TTL_S
        ]
        for key in gone:
            del self.pods[key]

    def _encode(self, pod: dict[str, Any]) -> bytes | None:
        meta = pod.get("metadata", {})
        chosen = {
            name: value
            for name, value in (meta.get("annotations") or {}).items()
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.annotations)
        }
        doc: dict[str, Any] = {"pod_id": meta.get("uid", ""), "host": self.node}
        if meta.get("labels"):
            doc["labels"] = meta["labels"]
        if chosen:
            doc["annotations"] = chosen
        raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        encoded = base64.urlsafe_b64encode(raw).rstrip(b"=")
        return encoded if len(encoded) <= MAX_FIELD_BYTES else None


def pod_of(src: str) -> tuple[str, str] | None:
    """(namespace, pod) of a kubelet log file name (podhose_wire.kubelet_name), or None."""
    name = KubeletName.parse(src)
    return (name.namespace, name.pod) if name else None


class PodLookup:
    """What the batcher asks for: a file's metadata field; it counts records sent without."""

    def __init__(self, watcher: PodMetadataWatcher, on_missing: Callable[[int], None]) -> None:
        self.watcher = watcher
        self.missing = on_missing

    def header_field(self, src: str) -> bytes | None:
        pod = pod_of(src)
        return self.watcher.header_field(*pod) if pod else None


class ApiError(Exception):
    """The API server answered with an error status (401, 403, 410, ...)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
