"""The four steps as settings, Kubernetes metadata, partition keys and the source header."""

from __future__ import annotations

import json

import pytest

from podhose_wire.header import MAGIC as HEADER_MAGIC
from podhose_wire.kubelet_name import KubeletName
from transform_lambda.settings import ENV_VARS, SettingsError, TransformSettings
from transform_lambda.transform import transform_record
from transform_lambda.wire_decoder import RecordHeader, split_header

TIME = "2019-12-28T08:19:53.704659587Z"
SEED_LINE = (
    b'{"log":"{\\"name\\": \\"fakenerd\\", \\"time_ms\\": 1577622109635}\\n",'
    b'"stream":"stdout","time":"2019-12-28T08:19:53.704659587Z"}\n'
)
CONTAINER_ID = "0123456789abcdef" * 4
SOURCE_NAME = f"fakenerd-7d4b9c8f6-x2x9q_team-a_app-{CONTAINER_ID}.log"
HEADER = HEADER_MAGIC + f" src={SOURCE_NAME}\n".encode()


def lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def test_the_seed_line_gives_the_seed_output_byte_for_byte() -> None:
    assert transform_record(SEED_LINE, TransformSettings()).data == (
        b'{"name":"fakenerd","time_ms":1577622109635}\n'
    )


def test_defaults_are_the_seed_pipeline() -> None:
    settings = TransformSettings.from_env({})
    assert settings == TransformSettings()
    assert settings.is_seed_pipeline


def test_env_vars_are_read() -> None:
    env = {
        "PODHOSE_PARSE_ENVELOPE": "true",
        "PODHOSE_DECODE_JSON": "off",
        "PODHOSE_KEEP_KEYS": "log, stream",
        "PODHOSE_LIFT_KEY": "",
        "PODHOSE_ADD_KUBERNETES_METADATA": "yes",
        "PODHOSE_PARTITION_KEYS": "namespace,container",
        "PODHOSE_MAX_REINGEST_ATTEMPTS": "5",
        "PODHOSE_MULTILINE": "regex",
        "PODHOSE_MULTILINE_START": r"^\d{4}-",
        "PODHOSE_MULTILINE_MAX_BYTES": "1000",
    }
    assert set(env) == set(ENV_VARS)
    settings = TransformSettings.from_env(env)
    assert settings == TransformSettings(
        parse_envelope=True,
        decode_json=False,
        keep_keys=("log", "stream"),
        lift_key="",
        add_kubernetes_metadata=True,
        partition_keys=("namespace", "container"),
        max_reingest_attempts=5,
        multiline="regex",
        multiline_start=r"^\d{4}-",
        multiline_max_bytes=1000,
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PODHOSE_DECODE_JSON", "maybe", "expected true or false"),
        ("PODHOSE_PARTITION_KEYS", "namespace,zone", "unknown key"),
        ("PODHOSE_MAX_REINGEST_ATTEMPTS", "three", "whole number"),
        ("PODHOSE_MAX_REINGEST_ATTEMPTS", "-1", ">= 0"),
    ],
)
def test_bad_settings_are_clear_errors(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        TransformSettings.from_env({name: value})


def test_keep_stream_and_lift_lets_app_keys_win() -> None:
    line = (
        b'{"log":"{\\"stream\\": \\"app\\", \\"a\\": 1}\\n","stream":"stdout","time":"t"}\n'
        b'{"log":"{\\"a\\": 2}\\n","stream":"stderr","time":"t"}\n'
    )
    settings = TransformSettings(keep_keys=("log", "stream"))
    assert lines(transform_record(line, settings).data) == [
        {"stream": "app", "a": 1},
        {"stream": "stderr", "a": 2},
    ]


def test_keep_everything_without_lift() -> None:
    settings = TransformSettings(keep_keys=(), lift_key="")
    [out] = lines(transform_record(SEED_LINE, settings).data)
    assert out == {
        "log": {"name": "fakenerd", "time_ms": 1577622109635},
        "stream": "stdout",
        "time": TIME,
    }


def test_decode_off_keeps_the_text() -> None:
    [out] = lines(transform_record(SEED_LINE, TransformSettings(decode_json=False)).data)
    assert out == {"log": '{"name": "fakenerd", "time_ms": 1577622109635}\n'}


def test_parse_envelope_off_treats_each_line_as_the_log() -> None:
    raw = b'{"name": "fakenerd"}\nplain text\n'
    out = lines(transform_record(raw, TransformSettings(parse_envelope=False)).data)
    assert out == [{"name": "fakenerd"}, {"log": "plain text"}]


def test_cri_fields_can_be_kept() -> None:
    line = f"{TIME} stderr F oops\n".encode()
    settings = TransformSettings(keep_keys=("log", "stream", "time"))
    assert lines(transform_record(line, settings).data) == [
        {"log": "oops", "stream": "stderr", "time": TIME}
    ]


def test_kubernetes_metadata_from_the_source_header() -> None:
    settings = TransformSettings(add_kubernetes_metadata=True)
    [out] = lines(transform_record(HEADER + SEED_LINE, settings).data)
    assert out == {
        "name": "fakenerd",
        "time_ms": 1577622109635,
        "kubernetes": {
            "namespace_name": "team-a",
            "pod_name": "fakenerd-7d4b9c8f6-x2x9q",
            "container_name": "app",
            "docker_id": CONTAINER_ID,
        },
    }


def test_metadata_needs_a_header_and_never_overrides_the_app() -> None:
    settings = TransformSettings(add_kubernetes_metadata=True)
    assert lines(transform_record(SEED_LINE, settings).data) == [
        {"name": "fakenerd", "time_ms": 1577622109635}
    ]
    app = b'{"log":"{\\"kubernetes\\": \\"mine\\"}\\n","stream":"stdout"}\n'
    assert lines(transform_record(HEADER + app, settings).data) == [{"kubernetes": "mine"}]


def test_partition_keys_from_the_header_or_unknown() -> None:
    settings = TransformSettings(partition_keys=("namespace", "container"))
    assert transform_record(HEADER + SEED_LINE, settings).partition_keys == {
        "namespace": "team-a",
        "container": "app",
    }
    assert transform_record(SEED_LINE, settings).partition_keys == {
        "namespace": "unknown",
        "container": "unknown",
    }
    assert transform_record(SEED_LINE, TransformSettings()).partition_keys is None


def test_header_round_trip_and_attempts() -> None:
    header, body = split_header(HEADER + SEED_LINE)
    assert header is not None
    assert body == SEED_LINE
    assert header.source_file == SOURCE_NAME
    assert header.attempt == 0
    again, _ = split_header(header.with_attempt(2).encode() + body)
    assert again is not None
    assert again.attempt == 2
    assert again.source == header.source
    assert split_header(SEED_LINE) == (None, SEED_LINE)
    assert RecordHeader({"src": "x"}).encode() == HEADER_MAGIC + b" src=x\n"


@pytest.mark.parametrize(
    "name",
    ["not-a-kubelet-name.log", f"Pod_ns_c-{CONTAINER_ID}.log", "pod_ns_c-short.log"],
)
def test_names_kubelet_does_not_write_give_no_source(name: str) -> None:
    assert KubeletName.parse(name) is None


def test_pod_names_with_dots_and_containers_with_dashes() -> None:
    source = KubeletName.parse(f"web.v2-0_prod_side-car-{CONTAINER_ID}.log")
    assert source == KubeletName("prod", "web.v2-0", "side-car", CONTAINER_ID)
