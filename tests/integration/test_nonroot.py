"""``pipeline doctor --install`` as a user who is not root, then a release as that user (issue 13).

A runner-like user: its own HOME, membership of the docker socket's group, and a machine on which
trivy, cosign, the registry and the buildx plugin are *not* installed for it — they are hidden in a
private mount namespace (each file under a bind mount of /dev/null, the plugin directories under an
empty tmpfs), so the user sees a machine without them while the engine keeps running. The download
base is an HTTP server of this test's that serves, under the upstream release file names and with
their checksum files, the binaries the root install put on disk: an internal mirror. The user's
PATH lacks ``~/.local/bin``, as a runner's often does. Then the same user releases a scanned,
signed two-platform image to the session's registries.
"""

from __future__ import annotations

import grp
import hashlib
import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.setup import localregistry, userinstall
from pipeline.tools import buildx, proc
from pipeline.tools.registry import Registry
from tests.support import project, trivydb
from tests.support.project import RELEASE_TAGS, github_env, http_tags

USER = "pl-runner"
GROUP = "pl-docker"
SOCKET = Path("/var/run/docker.sock")
ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN echo "built for $(uname -m) by a user" > /built.txt
COPY app.txt /app.txt
"""


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "trivy", "cosign"):
        require_tool(tool)
    for tool in ("unshare", "setpriv", "useradd"):
        if proc.which(tool) is None:
            pytest.fail(f"{tool} missing (util-linux / passwd)", pytrace=False)
    if os.geteuid() != 0:
        pytest.skip("making a runner user needs root (CI runs as root)")


def _sources() -> dict[str, Path]:
    """The binaries the root install put on disk, by tool."""
    out = {}
    for tool, name in (("trivy", "trivy"), ("cosign", "cosign"), ("docker-registry", "docker-registry")):
        found = proc.which(name)
        assert found, name
        out[tool] = Path(os.path.realpath(found))
    plugin = buildx.plugin_path()
    assert plugin, "no buildx plugin"
    out["buildx"] = Path(os.path.realpath(plugin))
    return out


def _targz(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo(member)
        info.size, info.mode = len(data), 0o755
        tf.addfile(info, io.BytesIO(data))
        readme = b"a file beside the binary, as upstream archives have\n"
        info = tarfile.TarInfo("README.md")
        info.size = len(readme)
        tf.addfile(info, io.BytesIO(readme))
    return buf.getvalue()


@pytest.fixture(scope="module")
def mirror() -> Iterator[str]:
    """A flat directory of release files and checksum files, served over HTTP on loopback."""
    folder = Path(tempfile.mkdtemp(prefix="pl-mirror-"))
    arch = userinstall.go_arch()
    sums: dict[str, list[str]] = {}
    for tool, source in _sources().items():
        release = userinstall.RELEASES[tool]
        data = source.read_bytes()
        asset = release.asset_name(arch)
        body = _targz(release.member, data) if release.member else data
        (folder / asset).write_bytes(body)
        digest = hashlib.sha256(body).hexdigest()
        sums.setdefault(release.checksums_name(arch), []).append(f"{digest}  {asset}")
    for name, lines in sums.items():
        decoy = "0" * 64 + "  some-other-file.tar.gz"       # a real checksum file lists every asset
        (folder / name).write_text("\n".join([decoy, *lines]) + "\n" if not name.endswith(".sha256")
                                   else lines[0] + "\n")
    port = localregistry.free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                               "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/", timeout=2)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the mirror's HTTP server did not start", pytrace=False)
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.kill()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _readable_by_others(path: Path) -> bool:
    for p in (path, *path.parents):
        mode = p.stat().st_mode
        if not mode & 0o001:
            return False
    return bool(path.stat().st_mode & 0o004)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Iterator[dict]:
    """The user (created once per machine), in the docker socket's group; a work dir it owns, and the
    package where it can read it."""
    if subprocess.run(["getent", "group", GROUP], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", GROUP], check=True)
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--groups", GROUP, USER], check=True)
    else:
        subprocess.run(["usermod", "-aG", GROUP, USER], check=True)
    user = pwd.getpwnam(USER)
    gid = grp.getgrnam(GROUP).gr_gid
    socket_stat = SOCKET.stat()
    os.chown(SOCKET, -1, gid)
    os.chmod(SOCKET, socket_stat.st_mode | 0o060)
    work = Path(tempfile.mkdtemp(prefix="pl-runner-", dir="/tmp"))
    os.chmod(work, 0o755)
    (work / "home").mkdir()
    python_path = [str(ROOT)]
    site = Path(httpx.__file__).resolve().parents[1]
    if not (_readable_by_others(ROOT / "pipeline" / "__init__.py") and _readable_by_others(site / "httpx")):
        shutil.copytree(ROOT / "pipeline", work / "src" / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(site, work / "site", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        python_path = [str(work / "src"), str(work / "site")]
    else:
        python_path.append(str(site))
    for p in [work, *work.rglob("*")]:
        os.lchown(p, user.pw_uid, user.pw_gid)
    try:
        yield {"uid": user.pw_uid, "gid": user.pw_gid, "work": work, "home": work / "home",
               "pythonpath": os.pathsep.join(python_path)}
    finally:
        os.chown(SOCKET, -1, socket_stat.st_gid)
        os.chmod(SOCKET, socket_stat.st_mode)
        shutil.rmtree(work, ignore_errors=True)


HIDE = r"""
set -e
for f in $PL_HIDE_FILES; do [ -e "$f" ] && mount --bind /dev/null "$f"; done
for d in $PL_HIDE_DIRS; do [ -d "$d" ] && mount -t tmpfs -o mode=0755 none "$d"; done
exec setpriv --reuid "$PL_UID" --regid "$PL_GID" --init-groups "$@"
"""


def as_runner(runner: dict, argv: list[str], env: dict[str, str], timeout: int = 1500) -> subprocess.CompletedProcess:
    """``argv`` as the runner user, in a mount namespace where the root install's tools are hidden."""
    files = []
    for name in ("trivy", "cosign", "docker-registry"):
        for d in os.environ["PATH"].split(os.pathsep):
            if os.path.exists(os.path.join(d, name)):
                files.append(os.path.join(d, name))
    dirs = [d for d in buildx.SYSTEM_PLUGIN_DIRS if os.path.isdir(d)]
    full = {"HOME": str(runner["home"]), "USER": USER, "LOGNAME": USER,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": runner["pythonpath"], "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8",
            "PL_UID": str(runner["uid"]), "PL_GID": str(runner["gid"]),
            "PL_HIDE_FILES": " ".join(files), "PL_HIDE_DIRS": " ".join(dirs), **env}
    python = os.path.realpath(sys.executable)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE, "hide",
                           python, "-m", "pipeline", *argv], env=full, cwd=runner["work"], capture_output=True,
                          text=True, timeout=timeout)


