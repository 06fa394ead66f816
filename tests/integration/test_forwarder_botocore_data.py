"""The Firehose-only botocore data directory (forwarder/botocore_data.py): generated from the
installed botocore, resolving every endpoint as the full data does, really the data a client
loads, used by the forwarder, and never when made for another botocore version."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import botocore
import pytest
from botocore.loaders import Loader

from devstack.firehose_endpoint import FirehoseEndpoint
from forwarder import botocore_data
from forwarder.config import parse_config
from forwarder.sender import make_client
from testkit.forwarder import REPO, STREAM, ForwarderProc, Node, got, lines_of
from testkit.lines import docker_line

BUILTIN_ENDPOINTS = str(Path(Loader.BUILTIN_DATA_PATH) / "endpoints.json")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An XDG_CACHE_HOME whose directory the forwarder's path generated (in a child process,
    which checks it against the full data before renaming it into place)."""
    home = tmp_path_factory.mktemp("xdg-cache")
    path = botocore_data.data_path(env={"XDG_CACHE_HOME": str(home)})
    assert path == str(home / "podhose" / f"botocore-data-{botocore.__version__}")
    return home


@pytest.fixture(scope="module")
def data(cache: Path) -> Path:
    return botocore_data.cache_dir({"XDG_CACHE_HOME": str(cache)})


def test_generated_from_the_installed_botocore_with_only_firehose_in_every_partition(
    data: Path,
) -> None:
    full = botocore_data.builtin_loader().load_data("endpoints")
    trimmed = json.loads((data / "endpoints.json").read_text())
    assert [p["partition"] for p in trimmed["partitions"]] == [
        p["partition"] for p in full["partitions"]
    ]
    assert {"aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b"} <= {
        p["partition"] for p in trimmed["partitions"]
    }
    for mine, theirs in zip(trimmed["partitions"], full["partitions"], strict=True):
        assert {k: v for k, v in mine.items() if k != "services"} == {
            k: v for k, v in theirs.items() if k != "services"
        }
        assert set(mine["services"]) <= set(botocore_data.SERVICES)
        for name, service in mine["services"].items():
            assert service == theirs["services"][name]
    assert (data / "endpoints.json").stat().st_size < 100_000  # botocore's: 1.25 MB
    marker = json.loads((data / botocore_data.MARKER).read_text())
    assert marker["botocore_version"] == botocore.__version__
    model = json.loads((data / marker["model"] / "service-2.json").read_text())
    assert "PutRecordBatch" in model["operations"]
    assert "documentation" not in json.dumps(model["operations"]["PutRecordBatch"])


def test_every_region_of_every_partition_resolves_as_with_the_full_data(data: Path) -> None:
    """Both FIPS and dual-stack off and on: the same URL, headers, body and SigV4 scope of
    the call a client would send. The generating child compared every case of the five
    services (it renames the directory into place only when none differs); firehose's are
    compared here again, in this process."""
    endpoints = botocore_data.builtin_loader().load_data("endpoints")
    marker = json.loads((data / botocore_data.MARKER).read_text())
    assert marker["checked_resolutions"] == len(list(botocore_data.cases(endpoints))) > 1000
    count, differences = botocore_data.check(data, ("firehose",))
    regions = {region for _, region, _, _ in botocore_data.cases(endpoints, ("firehose",))}
    assert count == 4 * len(regions) and len(regions) > 50
    assert differences == []


