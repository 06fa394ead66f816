"""Per-stream quotas: the local endpoint throttles as Firehose does, the pacer backs off and
probes as designed, and a fleet of forwarders drains a backlog at a quota well below its
offered rate with nothing lost, nothing twice, close to the ideal time and few throttled
calls.

The fleet test prints its figures; `PODHOSE_PACING=off` in the environment runs the same
fleet without pacing (its throttled-share assertion then fails: that is the point).
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.firehose_endpoint import FirehoseEndpoint
from forwarder import pacing
from forwarder.pacing import Pacer
from podhose_wire.firehose_limits import SMALL_REGION_QUOTA, Quota
from testkit.forwarder import REPO, STREAM, ForwarderProc, Node, delivered, free_port
from testkit.lines import cri_line

# ----- the endpoint's quotas


def client(url: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "firehose", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
        aws_secret_access_key="test", config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip


class Clock:
    """Time that moves only when a test moves it (or a pacer sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    """The quotas' time, moved by the test alone: a slow machine cannot refill a bucket."""
    return Clock()


@pytest.fixture
def quota_endpoint(clock: Clock) -> Iterator[FirehoseEndpoint]:
    with FirehoseEndpoint(quota=Quota(calls_per_second=3), clock=clock) as ep:
        yield ep


def test_a_burst_over_the_calls_quota_is_refused_whole(
    quota_endpoint: FirehoseEndpoint, clock: Clock
) -> None:
    fh = client(quota_endpoint.url)
    for _ in range(3):  # the bucket holds one second of quota
        fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"x"}])
    with pytest.raises(ClientError) as exc:
        fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"y"}])
    error = exc.value.response["Error"]
    assert (error["Code"], error["Message"]) == ("ServiceUnavailableException", "Slow down.")
    assert isinstance(exc.value, fh.exceptions.ServiceUnavailableException)
    with pytest.raises(fh.exceptions.ServiceUnavailableException):
        fh.put_record(DeliveryStreamName="s", Record={"Data": b"z"})
    clock.now += 0.3
    with pytest.raises(fh.exceptions.ServiceUnavailableException):
        fh.put_record(DeliveryStreamName="s", Record={"Data": b"v"})  # not yet: 0.9 of a call
    clock.now += 0.04  # 3 calls/s: one more call is due after 1/3 s
    fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"w"}])
    assert quota_endpoint.received() == [b"x", b"x", b"x", b"w"]
    stats = quota_endpoint.stats_dict()
    assert (stats["throttled_calls"], stats["throttled_records"], stats["calls"]) == (3, 3, 4)


def test_records_over_the_bytes_or_records_quota_fail_one_by_one(clock: Clock) -> None:
    with FirehoseEndpoint(quota=Quota(bytes_per_second=1000), clock=clock) as ep:
        ep.set_quota(Quota(records_per_second=2), stream="few")
        fh = client(ep.url)
        sizes = (300, 300, 300, 500, 300)
        resp = fh.put_record_batch(
            DeliveryStreamName="s", Records=[{"Data": b"x" * n} for n in sizes]
        )  # 4 fit: a record goes while any of the second's bytes are left (400 over)
        assert resp["FailedPutCount"] == 1
        last = resp["RequestResponses"][-1]
        assert (last["ErrorCode"], last["ErrorMessage"]) == ("ServiceUnavailableException",
                                                              "Slow down.")  # fmt: skip
        clock.now += 0.39
        resp = fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"x"}])
        assert resp["FailedPutCount"] == 1  # none fit: a 200 answer with every record failed
        clock.now += 0.02  # the 400 bytes over are paid for: one record goes again
        resp = fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"y" * 100}] * 2)
        assert [("ErrorCode" in r) for r in resp["RequestResponses"]] == [False, True]
        resp = fh.put_record_batch(
            DeliveryStreamName="few", Records=[{"Data": b"a"}, {"Data": b"b"}, {"Data": b"c"}]
        )  # another stream has its own quota
        assert [("ErrorCode" in r) for r in resp["RequestResponses"]] == [False, False, True]
        assert ep.quota_of("few") == Quota(records_per_second=2)
        assert ep.quota_of("other") == Quota(bytes_per_second=1000)
        stats = ep.stats_dict()
        assert (stats["partly_throttled_calls"], stats["throttled_records"]) == (4, 4)
        assert stats["throttled_calls"] == 0
        ep.set_quota(None)
        assert fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"x"}])[
            "FailedPutCount"
        ] == 0  # fmt: skip


