"""A runner-like host for integration tests: a user who is not root, and a machine without our tools.

* :func:`runner_user`: a user (created once per machine) in a group that may use the docker socket,
  with a fresh HOME and work directory of its own per test session, and the ``pipeline`` package and
  its dependencies where that user can read them.
* :func:`tool_mirror`: an HTTP server on loopback holding, under the upstream release file names and
  with their checksum files, the binaries the root install put on disk (trivy, cosign, the buildx
  plugin, the registry): an internal mirror for ``pipeline doctor --install --download-base``.
* :meth:`Runner.run`: a command as that user in a private mount namespace where the root install's
  trivy, cosign, registry and buildx plugin are hidden (each file under a bind mount of /dev/null, the
  plugin directories under an empty tmpfs), as on a hosted runner where they are not preinstalled. The
  engine keeps running; only this process tree sees the machine that way.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import io
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipeline.setup import localregistry, userinstall
from pipeline.tools import buildx, proc

USER = "pl-runner"
GROUP = "pl-docker"
SOCKET = Path("/var/run/docker.sock")
ROOT = Path(__file__).resolve().parents[2]
HIDDEN_PROGRAMS = ("trivy", "cosign", "docker-registry")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: the machine's network settings a runner's user has too (not credentials)
NETWORK = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PIP_CERT",
           "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT", "GIT_SSL_CAINFO")

_HIDE = r"""
set -e
for f in $PL_HIDE_FILES; do [ -e "$f" ] && mount --bind /dev/null "$f"; done
for d in $PL_HIDE_DIRS; do [ -d "$d" ] && mount -t tmpfs -o mode=0755 none "$d"; done
unset PL_HIDE_FILES PL_HIDE_DIRS
exec setpriv --reuid "$PL_UID" --regid "$PL_GID" --init-groups "$@"
"""


@dataclass(frozen=True)
class Runner:
    uid: int
    gid: int
    work: Path            # owned by the user
    home: Path
    pythonpath: str       # where the user imports pipeline and its dependencies from

    def own(self, *paths: Path) -> None:
        """Give ``paths`` (and everything below them) to the user."""
        for top in paths:
            for p in [top, *top.rglob("*")]:
                os.lchown(p, self.uid, self.gid)

    def fresh(self, name: str) -> Runner:
        """The same user with a new HOME and work directory (``work/name``): nothing installed there yet."""
        import dataclasses

        work = self.work / name
        (work / "home").mkdir(parents=True, exist_ok=False)
        self.own(work)
        return dataclasses.replace(self, work=work, home=work / "home")

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A login environment of the user, plus this machine's network settings (proxies, CA bundles,
        package indexes), which a runner has too."""
        network = {k: v for k, v in os.environ.items() if k in NETWORK or k.lower().endswith("_proxy")}
        return {**network, "HOME": str(self.home), "USER": USER, "LOGNAME": USER, "PATH": BASE_PATH,
                "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", **(extra or {})}

    def run(self, argv: Sequence[str], env: Mapping[str, str], *, cwd: Path | None = None,
            timeout: float = 1500) -> subprocess.CompletedProcess:
        """``argv`` as the user, with exactly ``env`` (see :meth:`env`), the root install's tools hidden."""
        files = [os.path.join(d, name) for name in HIDDEN_PROGRAMS for d in BASE_PATH.split(os.pathsep)
                 + os.environ.get("PATH", "").split(os.pathsep) if os.path.exists(os.path.join(d, name))]
        dirs = [d for d in buildx.SYSTEM_PLUGIN_DIRS if os.path.isdir(d)]
        full = {**env, "PL_UID": str(self.uid), "PL_GID": str(self.gid),
                "PL_HIDE_FILES": " ".join(dict.fromkeys(files)), "PL_HIDE_DIRS": " ".join(dirs)}
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", _HIDE, "hide", *argv],
                              env=full, cwd=cwd or self.work, capture_output=True, text=True, timeout=timeout)

    def pipeline(self, args: Sequence[str], env: Mapping[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
        """``python -m pipeline ARGS`` as the user (this interpreter, the package from :attr:`pythonpath`)."""
        return self.run([os.path.realpath(sys.executable), "-m", "pipeline", *args],
                        self.env({"PYTHONPATH": self.pythonpath, **(env or {})}), **kw)


def _readable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in path.parents) and bool(path.stat().st_mode & 0o004)


def missing_host_tools() -> list[str]:
    return [t for t in ("unshare", "setpriv", "useradd", "usermod", "groupadd") if proc.which(t) is None]


@contextlib.contextmanager
def runner_user() -> Iterator[Runner]:
    """The runner user for one test session (root only). It gets the docker socket through the socket's
    own group; a socket owned by root's group is lent a group of its own for the session (and given
    back, whatever happens)."""
    socket_stat = SOCKET.stat()
    work: Path | None = None
    try:
        if socket_stat.st_gid != 0:
            group = grp.getgrgid(socket_stat.st_gid).gr_name
        else:
            group = GROUP
            if subprocess.run(["getent", "group", GROUP], capture_output=True).returncode != 0:
                subprocess.run(["groupadd", GROUP], check=True)
        if subprocess.run(["id", USER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
        subprocess.run(["usermod", "-aG", group, USER], check=True)
        if socket_stat.st_gid == 0:
            os.chown(SOCKET, -1, grp.getgrnam(GROUP).gr_gid)
            os.chmod(SOCKET, socket_stat.st_mode | 0o060)
        user = pwd.getpwnam(USER)
        work = Path(tempfile.mkdtemp(prefix="pl-runner-", dir="/tmp"))
        os.chmod(work, 0o755)
        (work / "home").mkdir()
        site = Path(httpx.__file__).resolve().parents[1]
        if _readable_by_others(ROOT / "pipeline" / "__init__.py") and \
                _readable_by_others(site / "httpx" / "__init__.py"):
            pythonpath = os.pathsep.join([str(ROOT), str(site)])
        else:   # the checkout is in a private directory (e.g. under /root): the user gets a copy
            shutil.copytree(ROOT / "pipeline", work / "src" / "pipeline",
                            ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copytree(site, work / "site", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
            pythonpath = os.pathsep.join([str(work / "src"), str(work / "site")])
        runner = Runner(user.pw_uid, user.pw_gid, work, work / "home", pythonpath)
        runner.own(work)
        yield runner
    finally:
        if socket_stat.st_gid == 0 and SOCKET.exists():
            os.chown(SOCKET, -1, 0)
            os.chmod(SOCKET, socket_stat.st_mode)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _sources() -> dict[str, Path]:
    """The binaries the root install put on disk, by tool."""
    out = {}
    for tool in ("trivy", "cosign", "docker-registry"):
        found = proc.which(tool)
        if not found:
            raise RuntimeError(f"{tool} is not installed (the mirror serves the root install's binaries)")
        out[tool] = Path(os.path.realpath(found))
    plugin = buildx.plugin_path()
    if not plugin:
        raise RuntimeError("no buildx plugin installed")
    out["buildx"] = Path(os.path.realpath(plugin))
    return out


def _targz(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, body, mode in ((member, data, 0o755), ("README.md", b"beside the binary, as upstream\n", 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), mode
            tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@contextlib.contextmanager
def tool_mirror() -> Iterator[str]:
    """The mirror's base URL while it serves."""
    folder = Path(tempfile.mkdtemp(prefix="pl-mirror-"))
    arch = userinstall.go_arch()
    sums: dict[str, list[str]] = {}
    for tool, source in _sources().items():
        release = userinstall.RELEASES[tool]
        asset = release.asset_name(arch)
        body = _targz(release.member, source.read_bytes()) if release.member else source.read_bytes()
        (folder / asset).write_bytes(body)
        sums.setdefault(release.checksums_name(arch), []).append(f"{hashlib.sha256(body).hexdigest()}  {asset}")
    for name, lines in sums.items():
        if name.endswith(".sha256"):
            (folder / name).write_text(lines[0] + "\n")
        else:   # a real checksum file lists every asset of the release
            (folder / name).write_text("\n".join(["0" * 64 + "  some-other-asset.tar.gz", *lines]) + "\n")
    port = localregistry.free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                               "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                httpx.get(url + "/", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the mirror's HTTP server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        server.kill()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
