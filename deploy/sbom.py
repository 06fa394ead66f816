"""CycloneDX SBOMs of what podhose ships: the transform Lambda's bundle and the forwarder image.

Each lists the Python distributions actually installed in the artifact (their dist-info, read
by CycloneDX's own `cyclonedx-py environment`), not what a requirements file asks for: the
site-packages of the `sam build` output, or /opt/podhose's copied out of the image. It is
then checked against the artifact's hashed lock file: every pinned package must be in it at
its pinned version, or the command fails (exit 1) naming what differs. The image's Debian
packages are not listed (CycloneDX's Python tool reads Python metadata only). The check is
both ways: a package the lock does not pin, or one listed twice, fails it too.

    python deploy/sbom.py lambda --bundle .aws-sam/build/TransformFunction \
        --out build/sbom/transform-lambda.cdx.json
    python deploy/sbom.py image --image podhose-forwarder:dev \
        --out build/sbom/forwarder-image.cdx.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LOCKS = {
    "lambda": REPO / "deploy" / "lambda" / "requirements.txt",
    "image": REPO / "deploy" / "forwarder" / "requirements.txt",
}
IMAGE_SITE_PACKAGES = "/opt/podhose/lib/python3.13/site-packages"
# What the runtimes are (CPython 3.13 on Linux): lock lines whose marker excludes it are not
# in the artifact.
TARGET_ENVIRONMENT = {"python_version": "3.13", "python_full_version": "3.13.0",
                      "sys_platform": "linux", "platform_system": "Linux",
                      "implementation_name": "cpython"}  # fmt: skip


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """name -> version of every requirement of a hashed requirements file (`name==version`,
    extras and markers allowed; lines continued with a backslash; options and hashes skipped)."""
    found: dict[str, str] = {}
    text = lock.read_text().replace("\\\n", " ")
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        requirement = Requirement(re.sub(r"\s--hash=\S+", "", line))
        if requirement.marker is not None and not requirement.marker.evaluate(TARGET_ENVIRONMENT):
            continue
        (pin,) = requirement.specifier  # a lock pins exactly
        if pin.operator not in ("==", "==="):
            raise ValueError(f"{lock}: {line!r} is not pinned with ==")
        found[normalise(requirement.name)] = pin.version
    return found


def environment_sbom(site_packages: Path, out: Path, scratch: Path) -> None:
    """`cyclonedx-py environment` on an empty virtualenv that sees only `site_packages`."""
    env = scratch / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)}))
    (purelib / "artifact.pth").write_text(f"{site_packages.resolve()}\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    cyclonedx = Path(sys.executable).parent / "cyclonedx-py"
    # the venv's python must see the artifact only, not this environment's paths
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE")
    }
    subprocess.run(
        [str(cyclonedx), "environment", "--pyproject", str(REPO / "pyproject.toml"),
         "--output-reproducible", "--of", "JSON", "-o", str(out), str(env)],
        check=True, env={**clean, "PYTHONNOUSERSITE": "1"},
    )  # fmt: skip


def set_version(sbom: Path, version: str) -> None:
    """The main component's version: the release's, not pyproject.toml's."""
    document = json.loads(sbom.read_text())
    document["metadata"]["component"]["version"] = version
    sbom.write_text(json.dumps(document, indent=2) + "\n")


def differences(sbom: Path, lock: Path) -> list[str]:
    """What the lock pins that the SBOM lacks or lists at another version; what the SBOM
    lists that the lock does not pin, or lists twice."""
    components = json.loads(sbom.read_text()).get("components", [])
    names = [normalise(c["name"]) for c in components]
    listed = {normalise(c["name"]): c.get("version", "") for c in components}
    pinned = pins(lock)
    found = [
        f"{name}=={version} (SBOM: {listed.get(name, 'missing')})"
        for name, version in sorted(pinned.items())
        if listed.get(name) != version
    ]
    found += [f"{name} listed twice" for name in sorted({n for n in names if names.count(n) > 1})]
    found += [f"{name}=={listed[name]} not pinned" for name in sorted(set(listed) - set(pinned))]
    return found


def image_site_packages(image: str, dest: Path) -> Path:
    """Copy the image's site-packages out of a container created (not started) from it."""
    cid = subprocess.run(
        ["docker", "create", image], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["docker", "cp", f"{cid}:{IMAGE_SITE_PACKAGES}", str(dest)], check=True)
    finally:
        subprocess.run(["docker", "rm", cid], check=True, capture_output=True)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description="CycloneDX SBOM of the Lambda bundle or image")
    parser.add_argument("artifact", choices=sorted(LOCKS))
    parser.add_argument("--bundle", type=Path, help="lambda: the sam build output directory")
    parser.add_argument("--image", help="image: the forwarder image (local docker engine)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--version", help="the release's version (default: pyproject.toml's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podhose-sbom-") as tmp:
        scratch = Path(tmp)
        if args.artifact == "lambda":
            if args.bundle is None or not args.bundle.is_dir():
                parser.error("lambda needs --bundle DIR (run `sam build` first)")
            site_packages = args.bundle
        else:
            if not args.image:
                parser.error("image needs --image NAME")
            site_packages = image_site_packages(args.image, scratch / "site-packages")
        environment_sbom(site_packages, args.out, scratch)
    if args.version:
        set_version(args.out, args.version)
    if missing := differences(args.out, LOCKS[args.artifact]):
        print(f"{args.out}: not as {LOCKS[args.artifact].name} pins: {', '.join(missing)}",
              file=sys.stderr)  # fmt: skip
        return 1
    count = len(json.loads(args.out.read_text()).get("components", []))
    print(f"{args.out}: {count} components, every pin of {LOCKS[args.artifact].name} present")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