def test_the_cli_takes_default_and_per_stream_quotas() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "devstack.firehose_endpoint", "--port", str(port),
           "--quota-calls-per-second", "1", "--stream-quota", "free:calls=1000"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        assert b"listening" in proc.stdout.readline()
        fh = client(f"http://127.0.0.1:{port}")
        fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"x"}])
        with pytest.raises(fh.exceptions.ServiceUnavailableException):
            fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"x"}])
        for _ in range(5):
            fh.put_record_batch(DeliveryStreamName="free", Records=[{"Data": b"x"}])
    finally:
        proc.kill()
        proc.wait(10)
    # A typo ('=' for ':'), nan, 0 and negatives meant no quota or a blocked stream.
    for quota in ("s:bytez=1", "logs=bytes=100", "s:bytes=nan", "s:calls=0", "s:", "s:records=-5"):
        bad = subprocess.run([*cmd[:3], "--stream-quota", quota], cwd=REPO,
                             capture_output=True, check=False)  # fmt: skip
        assert bad.returncode == 2 and bad.stderr.count(b"--stream-quota: ") == 1, quota
    bad = subprocess.run([*cmd[:3], "--quota-bytes-per-second", "0"], cwd=REPO,
                         capture_output=True, check=False)  # fmt: skip
    assert bad.returncode == 2 and b"--quota-bytes-per-second" in bad.stderr


# ----- the pacer, on a fake clock


def test_an_unthrottled_pacer_never_waits() -> None:
    clock = Clock()
    pacer = Pacer(sleep=clock.sleep, clock=clock)
    for _ in range(1000):
        assert pacer.portion([100_000] * 5) == 5  # unpaced calls are as the queue made them
        ticket = pacer.wait(500_000, 10)
        clock.now += 0.01
        pacer.after(ticket, [], "")
        pacer.after(ticket, [1, 2], "InternalFailure")  # not a throttle
    assert clock.slept == [] and not pacer.paced


def test_a_first_throttle_with_nothing_accepted_paces_at_a_guess() -> None:
    """Nothing accepted yet (a fleet starting on a backlog): the refused call's cost per BLIND
    seconds, cut, and a jittered hold before the next call."""
    clock = Clock()
    rates: list[float] = []
    pacer = Pacer(on_rate=rates.append, sleep=clock.sleep, clock=clock)
    pacer.after(pacer.wait(100_000, 10), [10_000] * 10, "ServiceUnavailableException")
    refused = pacing.cost(100_000, 10)
    assert pacer.paced and rates == [pytest.approx(pacing.DECREASE * refused / pacing.BLIND)]
    pacer.wait(100_000, 10)
    hold = min(refused / rates[0], pacing.PROBE / pacing.JITTER[1])  # at most ~PROBE
    assert pacing.JITTER[0] * hold <= clock.slept[0] <= pacing.JITTER[1] * hold


def test_no_call_waits_longer_than_a_retry_would() -> None:
    """A record near 1 MB refused, then sent, at a rate far below it: the hold after the cut
    and the wait for the next call were the record's cost at that rate (minutes at the floor:
    a sender asleep while pacing was released; a fleet idle after an outage while the quota
    refilled unused). Each is at most ~PROBE seconds now, as the retry backoff's cap."""
    clock = Clock()
    pacer = Pacer(sleep=clock.sleep, clock=clock)
    for _ in range(5):  # 1 KB accepted every second: 1 KB/s
        ticket = pacer.wait(1_000, 1)
        clock.now += 1.0
        pacer.after(ticket, [], "")
    pacer.after(pacer.wait(1_000_000, 1), [1_000_000], "ServiceUnavailableException")
    for _ in range(3):
        ticket = pacer.wait(1_000_000, 1)
        pacer.after(ticket, [], "")
    assert clock.slept and max(clock.slept) <= pacing.PROBE


