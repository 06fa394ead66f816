"""`make help` names every target of the Makefile, one line each."""

from __future__ import annotations

import re
from pathlib import Path

MAKEFILE = (Path(__file__).resolve().parents[2] / "Makefile").read_text()


def test_make_help_lists_every_phony_target_once() -> None:
    phony = [n for line in re.findall(r"^\.PHONY:(.*)$", MAKEFILE, re.M) for n in line.split()]
    recipe = MAKEFILE.split("\nhelp:\n", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r'^\t@echo "make ([\w-]+)', recipe, re.M)
    assert sorted(listed) == sorted(set(phony)), set(phony) ^ set(listed)
