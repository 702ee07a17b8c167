"""Installing tools without root: release binaries into the user's own directories, checksum-verified.

On a CI runner where the job is not root (GitHub's and GitLab's hosted runners run as a user with
docker access; many self-hosted ones too), ``pipeline doctor --install`` cannot use apt. What a
release needs beside the engine is a handful of static Go binaries, and their projects publish them
with checksum files. This module fetches them from a *download base*:

* by default each project's GitHub release (``https://github.com/<owner>/<repo>/releases/download/v<version>``);
* ``--download-base URL`` or ``PIPELINE_DOWNLOAD_BASE``: an internal mirror that holds the same
  release files flat in one directory (e.g. ``<base>/cosign-linux-amd64`` and
  ``<base>/cosign_checksums.txt``), for networks without GitHub.

Each file is checked against the project's own checksum file before it is made executable; a
mismatch deletes it and fails naming both digests. Targets: ``~/.local/bin`` for trivy, cosign and
the registry, ``$DOCKER_CONFIG/cli-plugins`` (``~/.docker/cli-plugins``) for buildx, where the docker
CLI looks first. The versions are the default toolchain's lines (what ``doctor --install`` gets as
root). The engine itself, QEMU's binfmt handlers and the kernel side need root: for those the
result says exactly what to run (or ``sudo -n`` runs the root install when it may).
"""

from __future__ import annotations

import os
import platform
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ToolError
from pipeline.tools import download, proc

BASE_ENV = "PIPELINE_DOWNLOAD_BASE"


@dataclass(frozen=True)
class Release:
    """One tool's release file and the checksum file beside it (names as the project publishes them)."""

    tool: str                 # the doctor's tool name
    version: str
    upstream: str             # the release directory, {version} filled in
    asset: str                # file name; {version}, {arch} (Go's), {tarch} (the project's own arch word)
    checksums: str            # checksum file name (sha256sum format, or one bare digest)
    member: str | None        # the binary inside a .tar.gz asset; None: the asset is the binary
    installed_as: str         # file name in the target directory
    plugin: bool = False      # a docker CLI plugin (cli-plugins), else a program (~/.local/bin)
    arch_words: tuple[tuple[str, str], ...] = ()

    def _fill(self, template: str, arch: str) -> str:
        words = dict(self.arch_words)
        return template.format(version=self.version, arch=arch, tarch=words.get(arch, arch))

    def asset_name(self, arch: str) -> str:
        return self._fill(self.asset, arch)

    def checksums_name(self, arch: str) -> str:
        return self._fill(self.checksums, arch)

    def base(self, override: str | None) -> str:
        return (override or self.upstream.format(version=self.version)).rstrip("/")


RELEASES: dict[str, Release] = {r.tool: r for r in (
    Release("trivy", "0.59.1", "https://github.com/aquasecurity/trivy/releases/download/v{version}",
            "trivy_{version}_Linux-{tarch}.tar.gz", "trivy_{version}_checksums.txt", "trivy", "trivy",
            arch_words=(("amd64", "64bit"), ("arm64", "ARM64"))),
    Release("cosign", "2.5.0", "https://github.com/sigstore/cosign/releases/download/v{version}",
            "cosign-linux-{arch}", "cosign_checksums.txt", None, "cosign"),
    Release("buildx", "0.13.1", "https://github.com/docker/buildx/releases/download/v{version}",
            "buildx-v{version}.linux-{arch}", "checksums.txt", None, "docker-buildx", plugin=True),
    Release("docker-registry", "2.8.3", "https://github.com/distribution/distribution/releases/download/v{version}",
            "registry_{version}_linux_{arch}.tar.gz", "registry_{version}_linux_{arch}.tar.gz.sha256", "registry",
            "docker-registry"),
)}

#: what needs root, and what to tell the user instead
NEEDS_ROOT = {
    "docker": "install the docker CLI (a runner image usually has it); ask an administrator",
    "docker-engine": "ask an administrator for a Docker engine >= 24 and membership of its socket's group"
                     " (e.g. 'sudo usermod -aG docker $USER'), or run 'sudo pipeline doctor --install'",
    "qemu-binfmt": "foreign platforms need QEMU's binfmt handlers, which only root registers: run"
                   " 'sudo pipeline doctor --install', or 'docker run --privileged --rm tonistiigi/binfmt"
                   " --install all' where that image can be pulled",
    "skopeo": "optional (tests only): 'sudo apt-get install skopeo'",
}