def test_a_throttle_cuts_to_the_accepted_rate_then_it_grows_per_call_and_is_released() -> None:
    clock = Clock()
    rates: list[float] = []
    pacer = Pacer(on_rate=rates.append, sleep=clock.sleep, clock=clock)
    for _ in range(20):  # 100 KB accepted every 0.1 s: 1 MB/s
        ticket = pacer.wait(100_000, 10)
        clock.now += 0.1
        pacer.after(ticket, [], "")
    ticket = pacer.wait(100_000, 10)
    in_flight = pacer.wait(100_000, 10)  # sent before the cut: its throttle cuts no further
    pacer.after(ticket, [10_000] * 10, "ServiceUnavailableException")
    pacer.after(in_flight, [10_000] * 10, "ServiceUnavailableException")
    accepted = 20 * pacing.cost(100_000, 10) / 2.0  # per second, over the 2 s measured
    cut = pacing.DECREASE * accepted
    assert rates == [pytest.approx(cut)]
    before = clock.now
    pacer.wait(100_000, 10)  # held back while a jittered share of the refused part is paid
    hold = clock.now - before
    refused = pacing.cost(100_000, 10) / cut
    assert pacing.JITTER[0] * refused * 0.9 <= hold <= pacing.JITTER[1] * refused
    # Calls of 3 s at the cut rate, accepted whole: the rate grows per call, at most 1 + k * STEP
    # times the last (k: calls accepted since the cut, at least 1), and doubles per DOUBLING s
    # at most: not 2.8x per call as time alone would let it.
    big = int(3 * cut)
    starts = []
    for _ in range(4):
        ticket = pacer.wait(big, 1)
        starts.append(ticket.at)
        pacer.after(ticket, [], "")
    paced = [pacing.cost(big, 1) / (b - a) for a, b in itertools.pairwise(starts)]
    expected, last = [], cut
    for k, at in enumerate(starts[:-1]):
        grown = cut * 2 ** ((at - before) / pacing.DOUBLING)
        last = min(grown, (1 + pacing.STEP * max(1, k)) * last)
        expected.append(last)
    assert paced == pytest.approx(expected)
    assert paced[-1] < cut * 2 ** ((starts[-2] - before) / pacing.DOUBLING)  # the step binds
    assert paced[-1] / paced[-2] == pytest.approx(1 + 2 * pacing.STEP)
    clock.now += pacing.RELEASE
    pacer.wait(100_000, 10)
    assert not pacer.paced and rates[-1] == 0.0


