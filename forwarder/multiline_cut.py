"""Where a record may be cut when the transform joins multi-line events (``--multiline``).

The transform joins stack traces within a record (PODHOSE_MULTILINE), so a record cut
between a trace's lines splits the trace into two events. With ``--multiline`` set to the
transform's mode, a record that fills up is cut before the last line that does **not**
continue an event, found by a cheap look at the start of each line's content (no JSON
parsing; Docker's escaped tab ``\\t`` counts as a tab). The look is a superset of the
transform's rules: it may keep a few more lines together than needed, never fewer.

Continuation lines, by mode:

- ``java``: indented (frames ``\\tat ...``), blank, ``Caused by:``, ``Suppressed:``,
  ``... N more``, ``--- End of ...``.
- ``python``: indented (``  File ...`` and code), and the final ``SomeError: message`` line.
- ``go``: indented, blank, ``goroutine N [...]:``, ``created by ...``, ``pkg.func(...)``
  frames and ``[signal ...``.
- ``regex``: every line the start-of-event pattern does not match.

Example:
    >>> continues = continuation_test("java", "")
    >>> continues(b'{"log":"\\\\tat a.B.c(B.java:1)\\\\n","stream":"stderr"}'), continues(b"x F at")
    (True, False)
"""

from __future__ import annotations

import re
from collections.abc import Callable

from forwarder.partials import DOCKER_PREFIX

#: How far back a cut may move to avoid splitting an event (then it is cut where it fills).
MAX_SHIFT_BYTES = 256 * 1024

_CRI_FIELDS = re.compile(rb"\S+ (?:stdout|stderr) [FP] ")
_JAVA = re.compile(rb"(?:[\t ]|\\t|$|Caused by:|Suppressed:|\.\.\. \d|--- End of |\\n)")
_PYTHON = re.compile(rb"(?:[\t ]|\\t|(?:[^\s.():]+\.)*[^\s.():]+:)")
_GO = re.compile(
    rb"(?:[\t ]|\\t|$|\\n|goroutine \d|created by |\[signal |(?:[^\s.:]+\.)*[^\s.():]+\()"
)
_MODES = {"java": _JAVA, "python": _PYTHON, "go": _GO}


# Lines that start an event (Fluent Bit's start-state rules, on the stored content).
_STARTS = {
    "java": re.compile(rb"(.)(?:Exception|Error|Throwable|V8 errors stack trace)(?::|\\r|\\n|$)"),
    "python": re.compile(rb"^Traceback \(most recent call last\):"),
    "go": re.compile(rb"\bpanic: |http: panic serving"),
}


def content_start(line: bytes) -> bytes:
    """The line's content, as stored: after ``{"log":"`` or after the CRI fields."""
    if line.startswith(DOCKER_PREFIX):
        return line[len(DOCKER_PREFIX) :]
    match = _CRI_FIELDS.match(line)
    return line[match.end() :] if match else line


def continuation_test(mode: str, start_pattern: str) -> Callable[[bytes], bool]:
    """``line -> True`` when the line may continue the event of the lines before it."""
    if mode == "regex":
        start = re.compile(start_pattern.encode())
        return lambda line: start.search(content_start(line)) is None
    pattern = _MODES[mode]
    return lambda line: pattern.match(content_start(line)) is not None


def open_event_test(mode: str, start_pattern: str) -> Callable[[bytes], bool]:
    """``line -> True`` when more lines may still join the event ``line`` belongs to: it
    starts an event or continues one (for ``regex``, every line)."""
    if mode == "regex":
        return lambda line: True
    continues, start = continuation_test(mode, start_pattern), _STARTS[mode]
    return lambda line: continues(line) or start.search(content_start(line)) is not None


def event_boundary(data: bytes, lo: int, cut: int, continues: Callable[[bytes], bool]) -> int:
    """The latest line start in ``[lo, cut]`` whose line starts an event, else ``cut``.

    ``lo`` and ``cut`` are line starts in ``data`` and a line starts at ``cut``. Looks back
    at most MAX_SHIFT_BYTES: an event longer than that is cut where the record fills.
    """
    floor = max(lo, cut - MAX_SHIFT_BYTES)
    start = cut
    while start >= floor:
        end = data.find(b"\n", start)
        if not continues(data[start : end if end >= 0 else len(data)]):
            return start
        if start == lo:
            break
        previous_end = data.rfind(b"\n", lo, start - 1)
        start = previous_end + 1 if previous_end >= 0 else lo
    return cut