def test_a_user_installs_the_toolchain_without_root_and_releases(runner, mirror, registries, offline_base):
    # the user's view: none of the tools (the root install's are hidden), no root
    before = as_runner(runner, ["doctor", "--format", "json"], {})
    assert before.returncode == 0, before.stderr[-3000:]
    seen = {t["name"]: t["found"] for t in json.loads(before.stdout)["tools"]}
    assert not any(seen[t] for t in ("trivy", "cosign", "buildx", "docker-registry")), seen
    assert seen["docker-engine"], "the user cannot reach the engine through the socket's group"

    installed = as_runner(runner, ["doctor", "--install", "--download-base", mirror], {})
    assert installed.returncode == 0, installed.stderr[-3000:]
    did = [ln for ln in installed.stdout.splitlines() if ln.startswith("did: ")]
    for tool in ("trivy", "cosign", "buildx", "docker-registry"):
        assert any(f"installed {tool} " in ln and "sha256 checked" in ln for ln in did), (tool, did)
    assert any("is not on PATH" in ln for ln in did), did
    home = runner["home"]
    for path in (home / ".local/bin/trivy", home / ".local/bin/cosign", home / ".local/bin/docker-registry",
                 home / ".docker/cli-plugins/docker-buildx"):
        st = path.stat()
        assert st.st_uid == runner["uid"] and st.st_mode & 0o111, path
    status = {ln.split()[1]: ln.split()[0] for ln in installed.stdout.splitlines()
              if ln[:4] in ("ok  ", "MISS")}
    assert all(status[t] == "ok" for t in ("trivy", "cosign", "buildx", "docker-registry")), status

    again = as_runner(runner, ["doctor", "--install", "--download-base", mirror], {})
    assert again.returncode == 0 and not any("installed " in ln for ln in again.stdout.splitlines()), again.stdout

    # the release, as that user, with what it installed: scanned, signed, two platforms
    work = runner["work"]
    with Registry(registries["ecr"].host, insecure=True) as client:
        trivydb.push(client, "mirror/trivy-db", "2", trivydb.pack(trivydb.minimal_db()))
    cosign_password = "runner-" + hashlib.sha256(os.urandom(8)).hexdigest()[:16]
    env = {k: v for k, v in github_env(COSIGN_PASSWORD=cosign_password).items()
           if k.startswith(("GITHUB_", "PIPELINE_TEST_", "SOURCE_DATE_EPOCH", "COSIGN_PASSWORD"))}
    keys = as_runner(runner, ["keygen", "--output", str(work / "keys" / "release")], env)
    assert keys.returncode == 0, keys.stderr[-2000:]
    cfg = project.write_project(work, registries, offline_base, name="runner/app", dockerfile=DOCKERFILE,
                                mode="auto",
                                scan=f'db_repository = ["{registries["ecr"].host}/mirror/trivy-db:2"]\n'
                                     f'cache_dir = "{work / "trivy-cache"}"',
                                sign=f'key = "{work / "keys" / "release.key"}"\ntlog_upload = false')
    for p in [work, *work.rglob("*")]:
        os.lchown(p, runner["uid"], runner["gid"])
    run = as_runner(runner, ["release", "--config", str(cfg), "--format", "json"], env)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout)
    stages = {s["stage"]: s["status"] for s in result["stages"]}
    assert stages.get("scan") == "ok" and stages.get("sign") == "ok", stages
    for name in ("ghcr", "hub"):
        assert set(RELEASE_TAGS) <= set(http_tags(registries[name], "runner/app")), name
