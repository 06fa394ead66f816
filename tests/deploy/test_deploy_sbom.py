"""deploy/sbom.py's check of an SBOM against a lock file (the SBOMs themselves are made in
make template-check and make container-test, from the real artifacts)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("sbom", ROOT / "deploy" / "sbom.py")
assert _spec is not None and _spec.loader is not None
sbom = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sbom)


def test_pins_read_a_hashed_lock_with_extras_markers_and_continuations(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.txt"
    lock.write_text(
        "# a comment\n"
        "requests[socks]==2.32.0 \\\n    --hash=sha256:ab \\\n    --hash=sha256:cd\n"
        "Foo.Bar == 1.0\n"
        'exceptiongroup==1.2.2 ; python_version < "3.11"\n'
        "tomli===2.0.1  # pinned exactly\n"
        "--only-binary=:all:\n"
    )
    assert sbom.pins(lock) == {"requests": "2.32.0", "foo-bar": "1.0", "tomli": "2.0.1"}


def test_an_unpinned_requirement_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.txt"
    lock.write_text("boto3>=1.0\n")
    with pytest.raises(ValueError, match="not pinned"):
        sbom.pins(lock)


@pytest.mark.parametrize(
    ("components", "said"),
    [
        ([("typing_extensions", "4.16.0"), ("Boto3", "1.44.8")], None),
        ([("boto3", "1.44.8")], "typing-extensions==4.16.0 (SBOM: missing)"),
        ([("boto3", "1.44.7"), ("typing-extensions", "4.16.0")], "boto3==1.44.8 (SBOM: 1.44.7)"),
        (
            [("boto3", "1.44.8"), ("boto3", "1.0"), ("typing-extensions", "4.16.0")],
            "boto3 listed twice",
        ),
        (
            [("boto3", "1.44.8"), ("typing-extensions", "4.16.0"), ("six", "1.17.0")],
            "six==1.17.0 not pinned",
        ),
    ],
)
def test_differences_go_both_ways(
    tmp_path: Path, components: list[tuple[str, str]], said: str | None
) -> None:
    lock = tmp_path / "requirements.txt"
    lock.write_text("boto3==1.44.8\ntyping-extensions==4.16.0\n")
    document = tmp_path / "sbom.json"
    document.write_text(
        json.dumps({"components": [{"name": n, "version": v} for n, v in components]})
    )
    found = sbom.differences(document, lock)
    assert found == [] if said is None else said in found, found
