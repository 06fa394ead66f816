"""Multi-line joining (opt-in): continuation lines join the event they belong to.

The reference is Fluent Bit's built-in multiline parsers: ``java``, ``python`` and ``go``
are its rule tables (src/multiline/flb_ml_parser_<mode>.c), run the way its rule engine
runs them (src/multiline/flb_ml_rule.c): a line that matches a rule of the ``start_state``
opens a group; while a group is open, each line must match one of the rules reachable from
the last rule that matched, or the group ends; a rule leading back to ``start_state`` ends
the group after its line. ``regex`` is the custom mode: every line that does not match the
start-of-event pattern continues the event before it.

One difference from Fluent Bit, on purpose: a line that ends a group by matching none of
its rules is tried as the start of a new group (Fluent Bit emits it alone, so the second
of two back-to-back stack traces would come out one line at a time).

Joining runs on the logical lines of one record (one file, in order), after partial
pieces are joined: the group takes the envelope fields (``time``, ``stream``) of its first
line, and its ``log`` is the lines' text, separated by ``\\n`` where a line does not already
end with one (Docker's lines do, CRI's do not). A group reaching ``max_bytes`` is closed
there and the next lines continue it as a new event.

Example:
    >>> from transform_lambda.envelope import Entry
    >>> lines = ["Traceback (most recent call last):", '  File "app.py", line 1, in <module>',
    ...          "ValueError: bad", "next line"]
    >>> joiner = MultilineJoiner(parser("python"), max_bytes=65536)
    >>> events = [e.fields["log"] for e in joiner.join([Entry({"log": t}) for t in lines])]
    >>> [event.count("\\n") + 1 for event in events]
    [3, 1]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from transform_lambda.envelope import Entry

START = "start_state"

#: The modes and their rules: (from states, pattern, to state), in Fluent Bit's order.
_RULES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "java": (
        (
            "start_state, java_start_exception",
            r"(.)(?:Exception|Error|Throwable|V8 errors stack trace)[:\r\n]",
            "java_after_exception",
        ),
        ("java_after_exception", r"^[\t ]*nested exception is:[\t ]*", "java_start_exception"),
        ("java_after_exception", r"^[\r\n]*$", "java_after_exception"),
        ("java_after_exception, java", r"^[\t ]+(?:eval )?at ", "java"),
        (
            "java_after_exception, java",
            r"^[\t ]+--- End of inner exception stack trace ---$",
            "java",
        ),
        (
            "java_after_exception, java",
            r"^--- End of stack trace from previous location where exception was thrown ---$",
            "java",
        ),
        ("java_after_exception, java", r"^[\t ]*(?:Caused by|Suppressed):", "java_after_exception"),
        ("java_after_exception, java", r"^[\t ]*... \d+ (?:more|common frames omitted)", "java"),
    ),
    "python": (
        ("start_state", r"^Traceback \(most recent call last\):$", "python"),
        ("python", r"^[\t ]+File ", "python_code"),
        ("python_code", r"[^\t ]", "python"),
        ("python", r"^(?:[^\s.():]+\.)*[^\s.():]+:", "start_state"),
    ),
    "go": (
        ("start_state", r"\bpanic: ", "go_after_panic"),
        ("start_state", r"http: panic serving", "go_goroutine"),
        ("go_after_panic", r"^$", "go_goroutine"),
        ("go_after_panic, go_after_signal, go_frame_1", r"^$", "go_goroutine"),
        ("go_after_panic", r"^\[signal ", "go_after_signal"),
        ("go_goroutine", r"^goroutine \d+ \[[^\]]+\]:$", "go_frame_1"),
        ("go_frame_1", r"^(?:[^\s.:]+\.)*[^\s.():]+\(|^created by ", "go_frame_2"),
        ("go_frame_2", r"^\s", "go_frame_1"),
    ),
}
#: Every mode PODHOSE_MULTILINE accepts ("regex" needs PODHOSE_MULTILINE_START).
MODES: tuple[str, ...] = (*_RULES, "regex")


class _Matcher(Protocol):
    def search(self, text: str, /) -> object: ...


@dataclass(frozen=True, slots=True)
class _NotMatching:
    """Matches the lines ``pattern`` does not match."""

    pattern: re.Pattern[str]

    def search(self, text: str, /) -> bool:
        return self.pattern.search(text) is None


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: from any of ``from_states``, a line matching ``pattern`` goes to ``to_state``."""

    from_states: tuple[str, ...]
    pattern: _Matcher
    to_state: str


