"""The images the container tests run, all made on this machine (no registry is reachable).

- :func:`ensure_base_image`: Debian 13 with its Python 3.13, from ``debootstrap
  --variant=minbase trixie`` and ``docker import``; cached in the engine under a tag that
  names what went into it, so it is built once per machine.
- :func:`build_forwarder_image`: ``make image`` with that base, exactly as a user runs it.
- :func:`ensure_lambda_base_image`: the stand-in for ``public.ecr.aws/lambda/python:3.13``
  from tests/containers/lambda-python/ (same base, ``awslambdaric`` from its PyPI wheel);
  never built over an image of that name that this project did not make.

Example::

    base = ensure_base_image(engine)
    build_forwarder_image(engine, base, "podhose-forwarder:container-test")
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.containers.engine import DockerEngine, cache_dir, ensure_command

REPO = Path(__file__).resolve().parents[2]
BASE_SUITE = "trixie"  # Debian 13: python3 is CPython 3.13, the forwarder's and Lambda's
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_MIRROR = "http://deb.debian.org/debian"
BASE_ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

LAMBDA_BASE_DIR = REPO / "tests" / "containers" / "lambda-python"
#: What SAM CLI runs x86_64 python3.13 functions on (it adds its emulator on top).
LAMBDA_BASE_TAG = "public.ecr.aws/lambda/python:3.13-x86_64"
LAMBDA_WHEEL_PLATFORM = "manylinux2014_x86_64"
STAND_IN_LABEL = "org.podhose.stand-in"


def _digest(*parts: str | bytes) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode() if isinstance(part, str) else part)
        sha.update(b"\0")
    return sha.hexdigest()[:12]


def base_image_tag() -> str:
    """The base image's tag: suite, packages and mirror in its name, so a change rebuilds it."""
    key = _digest(BASE_SUITE, BASE_MIRROR, *BASE_PACKAGES)
    return f"podhose-local/debian-python:{BASE_SUITE}-{key}"


def ensure_base_image(engine: DockerEngine) -> str:
    """The local Debian 13 + Python 3.13 base image's tag, built now if the engine lacks it."""
    tag = base_image_tag()
    if engine.image_id(tag) is not None:
        return tag
    debootstrap = ensure_command("debootstrap", "debootstrap")
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                BASE_SUITE,
                str(rootfs),
                BASE_MIRROR,
            ],
            check=True,
            capture_output=True,
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        engine.docker("import", "--change", f"ENV {BASE_ENV_PATH}", str(tarball), tag)
    return tag


def build_forwarder_image(engine: DockerEngine, base: str, tag: str) -> str:
    """``make image`` on ``base``; returns the image id (the tag's previous image is removed)."""
    previous = engine.image_id(tag)
    result = engine.run(
        [
            "make",
            "--no-print-directory",
            "image",
            "ARCH=amd64",
            f"IMAGE={tag}",
            f"BASE_IMAGE={base}",
        ],
        cwd=REPO,
    )
    if result.returncode != 0:
        raise RuntimeError(f"make image failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    image = engine.image_id(tag)
    assert image is not None
    if previous is not None and previous != image:
        engine.docker("image", "rm", previous, check=False)
    return image


def lambda_base_digest() -> str:
    """What the stand-in is made of: its directory's files and the base image's tag."""
    files = sorted(p for p in LAMBDA_BASE_DIR.rglob("*") if p.is_file())
    return _digest(base_image_tag(), *(f.name.encode() + f.read_bytes() for f in files))


def ensure_lambda_base_image(engine: DockerEngine, base: str) -> str:
    """Make ``public.ecr.aws/lambda/python:3.13-x86_64`` available for ``sam local invoke``.

    A real image of that name (no stand-in label) is used as it is; the stand-in is rebuilt
    when its files change.
    """
    digest = lambda_base_digest()
    inspected = engine.docker(
        "image",
        "inspect",
        "--format",
        f'{{{{index .Config.Labels "{STAND_IN_LABEL}"}}}}',
        LAMBDA_BASE_TAG,
        check=False,
    )
    if inspected.returncode == 0:
        label = inspected.stdout.strip()
        if label in (digest, "", "<no value>"):  # up to date, or a real image
            return LAMBDA_BASE_TAG
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="lambda-context-") as tmp:
        context = Path(tmp)
        for item in LAMBDA_BASE_DIR.iterdir():
            shutil.copy(item, context / item.name)
        download_wheels(
            LAMBDA_BASE_DIR / "requirements.txt", LAMBDA_WHEEL_PLATFORM, context / "wheels"
        )
        engine.docker(
            "build",
            "--network",
            "none",
            "--platform",
            "linux/amd64",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--label",
            f"{STAND_IN_LABEL}={digest}",
            "-t",
            LAMBDA_BASE_TAG,
            str(context),
        )
    return LAMBDA_BASE_TAG


def download_wheels(requirements: Path, platform: str, dest: Path) -> None:
    """pip download of a hashed requirements file's wheels for CPython 3.13 on ``platform``."""
    subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "python"),
            "-m",
            "pip",
            "download",
            "--quiet",
            "--require-hashes",
            "--only-binary=:all:",
            "--no-deps",
            "--platform",
            platform,
            "--implementation",
            "cp",
            "--python-version",
            "3.13",
            "--dest",
            str(dest),
            "--requirement",
            str(requirements),
        ],
        check=True,
        capture_output=True,
    )
