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

import hashlib
import json
import os

import pytest

from pipeline.tools.registry import Registry
from tests.support import project, trivydb
from tests.support.project import RELEASE_TAGS, github_env, http_tags

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


def test_a_user_installs_the_toolchain_without_root_and_releases(runner, tool_mirror, registries, offline_base):
    runner = runner.fresh("nonroot")
    # the user's view: none of the tools (the root install's are hidden), no root
    before = runner.pipeline(["doctor", "--format", "json"])
    assert before.returncode == 0, before.stderr[-3000:]
    seen = {t["name"]: t["found"] for t in json.loads(before.stdout)["tools"]}
    assert not any(seen[t] for t in ("trivy", "cosign", "buildx", "docker-registry")), seen
    assert seen["docker-engine"], "the user cannot reach the engine through the socket's group"

    installed = runner.pipeline(["doctor", "--install", "--download-base", tool_mirror])
    assert installed.returncode == 0, installed.stderr[-3000:]
    did = [ln for ln in installed.stdout.splitlines() if ln.startswith("did: ")]
    for tool in ("trivy", "cosign", "buildx", "docker-registry"):
        assert any(f"installed {tool} " in ln and "sha256 checked" in ln for ln in did), (tool, did)
    assert any("is not on PATH" in ln for ln in did), did
    home = runner.home
    for path in (home / ".local/bin/trivy", home / ".local/bin/cosign", home / ".local/bin/docker-registry",
                 home / ".docker/cli-plugins/docker-buildx"):
        st = path.stat()
        assert st.st_uid == runner.uid and st.st_mode & 0o111, path
    status = {ln.split()[1]: ln.split()[0] for ln in installed.stdout.splitlines()
              if ln[:4] in ("ok  ", "MISS")}
    assert all(status[t] == "ok" for t in ("trivy", "cosign", "buildx", "docker-registry")), status

    again = runner.pipeline(["doctor", "--install", "--download-base", tool_mirror])
    assert again.returncode == 0 and not any(ln.startswith("did: installed ") for ln in again.stdout.splitlines()), \
        again.stdout

    # the release, as that user, with what it installed: scanned, signed, two platforms
    work = runner.work
    with Registry(registries["ecr"].host, insecure=True) as client:
        trivydb.push(client, "mirror/trivy-db", "2", trivydb.pack(trivydb.minimal_db()))
    cosign_password = "runner-" + hashlib.sha256(os.urandom(8)).hexdigest()[:16]
    env = {k: v for k, v in github_env(COSIGN_PASSWORD=cosign_password).items()
           if k.startswith(("GITHUB_", "PIPELINE_TEST_", "SOURCE_DATE_EPOCH", "COSIGN_PASSWORD"))}
    keys = runner.pipeline(["keygen", "--output", str(work / "keys" / "release")], env)
    assert keys.returncode == 0, keys.stderr[-2000:]
    cfg = project.write_project(work, registries, offline_base, name="runner/app", dockerfile=DOCKERFILE,
                                mode="auto",
                                scan=f'db_repository = ["{registries["ecr"].host}/mirror/trivy-db:2"]\n'
                                     f'cache_dir = "{work / "trivy-cache"}"',
                                sign=f'key = "{work / "keys" / "release.key"}"\ntlog_upload = false')
    runner.own(work)
    run = runner.pipeline(["release", "--config", str(cfg), "--format", "json"], env)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout)
    stages = {s["stage"]: s["status"] for s in result["stages"]}
    assert stages.get("scan") == "ok" and stages.get("sign") == "ok", stages
    for name in ("ghcr", "hub"):
        assert set(RELEASE_TAGS) <= set(http_tags(registries[name], "runner/app")), name
