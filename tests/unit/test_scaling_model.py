"""bench/scaling.py on hand-checkable cases, and docs/scaling.md's tables equal to what it
computes (so the page cannot drift from the model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from testkit import scaling_model as scaling
from testkit.scaling_model import MIB, QUOTAS, Quota

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
BIG = Quota("test", 5 * MIB, 2_000, 500_000)


def test_bytes_bind_for_a_busy_node() -> None:
    # 5 MiB/s at 14x, 50 KB/s a node, calls and records far from their quotas.
    nodes, binding = scaling.nodes_per_stream(BIG, 50_000, 1 / 14, 1, 1)
    assert binding == "bytes"
    assert nodes == pytest.approx(5 * 1048576 * 14 / 50_000)  # ~1,468


def test_calls_bind_for_quiet_nodes() -> None:
    nodes, binding = scaling.nodes_per_stream(BIG, 10_000, 1 / 14, 8, 20)
    assert (nodes, binding) == (250, "calls")


def test_records_bind_when_records_are_many() -> None:
    nodes, binding = scaling.nodes_per_stream(BIG, 1_000, 1 / 14, 1, 10_000)
    assert (nodes, binding) == (50, "records")


def test_streams_needed_rounds_up() -> None:
    # 1,000 nodes at 8 calls/s: 8,000 calls/s over 2,000 per stream.
    assert scaling.streams_needed(BIG, 1_000, 1_000, 0.07, calls=8, records=1) == 4
    assert scaling.streams_needed(BIG, 1_001, 1_000, 0.07, calls=8, records=1) == 5


def test_records_per_file_follow_the_flush_interval() -> None:
    # A record opens at a line and closes one interval later; the next waits for a line.
    assert scaling.records_per_file(1.0, 1.0) == pytest.approx(0.5)
    assert scaling.records_per_file(1000.0, 1.0) == pytest.approx(1000 / 1001)
    assert scaling.records_per_file(100.0, 5.0) == pytest.approx(100 / 501)
    assert scaling.records_per_file(0.0) == 0.0
    # A file busy enough to fill 1 MiB records sends one per MiB.
    busy = 10 * scaling.MAX_RECORD_BYTES / scaling.LINE_BYTES
    assert scaling.records_per_file(busy, 1.0) == pytest.approx(10)


def test_calls_floor_is_one_per_flush_interval_or_one_per_call_target() -> None:
    assert scaling.node_calls_floor(50_000, 0.07, 1.0) == 1.0
    assert scaling.node_calls_floor(50_000, 0.07, 5.0) == 0.2
    # 3 MB/s of records as sent: base64 makes 4 MB/s, 512 KiB per call.
    assert scaling.node_calls_floor(3_000_000, 1.0, 1.0) == pytest.approx(4e6 / 524288, rel=1e-4)
    assert scaling.node_calls_floor(0, 0.07) == 0


def test_billing_floor_is_5_kb_per_record() -> None:
    assert scaling.billed_per_node(50_000, 10, 0.07) == 10 * 5120
    assert scaling.billed_per_node(50_000, 0.1, 0.07) == pytest.approx(3_500)


def test_lambda_load_by_hand() -> None:
    load = scaling.lambda_load(1_000, 50_000, 0.0685)
    incoming = 1_000 * 50_000 * 0.0685  # bytes/s into the stream
    assert load.invocations_per_s == pytest.approx(incoming / 250_000)
    raw_mb = 50_000_000 / 1e6 / load.invocations_per_s
    assert load.duration_s == pytest.approx(raw_mb * 0.696 / 30)
    assert load.concurrency == pytest.approx(load.invocations_per_s * load.duration_s)
    per_call = load.duration_s * 0.5 * 0.0000133334 + 0.2e-6
    assert load.usd_per_month == pytest.approx(load.invocations_per_s * per_call * 730 * 3600)
    # A quiet stream is still invoked once per buffer interval.
    assert scaling.lambda_load(1, 10, 0.07).invocations_per_s == pytest.approx(1 / 60)


def test_quotas_scale_together() -> None:
    for quota in QUOTAS:
        assert quota.calls_per_s / (quota.bytes_per_s / MIB) in {400, 1000}
        assert quota.records_per_s / quota.calls_per_s in {250, 100}


def table_rows(text: str, header_start: str) -> list[list[str]]:
    """The rows of the markdown table whose header row starts with `header_start`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| " + header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.parametrize(
    ("header", "rows"),
    [
        (scaling.NODES_HEADER, scaling.nodes_table),
        (scaling.FLEET_HEADER, scaling.fleet_table),
        (scaling.FLUSH_HEADER, scaling.flush_table),
    ],
    ids=["nodes", "fleet", "flush"],
)
def test_the_page_shows_what_the_model_computes(
    header: list[str], rows: Callable[[], list[list[str]]]
) -> None:
    text = DOC.read_text()
    assert "| " + " | ".join(header) + " |" in text
    assert table_rows(text, header[0]) == rows()
