"""The build files: every Dockerfile is linted, every deployed wheel pinned with hashes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_lint_runs_hadolint_on_every_dockerfile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    listed = set(re.search(r"^DOCKERFILES := (.*)$", makefile, re.M).group(1).split())  # type: ignore[union-attr]
    found = {
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("Dockerfile*")
        if not {".venv", ".tools", "build", ".aws-sam"} & set(p.relative_to(ROOT).parts)
    }
    assert found == listed


def test_every_deployed_dependency_is_pinned_with_hashes() -> None:
    """The Lambda's and the image's wheels install with --require-hashes: each pin carries
    the sha256 of its wheels (pip refuses a file that does not match, or a missing hash)."""
    for name in ("lambda", "forwarder"):
        text = (ROOT / "deploy" / name / "requirements.txt").read_text()
        entries = re.split(r"\n(?=[A-Za-z])", re.sub(r"^#.*\n", "", text, flags=re.MULTILINE))
        for entry in filter(str.strip, entries):
            assert re.match(r"[A-Za-z0-9_.-]+==\S+ \\", entry), entry
            assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry
    makefile = (ROOT / "deploy" / "lambda" / "Makefile").read_text()
    assert "--require-hashes" in makefile
