"""Session fixtures for the integration suite: the real engine, registries, a base image.

* Every test under ``tests/integration`` gets the ``integration`` marker.
* A missing tool fails the test when ``CI`` or ``PIPELINE_REQUIRE_TOOLS`` is set, and
  skips it elsewhere (the skip line says so): see :func:`check_tool` / ``require_tool``.
* ``registries``: three real distribution registries on free ports standing in for GHCR
  (htpasswd), ECR (plain) and Docker Hub (htpasswd, deletes enabled), with random
  credentials made at test time, a temporary ``DOCKER_CONFIG`` holding their ``auths``
  (exported for the whole session, so docker, buildx, cosign and trivy see it) and
  ``PIPELINE_TEST_<NAME>_USER`` / ``_PASSWORD`` environment variables for config files.
* ``offline_base``: a busybox base image (amd64 + arm64) in the ``ecr`` registry, by digest.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline import log
from pipeline.errors import ToolError
from pipeline.setup import localregistry, toolchain
from pipeline.tools import docker, proc

HERE = Path(__file__).parent.resolve()

# --------------------------------------------------------------------------- marker


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).resolve()
        if HERE == path or HERE in path.parents:
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------- which toolchain

#: ``PIPELINE_TEST_TOOLCHAIN=current`` runs the suite against today's upstream lines (cosign 3, buildx
#: 0.2x from Debian unstable, unpacked by ``pipeline doctor --install --current``) instead of the
#: toolchain ``doctor --install`` installs by default: their cosign goes first on PATH and their buildx
#: becomes the session docker config's CLI plugin, so the release and every tool see them.
TOOLCHAIN = os.environ.get("PIPELINE_TEST_TOOLCHAIN", "default")


def _current_plugins(root: Path) -> Path:
    """A cli-plugins directory whose docker-buildx is the current line's."""
    plugins = root / "cli-plugins-current"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-buildx"
    if not link.exists():
        link.symlink_to(toolchain.current_bin() / "docker-buildx")
    return plugins


def pytest_report_header(config: pytest.Config) -> str:
    if TOOLCHAIN == "current":
        return f"toolchain: current ({toolchain.current_bin()}: cosign, docker-buildx first)"
    return "toolchain: default (what pipeline doctor --install installs)"


