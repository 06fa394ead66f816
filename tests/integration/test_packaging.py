"""What `pip install .` ships: the forwarder, the transform, their wire contract and the
redrive tool, not the local AWS stand-ins, benchmarks or tests (which run from the repository)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"forwarder", "transform_lambda", "podhose_redrive", "podhose_wire"}
NOT_SHIPPED = {"devstack", "testkit", "bench", "tests", "events"}


def test_the_wheel_holds_the_product_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in SHIPPED | NOT_SHIPPED:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("podhose-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    packages = {top for top in tops if not top.endswith(".dist-info")}
    assert packages == SHIPPED
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("entry_points.txt"))
    )
    assert b"podhose-forwarder = forwarder.__main__:main" in entry_points
    assert b"podhose-redrive = podhose_redrive.cli:main" in entry_points
