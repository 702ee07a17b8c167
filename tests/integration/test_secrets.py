"""Secrets reach only the tool that needs them (issue 12): every child of a release, recorded.

A release with every secret a user has — registry passwords (two htpasswd registries, from
``password_env``), the cosign key password (``COSIGN_PASSWORD``) and a build secret
(``[image.secrets]`` from ``NPM_TOKEN``) — runs under ``strace -f -e trace=execve -v``, which
records the program, argv and environment of *every* process the release starts, grandchildren
and short-lived ones included (the docker CLI's plugins, cosign, Trivy, git). Then:

* no registry password and no build secret in any child's argv or environment;
* the cosign password only in cosign's environment, and nowhere else;
* none of them in stdout, stderr (JSON logs), any file under ``dist/``, or the image;
* the build secret did reach the build: the image holds its SHA-256, made by a ``RUN --mount=type=secret``.
  BuildKit's cache key of such a step leaves the secret out (as docker's does), so the step carries a
  nonce: on a machine that ran this test before, a cached layer would hold the old token's digest.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import secrets as secrets_mod
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import project
from tests.support.project import github_env

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG TARGETARCH
RUN --mount=type=secret,id=npm echo {nonce} >/dev/null && sha256sum /run/secrets/npm | cut -c1-64 > /npm.sha
COPY app.txt /app.txt
"""
EXECVE = re.compile(r'^execve\("(?P<prog>[^"]*)", \[(?P<argv>.*?)\], \[(?P<env>.*)\]\) = (?P<rc>-?\d+)')


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "cosign", "trivy", "strace"):
        require_tool(tool)


def _strings(text: str) -> list[str]:
    """The strings of an strace array (``"a", "b\\n"``), unescaped enough to search."""
    return [bytes(s, "utf-8").decode("unicode_escape") for s in re.findall(r'"((?:[^"\\]|\\.)*)"', text)]


def executions(trace_dir: Path, top_pid: int) -> list[dict[str, Any]]:
    """Every successful execve of the release's children (the release's own start left out: it is the
    process the secrets were given to)."""
    out = []
    for path in sorted(trace_dir.glob("trace.*")):
        pid = int(path.suffix.lstrip("."))
        for line in path.read_text(errors="replace").splitlines():
            m = EXECVE.match(line)
            if m and m["rc"] == "0" and pid != top_pid:
                out.append({"pid": pid, "prog": m["prog"], "argv": _strings(m["argv"]), "env": _strings(m["env"])})
    return out


def _layer_texts(layout: Path) -> list[bytes]:
    found = []
    for blob in (layout / "blobs" / "sha256").iterdir():
        data = blob.read_bytes()
        try:
            data = gzip.decompress(data)
        except OSError:
            pass
        found.append(data)
    return found


def test_every_secret_reaches_only_the_tool_that_needs_it(tmp_path, registries, offline_base):
    cosign_password = secrets_mod.token_urlsafe(18)
    npm_token = "npm_" + secrets_mod.token_hex(16)
    env = github_env(COSIGN_PASSWORD=cosign_password, NPM_TOKEN=npm_token, PIPELINE_LOG_FORMAT="json")
    keys = subprocess.run([sys.executable, "-m", "pipeline", "keygen", "--output", str(tmp_path / "keys" / "release")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert keys.returncode == 0, keys.stderr[-2000:]
    dockerfile = DOCKERFILE.replace("{nonce}", secrets_mod.token_hex(8))
    cfg = project.write_project(tmp_path, registries, offline_base, name="secrets/app", dockerfile=dockerfile,
                                sign=f'key = "{tmp_path / "keys" / "release.key"}"\ntlog_upload = false\n',
                                extra='[image.secrets.npm]\nenv = "NPM_TOKEN"\n')
    registry_passwords = [r.password for r in registries.values() if r.password]
    assert len(registry_passwords) == 2

    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    run = subprocess.Popen(["strace", "-f", "-ff", "--seccomp-bpf", "-qq", "-e", "trace=execve", "-v", "-s", "262144",
                            "-o", str(trace_dir / "trace"), sys.executable, "-m", "pipeline", "release",
                            "--config", str(cfg), "--format", "json"],
                           env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = run.communicate(timeout=1800)
    assert run.returncode == 0, err[-4000:]
    # the release itself: the file whose first execve is it (not the lowest pid: pids wrap on a busy machine)
    top = next(int(p.suffix.lstrip(".")) for p in trace_dir.glob("trace.*")
               if f'"release", "--config", "{cfg}"' in p.read_text(errors="replace").split("\n", 1)[0])
    children = executions(trace_dir, top)

    names = {os.path.basename(c["prog"]) for c in children}
    assert {"cosign", "trivy", "git"} <= names and any(n.startswith("docker") for n in names), names
    with_cosign_password = [c for c in children if any(cosign_password in e for e in c["env"])]
    assert with_cosign_password, "cosign never got its password: the capture proves nothing"
    leaks = []
    for c in children:
        texts = c["argv"] + c["env"]
        for secret, what in [(p, "a registry password") for p in registry_passwords] + [(npm_token, "the build secret")]:
            if any(secret in t for t in texts):
                leaks.append(f"{what} reached {c['prog']} {' '.join(c['argv'][:3])}")
        if any(cosign_password in t for t in c["argv"]):
            leaks.append(f"the cosign password is on the command line of {c['prog']}")
        if os.path.basename(c["prog"]) != "cosign" and any(cosign_password in t for t in c["env"]):
            leaks.append(f"the cosign password reached {c['prog']} {' '.join(c['argv'][:3])}")
    assert not leaks, "\n".join(leaks)
    print(f"\nsecret hygiene: {len(children)} child processes recorded ({', '.join(sorted(names))}); "
          f"cosign password in {len(with_cosign_password)} cosign calls only; 0 leaks")

    every_secret = [*registry_passwords, cosign_password, npm_token]
    outputs = {"stdout": out, "stderr": err}
    for path in (tmp_path / "dist").rglob("*"):
        if path.is_file():
            outputs[str(path)] = path.read_text(errors="replace")
    hits = [f"{where}" for where, text in outputs.items() for s in every_secret if s in text]
    assert not hits, hits

    layouts = [p for p in (tmp_path / ".pipeline" / "images").iterdir() if not p.name.startswith(".")]
    layers = [t for layout in layouts for t in _layer_texts(layout)]
    assert not any(npm_token.encode() in t for t in layers), "the build secret is in the image"
    digest_of_secret = hashlib.sha256(npm_token.encode()).hexdigest().encode()
    assert any(digest_of_secret in t for t in layers), "the build never saw the secret"