def test_the_check_finds_a_difference_and_generation_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_cases, real_trim = botocore_data.cases, botocore_data.trim_endpoints

    def firehose_only(endpoints: dict, services: object = None, only: tuple = ()) -> object:
        return real_cases(endpoints, ("firehose",), only)

    def wrong_default(endpoints: dict, keep: object = botocore_data.SERVICES) -> dict:
        trimmed = real_trim(endpoints)
        trimmed["partitions"][0]["defaults"]["hostname"] = "{service}.{region}.x.{dnsSuffix}"
        return trimmed

    monkeypatch.setattr(botocore_data, "cases", firehose_only)
    monkeypatch.setattr(botocore_data, "trim_endpoints", wrong_default)
    out = tmp_path / "data"
    assert botocore_data.main(["--out", str(out)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("python -m forwarder.botocore_data: error: the trimmed data resolves")
    assert "firehose in af-south-1 (fips=False, dualstack=False)" in line
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary directory left


def test_the_check_command_on_a_foreign_directory_fails(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "forwarder.botocore_data", "--check", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "error:" in done.stderr


PROBE = """
import os, sys
opened = []
sys.addaudithook(lambda event, args: event == "open" and isinstance(args[0], str)
                 and args[0].endswith((".json", ".json.gz")) and opened.append(args[0]))
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
import boto3
from forwarder import botocore_data
full = sys.argv[1] == "full"
before = rss()
session = boto3.session.Session(botocore_session=botocore_data.session(full))
client = session.client("firehose", region_name="us-east-1")
print(rss() - before)
print(*opened, sep="\\n")
"""


def _probe(mode: str, data: Path) -> tuple[int, list[str]]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "AWS_DATA_PATH": str(data)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True
    )
    grown, *opened = done.stdout.splitlines()
    return int(grown), opened


def test_a_client_loads_the_trimmed_files_and_takes_less_memory(data: Path) -> None:
    trimmed_rss, trimmed_files = _probe("trimmed", data)
    full_rss, full_files = _probe("full", data)  # --full-botocore-data drops our entry
    assert str(data / "endpoints.json") in trimmed_files
    assert BUILTIN_ENDPOINTS not in trimmed_files
    assert any(f.startswith(str(data / "firehose")) for f in trimmed_files)
    assert BUILTIN_ENDPOINTS in full_files
    assert [f for f in full_files if f.startswith(str(data))] == [str(data / botocore_data.MARKER)]
    assert full_rss - trimmed_rss > 4 * 2**20, (full_rss, trimmed_rss)


def test_put_record_batch_to_a_loopback_endpoint_with_the_trimmed_data(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DATA_PATH", str(data))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with FirehoseEndpoint() as endpoint:
        cfg = parse_config(["--delivery-stream", STREAM, "--endpoint-url", endpoint.url,
                            "--region", "us-east-1"], {})  # fmt: skip
        client = make_client(cfg)
        loader = client._loader
        assert loader.load_data_with_path("endpoints")[1] == str(data / "endpoints")
        resp = client.put_record_batch(DeliveryStreamName=STREAM, Records=[{"Data": b"x\n"}])
        assert resp["FailedPutCount"] == 0
        assert endpoint.received(STREAM) == [b"x\n"]


def test_the_forwarder_uses_the_cache_directory(
    cache: Path, data: Path, tmp_path: Path, node: Node
) -> None:
    """A forwarder run from source (no AWS_DATA_PATH) finds the generated directory in its
    cache, says so at DEBUG, and delivers."""
    c = node.add("web-1", "docker")
    written = b"".join(docker_line(f"line {i}\n") for i in range(100))
    c.write(written)
    with FirehoseEndpoint() as endpoint:
        proc = ForwarderProc(endpoint.url, node, tmp_path / "state" / "offsets.db",
                             "--exit-on-eof", "--log-level", "DEBUG",
                             env={"XDG_CACHE_HOME": str(cache)})  # fmt: skip
        env = {k: v for k, v in proc.env.items() if k != "AWS_DATA_PATH"}
        proc.env = env
        with proc:
            assert proc.wait(60) == 0, proc.log()
        assert got(endpoint, c) == lines_of(written)
    [line] = [json.loads(x) for x in proc.log().splitlines() if '"botocore data' in x]
    assert line["msg"] == botocore_data.USING and line["path"] == str(data)
    assert line["level"] == "DEBUG" and line["generated"] is False


def test_a_directory_for_another_botocore_version_is_never_used(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(data, stale)
    marker = json.loads((stale / botocore_data.MARKER).read_text())
    (stale / botocore_data.MARKER).write_text(json.dumps({**marker, "botocore_version": "1.0.0"}))
    assert "generated for botocore 1.0.0" in (botocore_data.usable(stale) or "")
    caplog.set_level(logging.INFO, "forwarder.botocore_data")

    # Named by AWS_DATA_PATH: left out (another entry stays), with a warning.
    other = str(tmp_path / "models")
    given = f"{stale}:{other}"
    assert botocore_data.data_path(env={"AWS_DATA_PATH": given}) == other
    assert botocore_data.data_path(env={"AWS_DATA_PATH": str(stale)}) == Loader.BUILTIN_DATA_PATH
    assert "generated for botocore 1.0.0" in caplog.records[-1].getMessage()
    # A valid one of ours is kept as given; --full-botocore-data drops it.
    assert botocore_data.data_path(env={"AWS_DATA_PATH": str(data)}) is None
    assert botocore_data.data_path(True, {"AWS_DATA_PATH": str(data)}) == Loader.BUILTIN_DATA_PATH
    assert botocore_data.data_path(True, {}) is None

    # In the cache under the installed version's name but marked for another: regenerated,
    # and when that fails, the full data with one warning.
    cache = tmp_path / "xdg"
    shutil.copytree(stale, botocore_data.cache_dir({"XDG_CACHE_HOME": str(cache)}))

    def fail(target: Path, env: object) -> None:
        raise botocore_data.BotocoreDataError("no")

    monkeypatch.setattr(botocore_data, "_generate_in_child", fail)
    caplog.clear()
    assert botocore_data.data_path(env={"XDG_CACHE_HOME": str(cache)}) is None
    [record] = caplog.records
    assert record.levelname == "WARNING" and "using the full data" in record.getMessage()

    # A session on a stale directory does not take its endpoints as botocore's own.
    session = botocore_data.session_on(str(stale))
    assert not session._get_internal_component("endpoint_resolver").uses_builtin_data


def test_an_unwritable_cache_falls_back_to_the_full_data_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    caplog.set_level(logging.INFO, "forwarder.botocore_data")
    assert botocore_data.data_path(env={"XDG_CACHE_HOME": str(not_a_dir)}) is None
    [record] = caplog.records
    assert record.levelname == "WARNING"


def test_a_session_that_cannot_take_the_copy_as_botocore_s_own_uses_the_full_data(
    data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the mark, botocore would resolve some endpoints differently from the copy:
    then the copy is not used at all."""

    def broken(made: object) -> None:
        raise AttributeError("_internal_components")

    monkeypatch.setenv("AWS_DATA_PATH", str(data))
    monkeypatch.setattr(botocore_data, "treat_as_builtin", broken)
    session = botocore_data.session()
    path = session.get_component("data_loader").load_data_with_path("endpoints")[1]
    assert path == str(Path(Loader.BUILTIN_DATA_PATH) / "endpoints")
    assert [r.levelname for r in caplog.records if "cannot mark" in r.getMessage()] == ["WARNING"]


def test_the_forwarders_own_start_checks_its_region_only(tmp_path: Path) -> None:
    """A start from source generates the copy checked in its region (20 resolutions: five
    services, FIPS and dual-stack off and on), not the ~1,340 of the image build."""
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    path = botocore_data.data_path(env=env, regions=("eu-west-1",))
    assert path is not None
    marker = json.loads((Path(path) / botocore_data.MARKER).read_text())
    assert marker["checked_resolutions"] == len(botocore_data.SERVICES) * 4


@pytest.mark.parametrize(
    "damage",
    ["endpoints.json", "service-2.json"],
)
def test_a_damaged_copy_falls_back_to_the_full_data_and_delivers(
    data: Path, tmp_path: Path, node: Node, damage: str
) -> None:
    """A copy whose marker is right but whose files are damaged (truncated, edited): the
    client could not be made and the forwarder exited with a traceback at every start."""
    broken = tmp_path / "xdg"
    target = botocore_data.cache_dir({"XDG_CACHE_HOME": str(broken)})
    shutil.copytree(data, target)
    [damaged] = target.rglob(damage)
    damaged.write_text(damaged.read_text()[:1000])
    c = node.add("web-1", "docker")
    written = b"".join(docker_line(f"line {i}\n") for i in range(10))
    c.write(written)
    with FirehoseEndpoint() as endpoint:
        proc = ForwarderProc(endpoint.url, node, tmp_path / "state" / "offsets.db",
                             "--exit-on-eof", env={"XDG_CACHE_HOME": str(broken)})  # fmt: skip
        proc.env = {k: v for k, v in proc.env.items() if k != "AWS_DATA_PATH"}
        with proc:
            assert proc.wait(60) == 0, proc.log()
        assert got(endpoint, c) == lines_of(written)
    log = proc.log()
    assert "Traceback" not in log
    [warning] = [json.loads(x) for x in log.splitlines() if "cannot make a client" in x]
    assert warning["level"] == "WARNING" and "Error" in warning["error"]
