"""The images the container tests run, all made on this machine (no registry is reachable).

- :func:`ensure_base_image`: Debian 13 with its Python 3.13, from ``debootstrap
  --variant=minbase trixie`` and ``docker import``, for amd64 or arm64; cached in the engine
  under a tag that names what went into it, so it is built once per machine and architecture.
  For arm64 only debootstrap's first stage runs (``--foreign``: download and unpack, native),
  and the other packages are unpacked natively too, without their maintainer scripts: the
  second stage runs dpkg, perl and Python under qemu and did not finish in 15 minutes here
  (``mmdebstrap --variant=essential`` took 311 s). The files are Debian's own arm64 builds;
  what the scripts would add (ld.so cache, stdlib bytecode, CA bundle) the forwarder does not
  need (nor the stdlib's bytecode: compiling it under qemu took ~2 min and put the arm64
  build on make test's critical path, for a forwarder start of 43 s instead of ~100 s). The
  image's own build steps and the forwarder then run under qemu.
- :func:`build_forwarder_image`: ``make image ARCH=...`` with that base, exactly as a user
  runs it.
- :func:`ensure_lambda_base_image`: the stand-in for ``public.ecr.aws/lambda/python:3.13``
  from tests/containers/lambda-python/ (same base, ``awslambdaric`` from its PyPI wheel);
  never built over an image of that name that this project did not make.

Example::

    base = ensure_base_image(engine)
    build_forwarder_image(engine, base, "podhose-forwarder:container-test")
"""

from __future__ import annotations

import hashlib
import json
import platform
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
#: The engine's own architecture (Debian's name): other architectures' bases are unpacked
#: without running anything of theirs.
NATIVE_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _digest(*parts: str | bytes) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode() if isinstance(part, str) else part)
        sha.update(b"\0")
    return sha.hexdigest()[:12]


def base_image_tag(arch: str = "amd64") -> str:
    """The base image's tag: suite, packages and mirror in its name, so a change rebuilds it."""
    key = _digest(BASE_SUITE, BASE_MIRROR, *BASE_PACKAGES)
    suffix = "" if arch == "amd64" else f"-{arch}"
    return f"podhose-local/debian-python:{BASE_SUITE}-{key}{suffix}"


def ensure_base_image(engine: DockerEngine, arch: str = "amd64") -> str:
    """The local Debian 13 + Python 3.13 base image's tag for ``arch`` (amd64 or arm64),
    built now if the engine lacks it (arm64: under emulation, see ensure_arm64_emulation)."""
    tag = base_image_tag(arch)
    if engine.image_id(tag) is not None:
        return tag
    debootstrap = ensure_command("debootstrap", "debootstrap")
    foreign = arch != NATIVE_ARCH
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                debootstrap,
                f"--arch={arch}",
                *(["--foreign"] if foreign else []),
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                BASE_SUITE,
                str(rootfs),
                BASE_MIRROR,
            ],
            check=True,
            capture_output=True,
        )
        if foreign:
            unpack_foreign(rootfs)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
        load_rootfs(engine, rootfs, tag, arch, Path(tmp))
    return tag


def load_rootfs(engine: DockerEngine, rootfs: Path, tag: str, arch: str, scratch: Path) -> None:
    """``docker load`` of a one-layer image of ``rootfs`` for ``linux/arch``.

    Not ``docker import``: its ``--platform`` needs an experimental daemon before Docker 23,
    and without it every import is marked with the engine's own architecture.
    """
    archive = scratch / "image"
    archive.mkdir()
    layer = archive / "layer.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(layer), "."], check=True)
    diff_id = "sha256:" + _file_sha256(layer)
    config = json.dumps({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [BASE_ENV_PATH]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"debootstrap --arch={arch} {BASE_SUITE} (podhose tests)"}],
    }).encode()  # fmt: skip
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    (archive / config_name).write_bytes(config)
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}]
    (archive / "manifest.json").write_text(json.dumps(manifest))
    bundle = scratch / "image.tar"
    subprocess.run(["tar", "-C", str(archive), "-cf", str(bundle), "."], check=True)
    engine.docker("load", "--input", str(bundle))


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def unpack_foreign(rootfs: Path) -> None:
    """After ``debootstrap --foreign``: unpack every downloaded package natively (no
    maintainer scripts), then write what two of those scripts would have and Python needs:
    the account files (base-passwd) and the CA bundle (ca-certificates; Debian's pip reads
    it at start, even offline)."""
    for deb in sorted((rootfs / "var/cache/apt/archives").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(rootfs)], check=True)
    for name in ("passwd", "group"):
        master = rootfs / "usr/share/base-passwd" / f"{name}.master"
        if master.exists() and not (rootfs / "etc" / name).exists():
            shutil.copy(master, rootfs / "etc" / name)
    certificates = sorted((rootfs / "usr/share/ca-certificates").rglob("*.crt"))
    bundle = rootfs / "etc/ssl/certs/ca-certificates.crt"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(b"".join(cert.read_bytes() for cert in certificates))
    shutil.rmtree(rootfs / "debootstrap", ignore_errors=True)


def build_forwarder_image(engine: DockerEngine, base: str, tag: str, arch: str = "amd64") -> str:
    """``make image ARCH=arch`` on ``base``; returns the image id (the tag's previous image is
    removed)."""
    previous = engine.image_id(tag)
    result = engine.run(
        [
            "make",
            "--no-print-directory",
            "image",
            f"ARCH={arch}",
            # under emulation the full botocore data check takes >10 min; the amd64 build
            # of the same sources checks every region
            *([] if arch == NATIVE_ARCH else ["BOTOCORE_CHECK_REGION=us-east-1"]),
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
