"""Docker for the container tests, on a machine without an image registry.

* the engine: Debian's ``docker.io``; with no systemd to start it, ``dockerd``
  is started here when none answers, and stopped again afterwards;
* the base image: ``debootstrap --variant=minbase bookworm`` from the machine's
  own Debian mirror, imported with ``docker import`` (made once per engine);
  it trusts what this machine trusts (its CA bundle goes in), so pip and apt
  work in builds behind the same TLS-inspecting proxy as the host;
* images built with the classic builder (BuildKit is not available here);
* a compose project (Debian's ``docker-compose``) brought up with its images
  replaced through the environment, and always taken down with its volumes.

    reason = unavailable()            # None, or why a test must be skipped
    with engine():
        build_base_image()
        build("onair:test", ROOT / "deploy" / "Dockerfile", ROOT, {"BASE": BASE_IMAGE}).wait()
        with Compose(ROOT / "deploy" / "docker-compose.yml", env) as cluster:
            cluster.exec("node-a", "onair", "keys", "create", "--scope", "admin")
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "onair-base:bookworm"
SERVICES_IMAGE = "onair-test-services:bookworm"
SERVICES_DOCKERFILE = f"""\
# Redis, nginx and an S3 endpoint (moto's server) in one image for the compose
# test: official images need a registry, this is built from the base image
FROM {BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1
RUN apt-get update \\
 && apt-get install -y --no-install-recommends redis-server nginx python3-venv ca-certificates \\
 && rm -rf /var/lib/apt/lists/* \\
 && python3 -m venv /opt/moto && /opt/moto/bin/pip install "moto[server]>=5" \\
 && ln -s /opt/moto/bin/moto_server /usr/local/bin/moto_server
"""
HOST_TRUST = Path("/etc/ssl/certs/ca-certificates.crt")


class DockerError(RuntimeError):
    pass


def _docker() -> str | None:
    return shutil.which("docker")


def _compose_command() -> list[str] | None:
    binary = shutil.which("docker-compose")
    return [binary] if binary else None


def _engine_answers() -> bool:
    docker = _docker()
    if docker is None:
        return False
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def unavailable() -> str | None:
    """Why the container tests cannot run here, or None when they can."""
    if _docker() is None:
        return "Docker is not installed (Debian: apt-get install docker.io)"
    if _compose_command() is None:
        return "docker-compose is not installed (Debian: apt-get install docker-compose)"
    if not _engine_answers():
        if shutil.which("dockerd") is None:
            return "no Docker engine answers and dockerd is not installed"
        if os.geteuid() != 0:
            return "no Docker engine answers, and starting dockerd needs root"
    if shutil.which("debootstrap") is None and not _image_exists(BASE_IMAGE):
        return "debootstrap is not installed (it makes the base image without a registry)"
    return None


@contextlib.contextmanager
def engine(startup_timeout_s: float = 60.0) -> Iterator[None]:
    """A Docker engine that answers: the running one, or dockerd started here."""
    if _engine_answers():
        yield
        return
    logdir = Path(tempfile.mkdtemp(prefix="onair-dockerd-"))
    with (logdir / "dockerd.log").open("wb") as log:
        proc = subprocess.Popen(
            ["dockerd", "--pidfile", str(logdir / "dockerd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _engine_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DockerError(
                    "dockerd did not start:\n" + (logdir / "dockerd.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(logdir, ignore_errors=True)


def _run(args: list[str], *, timeout: float, input: bytes | None = None) -> str:
    done = subprocess.run(args, capture_output=True, timeout=timeout, input=input)
    if done.returncode != 0:
        raise DockerError(
            f"{' '.join(args[:4])} ... failed ({done.returncode}):\n"
            + (done.stdout + done.stderr).decode(errors="replace")[-4000:]
        )
    return done.stdout.decode(errors="replace")


def _image_exists(tag: str) -> bool:
    docker = _docker()
    if docker is None:
        return False
    done = subprocess.run([docker, "image", "inspect", tag], capture_output=True, timeout=30)
    return done.returncode == 0


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (the base image uses the same)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        m = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.MULTILINE)
        if m:
            return m.group(1)
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        m = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", listing.read_text(), re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def build_base_image(tag: str = BASE_IMAGE) -> None:
    """`tag`: a minimal Debian bookworm made by debootstrap, once per engine."""
    if _image_exists(tag):
        return
    docker = _docker()
    assert docker is not None
    with tempfile.TemporaryDirectory(prefix="onair-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
            timeout=900,
        )
        if HOST_TRUST.exists():
            # update-ca-certificates (run when an image installs ca-certificates)
            # folds every .crt here into the image's bundle
            trust = rootfs / "usr/local/share/ca-certificates/host"
            trust.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HOST_TRUST, trust / "trust.crt")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            assert tar.stdout is not None
            done = subprocess.run(
                [docker, "import", "--change", 'CMD ["/bin/bash"]', "-", tag],
                stdin=tar.stdout,
                capture_output=True,
                timeout=600,
            )
        finally:
            tar.wait(600)
        if done.returncode != 0 or tar.returncode != 0:
            raise DockerError(f"docker import failed: {done.stderr.decode(errors='replace')}")


class Building:
    """A `docker build` on its way (`wait` for it)."""

    def __init__(self, args: list[str], scratch: tempfile.TemporaryDirectory[str] | None) -> None:
        self._scratch = scratch
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the classic builder
        )

    def wait(self, timeout: float = 900.0) -> None:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        finally:
            if self._scratch is not None:
                self._scratch.cleanup()
        if self.proc.returncode != 0:
            raise DockerError("docker build failed:\n" + out.decode(errors="replace")[-4000:])


def build(
    tag: str,
    dockerfile: Path | str,
    context: Path | None = None,
    build_args: dict[str, str] | None = None,
) -> Building:
    """Start building `tag` (a Path: a Dockerfile in `context`; a str: the
    Dockerfile's text, built without a context). The host's network is used,
    as its apt and pip are."""
    docker = _docker()
    assert docker is not None
    args = [docker, "build", "--network", "host", "-t", tag]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    scratch = None
    if isinstance(dockerfile, str):
        scratch = tempfile.TemporaryDirectory(prefix="onair-build-")
        (Path(scratch.name) / "Dockerfile").write_text(dockerfile)
        dockerfile, context = Path(scratch.name) / "Dockerfile", Path(scratch.name)
    assert context is not None
    return Building([*args, "-f", str(dockerfile), str(context)], scratch)


class Compose:
    """A docker-compose project from `file`, up on enter, down (with its
    volumes) on exit, its settings given as environment variables."""

    def __init__(self, file: Path, env: dict[str, str]) -> None:
        command = _compose_command()
        assert command is not None
        self.project = "onairtest" + uuid.uuid4().hex[:8]
        self.base = [*command, "-p", self.project, "-f", str(file)]
        self.env = {**os.environ, **env}

    def run(self, *args: str, timeout: float = 300.0) -> str:
        done = subprocess.run(
            [*self.base, *args], capture_output=True, timeout=timeout, env=self.env
        )
        if done.returncode != 0:
            raise DockerError(
                f"docker-compose {' '.join(args)} failed:\n"
                + (done.stdout + done.stderr).decode(errors="replace")[-4000:]
            )
        return done.stdout.decode(errors="replace")

    def exec(self, service: str, *command: str) -> str:
        return self.run("exec", "-T", service, *command)

    def logs(self) -> str:
        try:
            return self.run("logs", "--no-color", "--tail", "60", timeout=60)
        except (DockerError, subprocess.TimeoutExpired) as exc:
            return f"(no logs: {exc})"

    def __enter__(self) -> Compose:
        try:
            self.run("up", "-d", "--no-build", timeout=600)
        except BaseException:
            self._down()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._down()

    def _down(self) -> None:
        with contextlib.suppress(DockerError, subprocess.TimeoutExpired):
            self.run("down", "-v", "--remove-orphans", "--timeout", "10", timeout=300)
