"""Pod labels and annotations (--kubernetes-metadata) against a local fake API server.

devstack/kube_api.py speaks the API server's list and watch protocol on 127.0.0.1; the
watcher is tested on its own (list, watch events, resume, 410 re-list, bounded cache,
least privilege: one field-selected pods query with the token) and inside the real
forwarder process, whose records the real transform turns into lines with ``kubernetes``.
"""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack import polling
from devstack.firehose_endpoint import FirehoseEndpoint
from devstack.kube_api import FakeKubeApi
from forwarder.pod_metadata import ApiAccess, PodMetadataWatcher, pod_of
from testkit.forwarder import ForwarderProc, Node, running, wait_for
from testkit.lines import cri_line
from transform_lambda.settings import TransformSettings
from transform_lambda.transform import transform_record

TOKEN = "s3cr3t-token"


@pytest.fixture
def api() -> FakeKubeApi:
    with FakeKubeApi(token=TOKEN) as server:
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def decoded(field: bytes | None) -> dict:
    assert field is not None
    return json.loads(base64.urlsafe_b64decode(field + b"=" * (-len(field) % 4)))


def watcher_for(api: FakeKubeApi, token_file: Path, **kw: object) -> PodMetadataWatcher:
    access = ApiAccess(api.url, str(token_file))
    return PodMetadataWatcher(access, "node-1", ["team.example.com/*"], **kw)  # type: ignore[arg-type]


def test_list_then_watch_keeps_the_nodes_pods(api: FakeKubeApi, token_file: Path) -> None:
    api.put_pod(
        "default",
        "web-1",
        "node-1",
        labels={"app": "web"},
        annotations={"team.example.com/owner": "pay", "kubectl.io/last": "x" * 500},
    )
    api.put_pod("default", "other", "node-2", labels={"app": "other"})  # fmt: skip
    watcher = watcher_for(api, token_file).start()
    try:
        assert watcher.synced.wait(10)
        meta = decoded(watcher.header_field("default", "web-1"))
        assert meta["labels"] == {"app": "web"} and meta["host"] == "node-1"
        assert meta["annotations"] == {"team.example.com/owner": "pay"}  # only the chosen
        assert meta["pod_id"] == api.pods[("default", "web-1")]["metadata"]["uid"]
        assert watcher.header_field("default", "other") is None  # another node's pod

        api.put_pod("default", "web-1", "node-1", labels={"app": "web", "version": "2"})
        api.put_pod("shop", "cart-1", "node-1", labels={"app": "cart"})
        assert wait_for_field(watcher, "shop", "cart-1")
        assert wait_until(lambda: decoded(watcher.header_field("default", "web-1"))["labels"]
                          == {"app": "web", "version": "2"})  # fmt: skip
        api.delete_pod("shop", "cart-1")
        assert wait_until(lambda: watcher.pods[("shop", "cart-1")].deleted_at is not None)
        assert watcher.header_field("shop", "cart-1") is not None  # kept while files drain

        # The watch ends and history is compacted: 410 Gone -> list again -> new pods seen.
        api.compact()
        api.put_pod("default", "late-1", "node-1", labels={"app": "late"})
        api.compact()
        api.drop_watches()
        assert wait_for_field(watcher, "default", "late-1")
    finally:
        watcher.stop()
        api.drop_watches()
    assert all(r["query"]["fieldSelector"] == "spec.nodeName=node-1" for r in api.requests)
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in api.requests)
    assert {r["path"] for r in api.requests} == {"/api/v1/pods"}  # nothing but pods
    assert any(r["query"].get("watch") == "1" for r in api.requests)


def test_cache_is_bounded(api: FakeKubeApi, token_file: Path) -> None:
    for i in range(10):
        api.put_pod("default", f"p-{i}", "node-1", labels={"i": str(i)})
    watcher = watcher_for(api, token_file, max_pods=4).start()
    try:
        assert watcher.synced.wait(10)
        assert len(watcher.pods) <= 4
    finally:
        watcher.stop()
        api.drop_watches()