class Parser:
    """A rule table: which rule opens a group, which rule a line continues it with."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self._starts = tuple(i for i, r in enumerate(self.rules) if START in r.from_states)
        self._next = tuple(
            tuple(j for j, s in enumerate(self.rules) if rule.to_state in s.from_states)
            for rule in self.rules
        )
        self._ends = tuple(any(j in self._starts for j in nxt) for nxt in self._next)

    def opens(self, text: str) -> int | None:
        """The rule that makes ``text`` the first line of a group, if any."""
        return self._first_match(self._starts, text)

    def continues(self, rule: int, text: str) -> int | None:
        """The rule ``text`` continues a group with, after ``rule`` matched the line before."""
        return self._first_match(self._next[rule], text)

    def ends_after(self, rule: int) -> bool:
        """True when a line matching ``rule`` is the group's last (it leads to start_state)."""
        return self._ends[rule]

    def _first_match(self, candidates: tuple[int, ...], text: str) -> int | None:
        for i in candidates:
            if self.rules[i].pattern.search(text):
                return i
        return None


def parser(mode: str, start_pattern: str = "") -> Parser:
    """The parser of a built-in mode, or of ``regex`` with its start-of-event pattern."""
    if mode == "regex":
        if not start_pattern:
            raise ValueError("multiline mode regex needs a start-of-event pattern")
        start = re.compile(start_pattern)
        # Any line that does not start an event continues it.
        return Parser([Rule((START,), start, "cont"), Rule(("cont",), _NotMatching(start), "cont")])
    rules = _RULES[mode]
    return Parser(
        Rule(tuple(s.strip() for s in states.split(",")), re.compile(pattern), to)
        for states, pattern, to in rules
    )


@lru_cache(maxsize=8)
def joiner(mode: str, start_pattern: str, max_bytes: int) -> MultilineJoiner:
    """The joiner for these settings, compiled once per process."""
    return MultilineJoiner(parser(mode, start_pattern), max_bytes)


class MultilineJoiner:
    """Joins the entries of one record into events; stateless between records."""

    def __init__(self, parser: Parser, max_bytes: int) -> None:
        self.parser = parser
        self.max_bytes = max_bytes

    def join(self, entries: Iterable[Entry]) -> Iterator[Entry]:
        """The events of ``entries``, in order; entries without a string ``log`` pass as is."""
        group: _Group | None = None
        for entry in entries:
            text = entry.fields.get("log")
            if not isinstance(text, str):
                yield entry  # nothing to match (Fluent Bit passes such records on too)
                continue
            if group is not None:
                rule = self.parser.continues(group.rule, text)
                if rule is None:
                    yield group.finish()
                    group = None
                else:
                    size = len(text.encode())
                    if group.size + size > self.max_bytes:
                        yield group.finish()
                        group = _Group(entry, rule)
                    else:
                        group.add(entry, text, size, rule)
                    if self.parser.ends_after(rule):
                        yield group.finish()
                        group = None
                    continue
            rule = self.parser.opens(text)
            if rule is None or self.parser.ends_after(rule):
                yield entry
            else:
                group = _Group(entry, rule)
        if group is not None:
            yield group.finish()


class _Group:
    """An open event: its first entry (fields copied), the lines' text, the last rule."""

    __slots__ = ("entry", "newline_ended", "parts", "rule", "size")

    def __init__(self, first: Entry, rule: int) -> None:
        self.entry = Entry(dict(first.fields), first.invalid_utf8)
        self.rule = rule
        text = first.fields["log"]
        self.parts = [text]
        self.size = len(text.encode())
        self.newline_ended = text.endswith("\n")

    def add(self, entry: Entry, text: str, size: int, rule: int) -> None:
        if not self.newline_ended:  # CRI contents carry no newline: put one between lines
            self.parts.append("\n")
            self.size += 1
        self.parts.append(text)
        self.size += size
        self.newline_ended = text.endswith("\n")
        self.entry.invalid_utf8 = self.entry.invalid_utf8 or entry.invalid_utf8
        self.rule = rule

    def finish(self) -> Entry:
        self.entry.fields["log"] = "".join(self.parts)
        return self.entry