def go_arch(machine: str | None = None) -> str:
    m = (machine or platform.machine()).lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)


def plugin_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    config = env.get("DOCKER_CONFIG") or str(Path(env.get("HOME") or Path.home()) / ".docker")
    return Path(config) / "cli-plugins"


def target(release: Release, env: Mapping[str, str] | None = None) -> Path:
    return (plugin_dir(env) if release.plugin else proc.user_bin()) / release.installed_as


def parse_checksums(text: str, name: str) -> str | None:
    """The SHA-256 of ``name`` in a checksum file: ``<hex>  <name>`` lines (``*name`` too), or a file
    that holds one bare digest (distribution's ``.sha256``)."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    for parts in lines:
        if len(parts) >= 2 and parts[1].lstrip("*").rsplit("/", 1)[-1] == name and len(parts[0]) == 64:
            return parts[0].lower()
    if len(lines) == 1 and len(lines[0]) == 1 and len(lines[0][0]) == 64:
        return lines[0][0].lower()
    return None


def install_one(release: Release, *, base: str | None = None, arch: str | None = None,
                env: Mapping[str, str] | None = None) -> str:
    """Fetch, verify and install one tool; the sentence that says what was done."""
    arch = arch or go_arch()
    root = release.base(base)
    asset = release.asset_name(arch)
    sums_name = release.checksums_name(arch)
    try:
        sums = download.text(f"{root}/{sums_name}")
    except download.DownloadError as exc:
        raise ToolError(f"{release.tool}: cannot fetch the checksum file: {exc}",
                        tool=release.tool) from None
    want = parse_checksums(sums, asset)
    if want is None:
        raise ToolError(f"{release.tool}: {download.shown(root)}/{sums_name} lists no checksum for {asset}",
                        tool=release.tool)
    dest = target(release, env)
    with tempfile.TemporaryDirectory(prefix="pipeline-install-") as tmp:
        got_file = Path(tmp) / asset
        try:
            got = download.fetch(f"{root}/{asset}", got_file)
        except download.DownloadError as exc:
            raise ToolError(f"{release.tool}: {exc}", tool=release.tool) from None
        if got != want:
            raise ToolError(f"{release.tool}: {download.shown(root)}/{asset} has sha256 {got}, but {sums_name} says {want};"
                            " nothing was installed (a damaged mirror or download)", tool=release.tool)
        data = _binary(release, got_file)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(part, 0o755)
            os.replace(part, dest)       # whole or not at all, even with two jobs installing at once
        finally:
            if os.path.exists(part):
                os.unlink(part)
    except OSError as exc:
        raise ToolError(f"{release.tool}: cannot write {dest}: {exc.strerror}", tool=release.tool) from None
    return (f"installed {release.tool} {release.version} to {dest} (sha256 checked against {sums_name} from"
            f" {download.shown(root)})")


def _binary(release: Release, path: Path) -> bytes:
    if release.member is None:
        return path.read_bytes()
    try:
        with tarfile.open(path, "r:gz") as tf:
            for member in tf.getmembers():
                if member.isfile() and member.name.rsplit("/", 1)[-1] == release.member:
                    fh = tf.extractfile(member)
                    if fh is not None:
                        return fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ToolError(f"{release.tool}: {path.name} is not a readable .tar.gz ({exc})", tool=release.tool) from None
    raise ToolError(f"{release.tool}: {path.name} holds no {release.member}", tool=release.tool)


def install(missing: Sequence[str], *, base: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """Install what can be installed without root from ``missing``; a sentence for each tool, the ones
    that need root included (what to do instead). Raises :class:`ToolError` on the first failed download."""
    env = os.environ if env is None else env
    base = base or env.get(BASE_ENV) or None
    done: list[str] = []
    for tool in missing:
        release = RELEASES.get(tool)
        if release is not None:
            done.append(install_one(release, base=base, env=env))
        elif tool in NEEDS_ROOT:
            done.append(f"not installed (needs root): {tool}: {NEEDS_ROOT[tool]}")
    if any(not RELEASES[t].plugin for t in missing if t in RELEASES):
        path = env.get("PATH", "").split(os.pathsep)
        if str(proc.user_bin()) not in path:
            done.append(f"{proc.user_bin()} is not on PATH: pipeline finds its tools there anyway; add it to PATH"
                        " to run them yourself")
    return done


__all__ = ["BASE_ENV", "RELEASES", "Release", "go_arch", "install", "install_one", "parse_checksums",
           "plugin_dir", "target"]
