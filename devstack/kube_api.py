"""A local stand-in for the Kubernetes API server's pods endpoint (demo and tests).

``GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`` answers a PodList with the list's
``resourceVersion``; with ``watch=1&resourceVersion=<rv>`` it streams (chunked, one JSON
object per line) every ADDED / MODIFIED / DELETED event after ``rv`` for pods of that node,
then waits for more until ``timeoutSeconds``; a ``resourceVersion`` older than the last
compaction gets the API server's ``ERROR`` event with a 410 Status. Requests without the
expected bearer token get 401. Binds 127.0.0.1 only.

Example::

    with FakeKubeApi(token="t") as api:
        api.put_pod("default", "web-1", "node-1", labels={"app": "web"})
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class FakeKubeApi:
    def __init__(self, token: str = "test-token", tls: tuple[str, str] | None = None) -> None:
        self.token = token
        self.tls = tls  # (certificate file, key file): serve HTTPS, as a real API server
        self.version = 100
        self.compacted = 0  # watches from a resourceVersion below this get 410 Gone
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        self._generation = 0  # bumped by drop_watches()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKubeApi:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.drop_watches()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubeApi:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- the cluster's side ------------------------------------------------------------------

    def put_pod(
        self,
        namespace: str,
        name: str,
        node: str,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        with self._cv:
            key = (namespace, name)
            kind = "MODIFIED" if key in self.pods else "ADDED"
            uid = self.pods[key]["metadata"]["uid"] if key in self.pods else str(uuid.uuid4())
            self.version += 1
            metadata = {
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": str(self.version),
                "labels": labels or {},
                "annotations": annotations or {},
            }
            pod = {"kind": "Pod", "metadata": metadata, "spec": {"nodeName": node}}
            self.pods[key] = pod
            self.events.append((self.version, kind, pod))
            self._cv.notify_all()
            return pod

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._cv:
            pod = self.pods.pop((namespace, name))
            self.version += 1
            self.events.append((self.version, "DELETED", pod))
            self._cv.notify_all()

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older watches get 410."""
        with self._cv:
            self.compacted = self.version + 1
            self.events.clear()

    def drop_watches(self) -> None:
        """End every open watch (the client must resume)."""
        with self._cv:
            self._generation += 1
            self._cv.notify_all()

    # --- serving -----------------------------------------------------------------------------

    def _list(self, node: str) -> dict[str, Any]:
        with self._cv:
            items = [p for p in self.pods.values() if p["spec"]["nodeName"] == node]
            return {"kind": "PodList", "metadata": {"resourceVersion": str(self.version)},
                    "items": items}  # fmt: skip

    def _watch(
        self, handler: BaseHTTPRequestHandler, node: str, since: int, timeout: float
    ) -> None:
        def send(doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode() + b"\n"
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        with self._cv:
            generation = self._generation
            if since < self.compacted:
                gone = {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410,
                        "message": f"too old resource version: {since}"}  # fmt: skip
                send({"type": "ERROR", "object": gone})
                handler.wfile.write(b"0\r\n\r\n")
                return
        sent = since
        deadline = threading.Event()
        timer = threading.Timer(timeout, lambda: (deadline.set(), self.drop_watches()))
        timer.daemon = True
        timer.start()
        try:
            while not deadline.is_set():
                with self._cv:
                    pending = [(v, k, p) for v, k, p in self.events if v > sent]
                    if not pending:
                        if self._generation != generation or self._server is None:
                            break
                        self._cv.wait(1.0)
                        continue
                for version, kind, pod in pending:
                    sent = version
                    if pod["spec"]["nodeName"] == node:
                        send({"type": kind, "object": pod})
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        finally:
            timer.cancel()


def _handler(api: FakeKubeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            api.requests.append({"path": parts.path, "query": query,
                                 "authorization": self.headers.get("Authorization")})  # fmt: skip
            if self.headers.get("Authorization") != f"Bearer {api.token}":
                return self._json(401, {"kind": "Status", "code": 401, "reason": "Unauthorized"})
            selector = query.get("fieldSelector", "")
            if parts.path != "/api/v1/pods" or not selector.startswith("spec.nodeName="):
                return self._json(400, {"kind": "Status", "code": 400})
            node = selector.removeprefix("spec.nodeName=")
            if query.get("watch") in ("1", "true"):
                since = int(query.get("resourceVersion") or api.version)
                api._watch(self, node, since, float(query.get("timeoutSeconds", "300")))
                self.close_connection = True
                return None
            return self._json(200, api._list(node))

        def _json(self, status: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