def test_wrong_token_leaves_no_metadata_and_retries(api: FakeKubeApi, tmp_path: Path) -> None:
    bad = tmp_path / "bad-token"
    bad.write_text("wrong")
    watcher = PodMetadataWatcher(ApiAccess(api.url, str(bad)), "node-1", []).start()
    try:
        assert wait_until(lambda: len(api.requests) >= 2, timeout=10)  # it keeps retrying
        assert not watcher.synced.is_set()
    finally:
        watcher.stop()


def test_pod_of_reads_kubelet_names() -> None:
    assert pod_of("web-1_default_app-" + "a" * 64 + ".log") == ("default", "web-1")
    assert pod_of("not-a-kubelet-name.log") is None


def test_forwarder_sends_labels_the_transform_adds_and_flows_without_them(
    api: FakeKubeApi, token_file: Path, endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    api.put_pod("default", "web-1", "node-1", labels={"app": "web", "team": "payments"})
    web = node.add("web-1", "cri")
    web.write(b"".join(cri_line(f'{{"n": {i}}}') for i in range(50)))
    extra = ("--kubernetes-metadata", "--kubernetes-api", api.url, "--node-name", "node-1",
             "--kubernetes-token-file", str(token_file))  # fmt: skip
    db = tmp_path / "state" / "offsets.db"
    with running(ForwarderProc(endpoint.url, node, db, *extra)) as proc:
        wait_for(lambda: proc.up() and len(endpoint.received()) > 0, 30, "records")
        settings = TransformSettings(add_kubernetes_metadata=True, partition_keys=("label:app",))
        result = transform_record(endpoint.received()[0], settings)
        line = json.loads(result.data.splitlines()[0])
        assert line["kubernetes"]["labels"] == {"app": "web", "team": "payments"}
        assert line["kubernetes"]["host"] == "node-1"
        assert line["kubernetes"]["pod_name"] == "web-1"
        assert result.partition_keys == {"label_app": "web"}

        api.stop()  # the API server goes away: lines keep flowing, without the metadata
        before = len(endpoint.received())
        unknown = node.add("api-2", "cri")
        unknown.write(cri_line('{"late": true}'))
        wait_for(lambda: len(endpoint.received()) > before, 30, "records after the API left")
        wait_for(lambda: proc.metric("podhose_records_without_metadata_total") >= 1, 10, "metric")
        last = transform_record(
            endpoint.received()[-1], TransformSettings(add_kubernetes_metadata=True)
        )
        assert "labels" not in json.loads(last.data.splitlines()[0])["kubernetes"]
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def wait_until(predicate: Callable[[], object], timeout: float = 10) -> bool:
    """Poll `predicate` (a KeyError or AssertionError counts as not yet) until true."""

    def holds() -> bool:
        try:
            return bool(predicate())
        except (KeyError, AssertionError):
            return False

    return polling.wait_for(holds, timeout, 0.05)


def wait_for_field(watcher: PodMetadataWatcher, namespace: str, pod: str) -> bool:
    return wait_until(lambda: watcher.header_field(namespace, pod) is not None)


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as files (the API server's and its CA)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    loopback = ipaddress.ip_address("127.0.0.1")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(loopback)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "ca.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    return str(cert_path), str(key_path)


def test_https_api_is_verified_with_the_service_account_ca(
    token_file: Path, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    with FakeKubeApi(token=TOKEN, tls=(cert, key)) as api:
        api.put_pod("default", "web-1", "node-1", labels={"app": "web"})
        trusted = PodMetadataWatcher(ApiAccess(api.url, str(token_file), cert), "node-1", [])
        untrusted = PodMetadataWatcher(
            ApiAccess(api.url, str(token_file), str(tmp_path / "missing-ca.crt")), "node-1", []
        )
        trusted.start()
        untrusted.start()
        try:
            assert trusted.synced.wait(10)
            assert decoded(trusted.header_field("default", "web-1"))["labels"] == {"app": "web"}
            assert not untrusted.synced.wait(1.5)  # a self-signed server without its CA: refused
        finally:
            trusted.stop()
            untrusted.stop()
            api.drop_watches()