@pytest.fixture(scope="session", autouse=True)
def toolchain_line() -> Iterator[str]:
    """The toolchain line of this session (see :data:`TOOLCHAIN`)."""
    if TOOLCHAIN not in ("default", "current"):
        pytest.exit(f"PIPELINE_TEST_TOOLCHAIN={TOOLCHAIN}: say 'default' or 'current'", returncode=4)
    if TOOLCHAIN == "default":
        yield TOOLCHAIN
        return
    for name in ("cosign", "docker-buildx"):
        if not (toolchain.current_bin() / name).exists():
            pytest.exit(f"PIPELINE_TEST_TOOLCHAIN=current: {toolchain.current_bin() / name} is missing (run"
                        " 'pipeline doctor --install --current')", returncode=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{toolchain.current_bin()}{os.pathsep}{os.environ['PATH']}")
        yield TOOLCHAIN


# --------------------------------------------------------------------------- tools


def tools_required() -> bool:
    """In CI (any CI the tool detects: GitHub, GitLab, Jenkins, which sets no CI variable; or with
    PIPELINE_REQUIRE_TOOLS) a missing tool is a failure, never a skip."""
    from pipeline.metadata.ci import detect_provider

    return bool(os.environ.get("CI") or os.environ.get("PIPELINE_REQUIRE_TOOLS")
                or detect_provider(os.environ) != "local")


def missing(name: str, detail: str) -> None:
    """Fail (CI) or skip (elsewhere) because ``name`` is not usable."""
    if tools_required():
        pytest.fail(f"{name} missing: {detail} (CI and PIPELINE_REQUIRE_TOOLS require every tool; "
                    f"run 'pipeline doctor --install')", pytrace=False)
    pytest.skip(f"{name} missing: {detail} (CI fails here instead)")


def _binfmt_ok(arch: str) -> bool:
    name = f"qemu-{toolchain.QEMU_NAMES.get(arch, arch)}"
    try:
        entry = toolchain.parse_binfmt_entry(name, (toolchain.BINFMT_DIR / name).read_text())
    except OSError:
        return False
    return entry.enabled and entry.fix_binary


@functools.cache
def _tool_problem(name: str) -> str | None:
    """Why ``name`` is not usable (``None`` when it is). Cached for the session."""
    if name in ("docker-engine", "engine"):
        if proc.which("docker") is None:
            return "the docker client is not installed"
        try:
            toolchain.ensure_dockerd()
        except ToolError as exc:
            return str(exc)
        return None
    if name == "buildx":
        if proc.which("docker") is None:
            return "the docker client is not installed"
        r = proc.run(["docker", "buildx", "version"], check=False, timeout=60, what="docker buildx version")
        return None if r.returncode == 0 and toolchain.parse_buildx_version(r.stdout) else \
            "docker buildx does not answer (no cli plugin)"
    if name.startswith("qemu-"):
        arch = name.split("-", 1)[1]
        if arch == toolchain.host_arch():
            return None
        return None if _binfmt_ok(arch) else f"no QEMU binfmt handler with the F flag for {arch}"
    if name.startswith("busybox-"):
        arch = name.split("-", 1)[1]
        path = toolchain.busybox_path(arch)
        return None if path.is_file() else f"no static busybox for {arch} at {path}"
    if name == "cosign":
        if proc.which("cosign") is None:
            return "cosign is not installed"
        r = proc.run(["cosign", "version"], check=False, timeout=60, what="cosign version")
        return None if r.returncode == 0 else "cosign does not run"
    if name in ("cosign-current", "crane"):   # today's lines, beside the default toolchain
        exe = toolchain.current_bin() / ("cosign" if name == "cosign-current" else "crane")
        if not exe.exists():
            return f"{exe} is missing (pipeline doctor --install --current)"
        r = proc.run([str(exe), "version"], check=False, timeout=60, what=f"{exe} version")
        return None if r.returncode == 0 else f"{exe} does not run"
    return None if proc.which(name) else f"'{name}' is not on PATH"


def check_tool(name: str) -> None:
    """Skip or fail (see :func:`missing`) unless ``name`` is usable.

    Names: ``docker``, ``docker-engine``, ``docker-registry``, ``buildx``, ``trivy``, ``cosign``,
    ``cosign-current`` and ``crane`` (Debian unstable's, in the current toolchain), ``htpasswd``,
    ``openssl``, ``skopeo``, ``qemu-<arch>``, ``busybox-<arch>`` (dpkg arch names).
    """
    problem = _tool_problem(name)
    if problem:
        missing(name, problem)


@pytest.fixture(scope="session")
def require_tool():
    """``require_tool("trivy")`` inside a test: skip here, fail in CI, when the tool is missing."""
    return check_tool


@pytest.fixture(scope="session")
def docker_engine() -> docker.EngineInfo:
    """A Docker engine that answers (started when needed)."""
    check_tool("docker-engine")
    info = docker.engine_info()
    assert info is not None, "docker info stopped answering"
    return info


# --------------------------------------------------------------------------- registries


@dataclass(frozen=True)
class TestRegistry:
    """One registry of the session: what tests and config files need to reach it."""

    __test__ = False  # not a test class

    name: str                  # ghcr | ecr | hub
    host: str                  # "127.0.0.1:<port>"
    username: str | None       # None: no auth
    password: str | None
    delete: bool
    instance: localregistry.RegistryInstance
    username_env: str | None = None
    password_env: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def auth(self) -> bool:
        return self.username is not None

    @property
    def toml(self) -> str:
        """A ``[[registries]]`` entry for a pipeline config file."""
        lines = ["[[registries]]", f'name = "{self.name}"', f'url = "{self.host}"']
        if self.auth:
            lines += ['auth = "env"', f'username_env = "{self.username_env}"',
                      f'password_env = "{self.password_env}"']
        else:
            lines.append('auth = "none"')
        return "\n".join(lines) + "\n"

    def auth_header(self) -> dict[str, str]:
        if not self.auth:
            return {}
        return localregistry.basic_auth_header(self.username or "", self.password or "")

    def log_offset(self) -> int:
        """Where the registry's log ends now (pass to :meth:`uploads_since`)."""
        return localregistry.log_offset(self.instance)

    def uploads_since(self, offset: int = 0, repo: str | None = None) -> list[tuple[str, str]]:
        """``(repo, digest)`` of blob uploads the registry completed since ``offset``."""
        return localregistry.uploads_since(self.instance, offset, repo)

    def __repr__(self) -> str:  # the password never shows in assertion output
        return f"TestRegistry(name={self.name!r}, host={self.host!r}, username={self.username!r}, " \
               f"delete={self.delete!r})"


def registry_log_uploads(reg: TestRegistry, since: int = 0, repo: str | None = None) -> int:
    """How many blob uploads ``reg`` completed since log offset ``since``.

    The registry writes one access-log line per request when it has answered; a finished
    upload is ``"PUT /v2/<repo>/blobs/uploads/<uuid>?_state=…&digest=sha256%3A<hex> HTTP/1.1" 201``.
    Lines are not in time order (each carries the request's start time), but every request
    that was answered before the call is in the file.
    """
    return len(reg.uploads_since(since, repo))


@pytest.fixture(scope="session")
def registry_uploads():
    """The :func:`registry_log_uploads` helper, for tests."""
    return registry_log_uploads


#: name → (htpasswd auth, deletes enabled)
REGISTRY_ROLES = {"ghcr": (True, False), "ecr": (False, False), "hub": (True, True)}


def _write_docker_config(path: Path, auths: dict[str, tuple[str, str]]) -> None:
    """config.json with ``auths`` for the session; the user's plugins and contexts stay reachable."""
    path.mkdir(parents=True, exist_ok=True)
    original = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    data: dict = {"auths": {host: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()}
                            for host, (u, p) in auths.items()}}
    try:
        current = json.loads((original / "config.json").read_text()).get("currentContext")
    except (OSError, ValueError):
        current = None
    if current:
        data["currentContext"] = current
    if TOOLCHAIN == "current" and not (path / "cli-plugins").exists():
        (path / "cli-plugins").symlink_to(_current_plugins(path.parent))
    for sub in ("cli-plugins", "contexts"):
        if (original / sub).is_dir() and not (path / sub).exists():
            (path / sub).symlink_to(original / sub)
    cfg = path / "config.json"
    cfg.touch(mode=0o600)
    cfg.write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="session")
