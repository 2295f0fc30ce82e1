"""The repository's Containerfile, built and run with podman on a Debian base made here (no registry needed).

What the README promises of the image: it runs as a non-root user, keeps its data on a volume (the owner's
password is shown on the first start only, and a second container on the same volume keeps it), answers
sign-in over HTTP, its HEALTHCHECK reports readiness, and it stops at once on ``podman stop``.

The base (``debootstrap --variant=minbase`` plus apt's Python, standing in for the official Python slim image)
and podman's storage live in CACHE, so only the first run pays for them; each run rebuilds the app image on
the layer cache and afterwards prunes what it replaced. Settings the test machines need, and a normal host does
not, are in CONTAINERS_CONF below. Containers use the host's network with the service on 127.0.0.1: bridge
networking would leave iptables rules and ip_forward behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from serverkit import free_port

REPO = Path(__file__).resolve().parent.parent
CACHE = Path("/var/cache/smtpsettings-test")
RUNROOT = Path("/run/smtpsettings-test")  # podman's runtime state; fixed, as podman's database records it
BASE_TARBALL = CACHE / "bookworm-minbase.tar"
BASE = "localhost/smtpsettings-test/bookworm:base"
PYTHON = "localhost/smtpsettings-test/python:bookworm"
IMAGE = "localhost/smtpsettings-test/app:latest"
POSTGRES = "localhost/smtpsettings-test/postgres:bookworm"
TOOLS = ("podman", "buildah", "runc", "debootstrap")

# runc: crun refuses this kind of host's hybrid cgroup layout. The ulimits: root here cannot raise limits past
# the host's, and podman's default for root (1048576 open files) fails at setrlimit.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

# Stands in for docker.io/library/python:*-slim: Debian's Python with venv, CA certificates for pip.
PYTHON_CONTAINERFILE = """\
FROM {base}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
    python3 python3-venv ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
"""

# Stands in for docker.io/library/postgres as far as compose.yaml uses it: a UTF-8 cluster made on the first
# start for POSTGRES_USER with POSTGRES_PASSWORD, and the database POSTGRES_DB; PGPORT moves it off 5432.
POSTGRES_CONTAINERFILE = """\
FROM {base}
RUN mkdir -p /etc/postgresql-common/createcluster.d \\
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main-cluster.conf \\
 && apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \\
 && rm -rf /var/lib/apt/lists/* \\
 && install -d -o postgres -g postgres /var/lib/postgresql/data \\
 && ln -s /usr/lib/postgresql/*/bin /usr/lib/postgresql/bin
COPY entrypoint /usr/local/bin/entrypoint
ENV PATH=/usr/lib/postgresql/bin:$PATH PGHOST=/tmp
USER postgres
VOLUME /var/lib/postgresql/data
CMD ["entrypoint"]
"""
POSTGRES_ENTRYPOINT = """\
#!/bin/sh
set -e
data=/var/lib/postgresql/data
if [ ! -s "$data/PG_VERSION" ]; then
  printf '%s\\n' "$POSTGRES_PASSWORD" > /tmp/password
  initdb -D "$data" -E UTF8 --locale=C.UTF-8 -U "$POSTGRES_USER" --pwfile=/tmp/password \\
    --auth=scram-sha-256 >/dev/null
  rm /tmp/password
  echo "CREATE DATABASE \\"$POSTGRES_DB\\" OWNER \\"$POSTGRES_USER\\"" | postgres --single -D "$data" postgres >/dev/null
fi
exec postgres -D "$data" -c listen_addresses='*' -c unix_socket_directories=/tmp
"""


@dataclass
class Podman:
    conf: Path

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["podman", *self.global_args, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    @property
    def global_args(self) -> list[str]:
        return ["--root", str(CACHE / "storage"), "--runroot", str(RUNROOT)]

    def image_exists(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0

    def build_helper(self, name: str, files: dict[str, str]) -> None:
        """A stand-in image from ``files`` (a Containerfile and what it copies); seconds on the layer cache."""
        with tempfile.TemporaryDirectory() as context:
            for file, text in files.items():
                (Path(context) / file).write_text(text)
                (Path(context) / file).chmod(0o755)
            self("build", "--pull=never", "--network", "host", "-t", name, context, timeout=600)


def debian_mirror() -> str:
    """The host's Debian mirror, from apt's sources (deb822 or one-line form)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if path.suffix not in (".list", ".sources") or not path.is_file():
            continue
        for found in re.findall(r"^(?:URIs:|deb)\s+(\S+)", path.read_text(), re.MULTILINE):
            if found.rstrip("/").endswith("/debian"):
                return found
    return "http://deb.debian.org/debian"