def test_paced_calls_hold_what_the_rate_pays_for_in_call_seconds() -> None:
    clock = Clock()
    pacer = Pacer(sleep=clock.sleep, clock=clock)
    pacer.after(pacer.wait(400_000, 4), [100_000] * 4, "ServiceUnavailableException")
    rate = pacer.rate()
    assert rate is not None
    fit = int((rate * pacing.CALL_SECONDS - pacing.CALL_COST) // (10_000 + pacing.RECORD_COST))
    assert 1 < fit < 100
    assert pacer.portion([10_000] * 100) == fit  # records stay as large: the call is smaller
    assert pacer.portion([10**6, 10]) == 1  # one record at least, however large


def test_an_outage_probes_like_retries_and_its_end_stops_pacing() -> None:
    """A stream that accepted traffic, then nothing (down, or a quota of nothing): cuts take
    the rate to the floor, but calls still go every few seconds, and the first one accepted
    whole stops pacing, so the backlog goes at once."""
    clock = Clock()
    rates: list[float] = []
    pacer = Pacer(on_rate=rates.append, sleep=clock.sleep, clock=clock)
    for _ in range(10):
        ticket = pacer.wait(50_000, 1)
        clock.now += 0.1
        pacer.after(ticket, [], "")
    gaps = []
    for _ in range(30):  # 30 throttled calls of 300 KB
        ticket = pacer.wait(300_000, 1)
        gaps.append(ticket.at)
        clock.now += 0.05
        pacer.after(ticket, [300_000], "ServiceUnavailableException")
    assert rates[-1] < 2 * pacing.FLOOR  # cut after cut
    late = [b - a for a, b in itertools.pairwise(gaps)][-10:]  # quiet for > QUIET s
    assert max(late) <= pacing.PROBE + 0.05  # not 300 KB / 2 KiB/s = 146 s
    ticket = pacer.wait(300_000, 1)  # the stream is back
    pacer.after(ticket, [], "")
    assert not pacer.paced and rates[-1] == 0.0
    start = clock.now
    pacer.wait(300_000, 1)
    assert clock.now == start


def test_tiny_calls_are_paced_by_their_number() -> None:
    """Tiny calls against a calls quota: their bytes alone would hardly slow them down."""
    clock = Clock()
    pacer = Pacer(sleep=clock.sleep, clock=clock)
    for _ in range(100):  # 50 calls/s of 100 bytes
        ticket = pacer.wait(100, 1)
        clock.now += 0.02
        pacer.after(ticket, [], "")
    pacer.after(pacer.wait(100, 1), [100], "ServiceUnavailableException")
    pacer.after(pacer.wait(100, 1), [], "")  # after the hold
    start = clock.now
    for _ in range(10):
        pacer.after(pacer.wait(100, 1), [], "")
    calls_per_second = 10 / (clock.now - start)
    assert calls_per_second == pytest.approx(pacing.DECREASE * 50, rel=0.15)


def test_a_disabled_pacer_never_paces() -> None:
    clock = Clock()
    pacer = Pacer(enabled=False, sleep=clock.sleep, clock=clock)
    for _ in range(10):
        pacer.after(pacer.wait(100, 1), [100], "ServiceUnavailableException")
    assert clock.slept == [] and not pacer.paced


# ----- a fleet of forwarders at a quota well below its offered rate

FLEET = 8
FLEET_QUOTA = SMALL_REGION_QUOTA  # the byte quota binds: Firehose's 1 MiB/s outside the big regions
QUOTA_BYTES = FLEET_QUOTA.bytes_per_second
BACKLOG_LINES = 16_000  # per forwarder, 2 files: ~1.6 MiB compressed each, ~13 s ideal drain
# Default record sizes: hex lines compress ~2.5:1, so a record of 1 MiB of lines is ~400 KiB
# and a call holds one; each forwarder's share of the quota (128 KiB/s) pays for one call
# every ~3 s. The old pacer (doubling every 2 s between calls) threw 74-84 % of its calls.


def backlog(node: Node, name: str, lines: int) -> bytes:
    """Lines that compress about 2:1 (hex of random bytes), as CRI writes them."""
    rng = random.Random(name)
    data = b"".join(cri_line(f"{name} {i:07d} {rng.randbytes(100).hex()}") for i in range(lines))
    node.add(name, "cri").write(data)
    return data


def test_a_fleet_drains_a_backlog_at_the_quota_with_few_throttled_calls(tmp_path: Path) -> None:
    written: Counter[bytes] = Counter()
    nodes = []
    for n in range(FLEET):
        node = Node(tmp_path / f"node{n}")
        for f in range(2):
            data = backlog(node, f"pod{n}-{f}", BACKLOG_LINES // 2)
            written.update(line + b"\n" for line in data.split(b"\n")[:-1])
        nodes.append(node)
    accepted_at: list[float] = []

    def sink(_stream: str, _datas: list[bytes]) -> None:
        accepted_at.append(time.monotonic())

    with FirehoseEndpoint(sink=sink, stream_quotas={STREAM: FLEET_QUOTA}) as endpoint:
        procs = [
            ForwarderProc(endpoint.url, node, tmp_path / f"state{n}" / "db", "--exit-on-eof")
            for n, node in enumerate(nodes)
        ]
        try:
            for proc in procs:
                proc.start()
            for proc in procs:
                assert proc.wait(90) == 0, proc.log()[-2000:]
        finally:
            for proc in procs:
                proc.stop()
        stats = endpoint.stats_dict()
        records = endpoint.received()
    got: Counter[bytes] = Counter()
    for lines in delivered(records).values():
        got.update(lines)
    assert written - got == Counter(), "lost lines"
    assert got - written == Counter(), "duplicated lines"
    data_bytes = sum(len(r) for r in records)
    ideal = data_bytes / QUOTA_BYTES  # bytes bind: records and calls stay far below theirs
    assert len(records) / ideal < FLEET_QUOTA.records_per_second  # type: ignore[operator]
    drain = accepted_at[-1] - accepted_at[0]
    calls = stats["calls"] + stats["throttled_calls"]
    throttled = stats["throttled_calls"] + stats["partly_throttled_calls"]
    share = throttled / calls
    print(
        f"\nfleet of {FLEET}, pacing {os.environ.get('PODHOSE_PACING', 'aimd')}: "
        f"{data_bytes / 2**20:.1f} MiB ({stats['billed_bytes'] / 2**20:.1f} MiB billed) in "
        f"{len(records)} records at {QUOTA_BYTES / 2**20:g} MiB/s: drained in {drain:.1f} s, "
        f"ideal {ideal:.1f} s ({drain / ideal:.2f}x); {calls} calls, {throttled} throttled "
        f"({share:.0%}: {stats['throttled_calls']} whole, {stats['partly_throttled_calls']} "
        f"in part), {stats['throttled_records']} records throttled"
    )
    assert drain <= 1.5 * ideal
    assert share <= 0.5