def docker_config(registries: dict[str, TestRegistry]) -> Path:
    """The session's DOCKER_CONFIG directory (credentials for the auth registries)."""
    return Path(os.environ["DOCKER_CONFIG"])


@pytest.fixture(scope="session")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TestRegistry]]:
    """``{"ghcr": …, "ecr": …, "hub": …}``: real registries, stopped at the end of the session."""
    root = tmp_path_factory.mktemp("registries")
    state_root = root / "state"
    started: list[str] = []
    out: dict[str, TestRegistry] = {}
    with pytest.MonkeyPatch.context() as mp:
        try:
            for name, (auth, delete) in REGISTRY_ROLES.items():
                user = password = user_env = password_env = None
                htpasswd = None
                if auth:
                    if proc.which("htpasswd") is None:
                        missing("htpasswd", "'htpasswd' is not on PATH (apt-get install apache2-utils)")
                    user, password = f"{name}-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
                    log.register_secret(password)
                    htpasswd = root / "auth" / f"{name}.htpasswd"
                    localregistry.add_user(htpasswd, user, password)
                    user_env, password_env = f"PIPELINE_TEST_{name.upper()}_USER", \
                        f"PIPELINE_TEST_{name.upper()}_PASSWORD"
                    mp.setenv(user_env, user)
                    mp.setenv(password_env, password)
                try:
                    inst = localregistry.start(name, port=0, state_root=state_root, htpasswd=htpasswd,
                                               delete=delete)
                except ToolError as exc:
                    if proc.which(localregistry.BINARY) is None:
                        missing("docker-registry", str(exc))
                    raise
                started.append(name)
                out[name] = TestRegistry(name, inst.host, user, password, delete, inst, user_env, password_env)
            _write_docker_config(root / "docker-config",
                                 {r.host: (r.username, r.password) for r in out.values()
                                  if r.username and r.password})
            mp.setenv("DOCKER_CONFIG", str(root / "docker-config"))
            yield out
        finally:
            for name in started:
                localregistry.stop(name, state_root=state_root)
            forget_local_images([r.host for r in out.values()])


