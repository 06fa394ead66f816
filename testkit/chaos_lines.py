"""What the chaos harness (testkit/chaos.py) writes, and what it accepts back for it.

Every line written is unique. A line written as one physical line must arrive byte for byte.
A line written in pieces (Docker entries without `\\n` in "log", CRI `P` lines) is a
`Piece`: it may arrive joined, or cut at any boundary between its physical pieces (a piece
that waited too long is shipped as what it is so far, the rest as another line), with the
time of the first piece or of the first piece of the part; each physical piece must arrive
exactly once (more only after a SIGKILL).

Lines are remembered by `key`: the line itself, or a digest for a long one (the soak writes
megabytes of incompressible lines).
"""

from __future__ import annotations

import functools
import hashlib
import random
import string
from dataclasses import dataclass, field

from testkit.forwarder import Container
from testkit.lines import cri_line, docker_line

LONG_LINE = 4096  # longer lines are remembered by digest
ENTRY_BYTES = 16 * 1024  # dockerd and containerd split a long line into 16 KiB pieces
# Docker pair text: printable ASCII but `"` and `\\` (no escaping: exact sizes): ~82 % after
# zstd; a head with escapes (quotes, backslash, tab) in front.
DOCKER_NOISE = string.printable[:94].replace('"', "").replace("\\", "") + " "
ESCAPED_HEAD = '"quoted" C:\\path\t'


def key(line: bytes) -> bytes:
    """How a line is remembered: itself, or its length and digest when long."""
    if len(line) <= LONG_LINE:
        return line
    return b"#%d:" % len(line) + hashlib.blake2b(line, digest_size=16).digest()


def piece_time(n: int) -> str:
    """A distinct container time for physical piece number `n` (< 10**9) of a writer."""
    return f"2024-05-01T10:00:00.{n:09d}Z"


@dataclass
class Piece:
    """A logical line written as several physical pieces; see the module docstring."""

    ident: str
    runtime: str
    texts: list[str]  # the pieces' text; a Docker line's last one ends with "\n"
    times: list[str]
    stream: str = "stdout"

    def physical(self, lo: int, hi: int) -> bytes:
        """The physical lines of pieces lo..hi-1, as the runtime writes them."""
        if self.runtime == "docker":
            return b"".join(
                docker_line(self.texts[i], self.stream, self.times[i]) for i in range(lo, hi)
            )
        last = len(self.texts) - 1
        return b"".join(
            cri_line(self.texts[i], self.stream, "F" if i == last else "P", self.times[i])
            for i in range(lo, hi)
        )

    @functools.cached_property
    def joined_key(self) -> bytes:
        """Key of the whole logical line as shipped when nothing waited."""
        return key(self.part(0, len(self.texts), self.times[0], "F"))

    def part(self, lo: int, hi: int, when: str, tag: str) -> bytes:
        """Pieces lo..hi-1 shipped as one line with time `when` (and CRI `tag`)."""
        text = "".join(self.texts[lo:hi])
        if self.runtime == "docker":
            return docker_line(text, self.stream, when)
        return cri_line(text, self.stream, tag, when)

    @functools.cached_property
    def accepted(self) -> dict[bytes, tuple[int, int]]:
        """key -> (lo, hi) for every way a run of pieces may arrive (computed when needed:
        most lines arrive joined)."""
        n = len(self.texts)
        out: dict[bytes, tuple[int, int]] = {}
        for lo in range(n):
            for hi in range(lo + 1, n + 1):
                tags = ("F",) if hi == n or self.runtime == "docker" else ("F", "P")
                for when in {self.times[0], self.times[lo]}:
                    for tag in tags:
                        out[key(self.part(lo, hi, when, tag))] = (lo, hi)
        return out


