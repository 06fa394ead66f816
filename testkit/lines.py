"""Log lines as container runtimes write them: Docker json-file and CRI.

>>> docker_line("hi")
b'{"log":"hi","stream":"stdout","time":"2024-05-01T10:00:00.000000001Z"}\\n'
>>> cri_line("hi", tag="P")
b'2024-05-01T10:00:00.000000001Z stdout P hi\\n'
"""

from __future__ import annotations

import json

T0 = "2024-05-01T10:00:00.000000001Z"


def docker_line(text: str, stream: str = "stdout", when: str = T0) -> bytes:
    """One Docker json-file line (the whole text is one entry)."""
    doc = {"log": text, "stream": stream, "time": when}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def docker_split(text: str, stream: str = "stdout", piece: int = 16384) -> tuple[bytes, bytes]:
    """What dockerd writes for a long line: 16 KB pieces; and the line the forwarder ships."""
    pieces = [text[i : i + piece] for i in range(0, len(text), piece)]
    pieces[-1] += "\n"
    times = [f"2024-05-01T10:00:00.{i:09d}Z" for i in range(len(pieces))]
    written = b"".join(docker_line(p, stream, t) for p, t in zip(pieces, times, strict=True))
    return written, docker_line(text + "\n", stream, times[0])


def cri_line(text: str, stream: str = "stdout", tag: str = "F", when: str = T0) -> bytes:
    """One CRI log line."""
    return f"{when} {stream} {tag} {text}\n".encode()