def make_base_tarball() -> None:
    """A minimal Debian root file system as a tarball: the slow step (about a minute), done once per machine."""
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
            check=True, capture_output=True, timeout=600,
        )
        # Downloaded packages and indexes: apt in a build fetches fresh ones.
        for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"):
            for cached in rootfs.glob(pattern):
                cached.unlink()
        partial = Path(tmp) / "base.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True, timeout=300)
        partial.replace(BASE_TARBALL)  # complete or absent, even if this run is cut short


def build_app_image(podman: Podman) -> None:
    """The repository's Containerfile on the local stand-in, with the host's CA bundle for pip (see there)."""
    host_ca = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    podman(
        # The docker format: an OCI image has no HEALTHCHECK, podman would drop it with a warning.
        "build", "--format", "docker", "--pull=never", "--network", "host", "--layers",
        "--build-arg", f"BASE={PYTHON}",
        "--build-arg", "PIP_CERT=/run/host-ca.pem", "-v", f"{host_ca}:/run/host-ca.pem:ro",
        "-f", str(REPO / "Containerfile"), "-t", IMAGE, str(REPO),
        timeout=600,
    )


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    """podman with this machine's settings and the app image freshly built, the cache held for the module."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        reason = f"{', '.join(missing)} not found: install Debian's podman buildah runc debootstrap (.ci/run does)"
        if os.environ.get("SMTPSETTINGS_REQUIRE_CONTAINERS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one test run at a time uses the shared storage
        conf = CACHE / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        tool = Podman(conf)
        if not tool.image_exists(BASE):
            if not BASE_TARBALL.exists():
                make_base_tarball()
            tool("import", str(BASE_TARBALL), BASE, timeout=300)
        tool.build_helper(PYTHON, {"Containerfile": PYTHON_CONTAINERFILE.format(base=BASE)})
        build_app_image(tool)
        yield tool
        tool("image", "prune", "--force")  # earlier builds of the images, untagged now: only one of each is kept


@dataclass
class Container:
    podman: Podman
    name: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = self.podman("logs", self.name)
        return result.stdout + result.stderr

    def wait_ready(self, timeout: float = 60, restarts: bool = False) -> None:
        """Until /health/ready answers 200; a container that stops fails at once, unless it ``restarts``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.podman("inspect", "--format", "{{.State.Running}}", self.name).stdout.strip()
            assert state == "true" or restarts, f"the container stopped:\n{self.logs()}"
            try:
                if httpx.get(f"{self.base_url}/api/2.0/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"not ready in {timeout} s:\n{self.logs()}")

    def stop(self) -> float:
        """``podman stop`` with a 10 s grace period; returns the seconds it took."""
        started = time.monotonic()
        self.podman("stop", "--time", "10", self.name, timeout=60)
        return time.monotonic() - started


@pytest.fixture
def volume(podman: Podman) -> Iterator[str]:
    name = f"smtpsettings-test-{uuid.uuid4().hex[:12]}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)


@pytest.fixture
def start(podman: Podman, volume: str) -> Iterator[Callable[[], Container]]:
    """Starts containers of the image on the test's volume; removes them afterwards."""
    names: list[str] = []

    def run() -> Container:
        container = Container(podman, f"smtpsettings-test-{uuid.uuid4().hex[:12]}", free_port())
        names.append(container.name)
        podman(
            "run", "--detach", "--name", container.name, "--network", "host",
            "-e", "SMTPSETTINGS_HOST=127.0.0.1", "-e", f"SMTPSETTINGS_PORT={container.port}",
            "-v", f"{volume}:/var/lib/smtpsettings", IMAGE,
        )
        return container

    yield run
    for name in names:
        podman("rm", "--force", "--time", "0", name, check=False)


def sign_in(container: Container, email: str, password: str) -> int:
    r = httpx.post(
        f"{container.base_url}/api/2.0/authentication", json={"userName": email, "password": password}, timeout=30
    )
    return r.status_code


def owner_credentials(logs: str) -> tuple[str, str]:
    email = re.search(r"^\s*Email:\s+(\S+)$", logs, re.MULTILINE)
    password = re.search(r"^\s*Password:\s+(\S+)$", logs, re.MULTILINE)
    assert email and password, logs
    return email.group(1), password.group(1)


def test_the_image_runs_as_its_own_non_root_user(podman: Podman, start: Callable[[], Container]) -> None:
    config = json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config["User"] == "smtpsettings"
    assert "/var/lib/smtpsettings" in config["Volumes"]
    container = start()
    container.wait_ready()
    assert podman("exec", container.name, "id", "-u").stdout.strip() == "10001"
    assert podman("exec", container.name, "id", "-g").stdout.strip() == "10001"
    # The database on the volume belongs to that user, and nobody else may read the data directory.
    owners = podman("exec", container.name, "stat", "-c", "%u:%g %a", "/var/lib/smtpsettings",
                    "/var/lib/smtpsettings/smtpsettings.db").stdout.split("\n")
    assert owners[0] == "10001:10001 700", owners
    assert owners[1].startswith("10001:10001 "), owners


def test_the_owner_is_made_once_and_the_volume_keeps_it(start: Callable[[], Container]) -> None:
    first = start()
    first.wait_ready()
    logs = first.logs()
    assert "First start: created the default portal and its owner." in logs
    email, password = owner_credentials(logs)
    assert sign_in(first, email, password) == 200
    assert sign_in(first, email, password + "x") == 401
    assert first.stop() < 5  # SIGTERM ends it; the 10 s grace period is not used up
    assert "Traceback" not in first.logs()

    second = start()
    second.wait_ready()
    assert "First start" not in second.logs() and password not in second.logs()
    assert sign_in(second, email, password) == 200
    assert second.stop() < 5


def test_the_healthcheck_reports_readiness(podman: Podman, start: Callable[[], Container]) -> None:
    container = start()
    container.wait_ready()
    assert podman("healthcheck", "run", container.name).returncode == 0
    # The same command where nothing listens on the port fails: the check does look at the service.
    check = json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Healthcheck"]["Test"]
    assert check[0] == "CMD", check
    idle = podman(
        "run", "--rm", "--network", "host", "-e", f"SMTPSETTINGS_PORT={free_port()}", IMAGE, *check[1:],
        check=False,
    )
    assert idle.returncode == 1, idle.stderr


def test_compose_runs_it_on_postgresql(podman: Podman, tmp_path: Path) -> None:
    """compose.yaml as shipped, with the local images, the host's network and free ports laid over it."""
    podman.build_helper(
        POSTGRES, {"Containerfile": POSTGRES_CONTAINERFILE.format(base=BASE), "entrypoint": POSTGRES_ENTRYPOINT}
    )
    project = f"smtpsettings-test-{uuid.uuid4().hex[:12]}"
    password, pg_port, port = uuid.uuid4().hex, free_port(), free_port()
    database_url = f"postgresql://smtpsettings:{password}@127.0.0.1:{pg_port}/smtpsettings"
    override = {  # JSON is YAML
        "services": {
            "postgres": {"image": POSTGRES, "network_mode": "host", "environment": {"PGPORT": str(pg_port)}},
            "smtpsettings": {
                "image": IMAGE,  # built above: compose builds only a missing image
                "network_mode": "host",
                "environment": {
                    "SMTPSETTINGS_HOST": "127.0.0.1",
                    "SMTPSETTINGS_PORT": str(port),
                    "SMTPSETTINGS_DATABASE_URL": database_url,
                },
            },
        }
    }
    (tmp_path / "override.yaml").write_text(json.dumps(override))
    compose = [
        sys.executable, "-m", "podman_compose", "--podman-args", " ".join(podman.global_args), "-p", project,
        "-f", str(REPO / "compose.yaml"), "-f", str(tmp_path / "override.yaml"),
    ]
    env = {**podman.env, "POSTGRES_PASSWORD": password}
    try:
        up = subprocess.run([*compose, "up", "-d"], capture_output=True, text=True, timeout=300, env=env)
        assert up.returncode == 0, up.stderr
        service = Container(podman, f"{project}_smtpsettings_1", port)
        # podman 4.3 cannot wait for the database's health: the restart policy covers a start too early.
        service.wait_ready(timeout=90, restarts=True)
        email, owner_password = owner_credentials(service.logs())
        assert sign_in(service, email, owner_password) == 200
        postgres = f"{project}_postgres_1"
        assert podman("healthcheck", "run", postgres).returncode == 0  # compose.yaml's pg_isready
        tables = podman(
            "exec", "--env", f"PGPASSWORD={password}", postgres, "psql", "-U", "smtpsettings", "-d", "smtpsettings",
            "-tAc", "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        ).stdout.strip()
        assert int(tables) > 0  # the service's tables are in PostgreSQL, only its key ring on the volume
        data = podman("exec", service.name, "ls", "/var/lib/smtpsettings").stdout.split()
        assert "keys.json" in data and "smtpsettings.db" not in data, data
    finally:
        down = subprocess.run([*compose, "down", "-v"], capture_output=True, text=True, timeout=120, env=env)
        assert down.returncode == 0, down.stderr