def forget_local_images(hosts: list[str]) -> None:
    """Untag the engine's images named after ``hosts`` (pulls and builds of the session).

    Best effort: the content stays while other names use it; only the names of registries
    that are gone are dropped, so the image list does not grow with every session.
    """
    if not hosts or proc.which("docker") is None:
        return
    r = proc.run(["docker", "image", "ls", "--format", "{{.Repository}}\t{{.Tag}}\t{{.Digest}}"], check=False,
                 timeout=60, what="docker image ls")
    names = []
    for line in r.stdout.splitlines():
        repo, _, rest = line.partition("\t")
        tag, _, digest = rest.partition("\t")
        if not any(repo.startswith(h + "/") for h in hosts):
            continue
        if tag and tag != "<none>":
            names.append(f"{repo}:{tag}")
        elif digest and digest != "<none>":
            names.append(f"{repo}@{digest}")
    if names:
        proc.run(["docker", "image", "rm", *names], check=False, timeout=300, what="docker image rm")


# --------------------------------------------------------------------------- base image


@pytest.fixture(scope="session")
def offline_base(registries: dict[str, TestRegistry], docker_engine: docker.EngineInfo) -> str:
    """``127.0.0.1:<port>/pipeline/offline-base@sha256:…`` (linux/amd64 + linux/arm64) in ``ecr``."""
    from pipeline.setup.offline_base import ensure_offline_base

    check_tool("buildx")
    for arch in ("amd64", "arm64"):
        check_tool(f"busybox-{arch}")
        check_tool(f"qemu-{arch}")
    return ensure_offline_base(registries["ecr"].host)


__all__ = ["ClassicEngine", "TestRegistry", "check_tool", "missing", "registry_log_uploads", "tools_required"]


@pytest.fixture
def cosign_on_path(monkeypatch):
    """``use("default" | "current")`` puts that cosign first on PATH for this test (the release and cosign
    run directly both see it); the detected major version is forgotten between switches."""
    from pipeline.tools import cosign as cosign_tool

    original = os.environ["PATH"]

    def use(which: str) -> str:
        if which == "current":
            check_tool("cosign-current")
            monkeypatch.setenv("PATH", f"{toolchain.current_bin()}{os.pathsep}{original}")
        else:
            check_tool("cosign")
            current = str(toolchain.current_bin())
            monkeypatch.setenv("PATH", os.pathsep.join(d for d in original.split(os.pathsep) if d != current))
        cosign_tool.installed_major.cache_clear()
        return proc.which("cosign") or "cosign"

    yield use
    cosign_tool.installed_major.cache_clear()


# --------------------------------------------------------------------------- fault tests


@pytest.fixture(scope="module")
def fault_tools(docker_engine, registries) -> None:
    for tool in ("buildx", "docker-registry", "cosign", "trivy", "busybox-amd64", "busybox-arm64", "qemu-amd64",
                 "qemu-arm64"):
        check_tool(tool)