@dataclass
class Writer:
    """One container: its rate, rotation style, and the lines it must see delivered."""

    container: Container
    name: str
    rate: float  # lines per second
    rotation: str
    rotate_every: float
    kind: str = "app"  # app, job, blob, progress, reuse
    stream: str = "stdout"  # of its whole lines
    written: int = 0
    next_rotation: float = 0.0
    seq: int = 0
    carry: float = 0.0
    truncated_at: int = 0  # index into `expected` of the last copytruncate
    file_start: int = 0  # index into `expected` of the current file's first line
    lag_cursor: int = 0  # index into `expected` of the oldest line maybe not delivered
    expected: list[bytes] = field(default_factory=list)  # keys of whole lines, in order
    times: list[float] = field(default_factory=list)  # when each was written (monotonic)
    pieces: list[Piece] = field(default_factory=list)

    def next_lines(self, now: float) -> bytes:
        """Bytes of the next logical line (~2 % in two pieces), remembered as expected."""
        self.seq += 1
        text = f"{self.name} seq={self.seq:08d} " + "x" * (self.seq * 7 % 400)
        if self.seq % 50 == 0:
            first, rest = text + " first ", "second"
            if self.container.runtime == "docker":
                first, rest = f'{{"piece": "{self.name}-{self.seq}", ', f'"rest": "{text}"}}\n'
            return self.add_piece([first, rest]).physical(0, 2)
        if self.container.runtime == "docker":
            line = docker_line(text + "\n", self.stream)
        else:
            line = cri_line(text, self.stream)
        self.remember(line, now)
        return line

    def lines(self, count: int, now: float) -> bytes:
        """`count` logical lines."""
        return b"".join(self.next_lines(now) for _ in range(count))

    def remember(self, line: bytes, now: float) -> None:
        """A whole line written now."""
        self.expected.append(key(line))
        self.times.append(now)

    def add_piece(self, texts: list[str], stream: str | None = None) -> Piece:
        """A new logical line in pieces (at most 16) on `stream` (default: the writer's),
        remembered; the caller writes them."""
        ident = f"{self.name}-{self.seq}"
        times = [piece_time(self.seq * 16 + i) for i in range(len(texts))]
        piece = Piece(ident, self.container.runtime, texts, times, stream or self.stream)
        self.pieces.append(piece)
        return piece


def progress_texts(ident: str, total: int, runtime: str, rng: random.Random) -> list[str]:
    """A progress bar of about `total` bytes in 16 KiB pieces, each starting with its id and
    number; `\\r` redraws included. The last piece ends the line (Docker: with `\\n`)."""
    texts = []
    for i in range(-(-total // ENTRY_BYTES)):
        text, step = [f"{ident}.{i}:"], rng.randint(0, 99)
        while sum(map(len, text)) < ENTRY_BYTES:
            step += 1
            text.append(f"\r[{'=' * (step % 60)}>{' ' * (60 - step % 60)}] {step % 100:3d}%")
        texts.append("".join(text)[:ENTRY_BYTES])
    texts[-1] = texts[-1][: ENTRY_BYTES // 3] + ("\n" if runtime == "docker" else "")
    return texts


def noise_bytes(n: int, rng: random.Random) -> bytes:
    """`n` random bytes without a newline: what zstd cannot compress."""
    return rng.randbytes(n).replace(b"\n", b"\x0b")


def noise_text(n: int, rng: random.Random) -> str:
    """`n` random printable characters, quotes and backslashes included."""
    return "".join(rng.choices(DOCKER_NOISE, k=n))


def incompressible_line(runtime: str, size: int, tag: str, rng: random.Random) -> bytes:
    """One whole line of exactly `size` bytes (with its `\\n`) of random content."""
    if runtime == "docker":
        head = f"{tag} {ESCAPED_HEAD}"
        return docker_line(head + noise_text(size - len(docker_line(head + "\n")), rng) + "\n")
    prefix = cri_line(f"{tag} ")[:-1]
    return prefix + noise_bytes(size - len(prefix) - 1, rng) + b"\n"