@pytest.fixture(scope="module")
def fault_proxies(registries, fault_tools) -> Iterator[dict[str, Any]]:
    """A seeded :class:`FaultProxy` in front of each session registry (faults off until a test turns them on)."""
    from tests.support.faultproxy import FaultProxy

    started = {n: FaultProxy(registries[n].url, seed=1000 + i, retry_after=1).start()
               for i, n in enumerate(("ghcr", "ecr", "hub"))}
    yield started
    for p in started.values():
        p.stop()


@pytest.fixture(scope="module")
def fault_workdir(tmp_path_factory) -> Path:
    """One working directory for a module's releases (its .pipeline/ keeps the offline base and layouts)."""
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def fault_signing(fault_workdir) -> dict[str, str]:
    from tests.support import project

    password = secrets.token_urlsafe(16)
    r = project.run_main(["keygen", "--output", str(fault_workdir / "keys" / "release")],
                         project.github_env(COSIGN_PASSWORD=password))
    assert r.code == 0, r.err
    return {"key": str(fault_workdir / "keys" / "release.key"), "pub": str(fault_workdir / "keys" / "release.pub"),
            "password": password}


@pytest.fixture(scope="module")
def fault_db(registries) -> str:
    """The small test vulnerability DB in the plain registry (reached through its proxy by the releases)."""
    from pipeline.tools.registry import Registry
    from tests.support import trivydb

    with Registry(registries["ecr"].host, insecure=True) as client:
        trivydb.push(client, "mirror/trivy-db", "2", trivydb.pack(trivydb.minimal_db()))
    return "mirror/trivy-db:2"


@pytest.fixture(scope="module")
def rig(fault_workdir, registries, fault_proxies, fault_signing, fault_db):
    """The fault tests' set-up in one object (tests/support/faultrig.py)."""
    from tests.support.faultrig import Rig

    return Rig(fault_workdir, registries, fault_proxies, fault_signing, fault_db)


# --------------------------------------------------------------------------- a second engine: the classic store


@dataclass(frozen=True)
class ClassicEngine:
    """A dockerd without the containerd snapshotter beside the main one (what many runners and laptops
    have); clients reach it with ``DOCKER_HOST``."""

    host: str                  # unix:///…/docker.sock
    info: docker.EngineInfo

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}


CLASSIC_BRIDGE = "pl-classic0"
CLASSIC_BRIDGE_CIDR = "10.231.47.1/24"


@pytest.fixture(scope="session")
def classic_engine(docker_engine: docker.EngineInfo) -> Iterator[ClassicEngine]:
    """The command line shared/toolchain.md gives — its own socket, data-root, exec-root and containerd
    namespaces, no iptables, an empty daemon.json (so the classic image store) — but a bridge of its own. With the
    current toolchain it is Debian unstable's dockerd 28."""
    from tests.support.engines import second_engine

    with second_engine("classic", CLASSIC_BRIDGE, CLASSIC_BRIDGE_CIDR, "{}\n", current=TOOLCHAIN == "current",
                       missing=missing) as eng:
        assert not eng.info.containerd_snapshotter, "the second engine has the containerd image store"
        yield ClassicEngine(eng.host, eng.info)


# --------------------------------------------------------------------------- a runner-like user


@pytest.fixture(scope="session")
def runner(docker_engine):
    """A user who is not root, in the docker socket's group, on a machine whose tools it cannot see
    (:mod:`tests.support.runner`)."""
    from tests.support import runner as runner_support

    if hasattr(os, "geteuid") and os.geteuid() != 0:
        missing("runner-user", "making a runner user needs root (CI runs as root)")
    lacking = runner_support.missing_host_tools()
    if lacking:
        missing("runner-user", f"{', '.join(lacking)} not on PATH (util-linux, passwd)")
    with runner_support.runner_user() as made:
        yield made


@pytest.fixture(scope="session")
def tool_mirror(docker_engine):
    """A mirror of the tools' release files (the root install's binaries), served on loopback."""
    from tests.support import runner as runner_support

    for tool in ("trivy", "cosign", "docker-registry", "buildx"):
        check_tool(tool)
    with runner_support.tool_mirror() as url:
        yield url
