"""A multi-arch release on a docker engine without the containerd image store (issue 13).

Many runners and laptops run dockerd with the classic image store. There the docker driver refuses
a multi-platform build and every file exporter; what it can do is push one platform to a registry.
With ``build.mode = "auto"`` (the default) a release there builds each platform in its own buildx
call, pushed to the loopback registry of builds, fetched into the local layout by our client and
merged by digest: the same index shape as on the containerd store. These tests run against a second
dockerd started with its own socket, data-root and an empty daemon.json.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import project
from tests.support.project import RELEASE_TAGS, github_env, http_manifest, http_tags

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN echo "built for $(uname -m)" > /built.txt
COPY app.txt /app.txt
"""


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "qemu-arm64"):
        require_tool(tool)


@pytest.fixture(autouse=True)
def stop_loopback(tmp_path):
    """The loopback registry of builds a release starts (kept running for the next build, as on a user's
    machine) is stopped with the test: it lives in the test's directory."""
    yield
    from pipeline.setup import localregistry

    localregistry.stop(localregistry.BUILD_LOOPBACK, state_root=tmp_path / ".pipeline" / "registry")


def _events(stderr: str) -> list[dict]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def _release(tmp: Path, cfg: Path, classic, **extra: str) -> subprocess.CompletedProcess:
    env = github_env(PIPELINE_LOG_FORMAT="json", **classic.env, **extra)
    return project.run_process(["release", "--config", str(cfg), "--format", "json"], env, tmp, timeout=1500)


def test_auto_mode_releases_both_platforms_through_the_loopback_registry(tmp_path, registries, offline_base,
                                                                         classic_engine):
    cfg = project.write_project(tmp_path, registries, offline_base, name="classic/app", dockerfile=DOCKERFILE,
                                mode="auto")
    run = _release(tmp_path, cfg, classic_engine)
    assert run.returncode == 0, run.stderr[-4000:]
    events = _events(run.stderr)
    chosen = [e for e in events if e.get("event") == "build.per_platform"]
    assert chosen and "containerd image store" in chosen[0]["reason"], chosen
    started = [e for e in events if e.get("event") == "build.started"]
    assert sorted(e["platforms"] for e in started) == ["linux/amd64", "linux/arm64"], started
    assert all(e["to"] == "loopback registry" for e in started), started

    digest = json.loads(run.stdout)["digest"]
    for name in ("ghcr", "hub"):
        reg = registries[name]
        assert set(RELEASE_TAGS) <= set(http_tags(reg, "classic/app")), name
        body, media = http_manifest(reg, "classic/app", "1.2.3")
        assert project.digest_of(body) == digest
        index = json.loads(body)
        platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]
                           if m.get("platform", {}).get("os") != "unknown")
        assert platforms == ["linux/amd64", "linux/arm64"], (name, index)
    # each platform was built for its own architecture (the arm64 one under QEMU)
    layouts = tmp_path / ".pipeline" / "images"
    built = set()
    for blob in layouts.rglob("blobs/sha256/*"):
        data = blob.read_bytes()
        for arch in (b"x86_64", b"aarch64"):
            if b"built for " + arch in data or _gz_has(data, b"built for " + arch):
                built.add(arch)
    assert built == {b"x86_64", b"aarch64"}, built
    print(f"\nclassic image store: dockerd {classic_engine.info.server_version} ({classic_engine.info.driver}),"
          f" {len(started)} buildx calls through the loopback registry, one index of 2 platforms")


def _gz_has(data: bytes, needle: bytes) -> bool:
    import gzip

    try:
        return needle in gzip.decompress(data)
    except OSError:
        return False


def test_single_mode_on_the_classic_store_says_what_to_set(tmp_path, registries, offline_base, classic_engine):
    cfg = project.write_project(tmp_path, registries, offline_base, name="classic/single", dockerfile=DOCKERFILE,
                                mode="single")
    run = _release(tmp_path, cfg, classic_engine)
    assert run.returncode == 3, run.stderr[-3000:]
    line = [ln for ln in run.stderr.splitlines() if ln.startswith("pipeline: error:")]
    assert len(line) == 1 and "build.mode" in line[0] and "containerd image store" in line[0], line
    assert "Traceback" not in run.stderr
    assert http_tags(registries["ghcr"], "classic/single") == []


def test_offline_base_builds_on_the_classic_store(tmp_path, registries, classic_engine, require_tool):
    """The embedded default's path on an offline machine: the busybox base itself is built per platform
    through the loopback registry, then the release builds FROM it."""
    for arch in ("amd64", "arm64"):
        require_tool(f"busybox-{arch}")
    cfg = project.write_project(tmp_path, registries, "127.0.0.1:9/library/base:1", name="classic/offline",
                                dockerfile=DOCKERFILE, mode="auto")
    text = cfg.read_text().replace('[image.build_args]', 'offline_base = true\n[image.build_args]', 1)
    cfg.write_text(text)
    run = _release(tmp_path, cfg, classic_engine)
    assert run.returncode == 0, run.stderr[-4000:]
    events = _events(run.stderr)
    assert any(e.get("event") == "base.replaced" for e in events)
    assert any(e.get("event") == "offline_base.built" for e in events), "the base was not built here"
    body, _ = http_manifest(registries["ghcr"], "classic/offline", "1.2.3")
    platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}"
                       for m in json.loads(body)["manifests"] if m.get("platform", {}).get("os") != "unknown")
    assert platforms == ["linux/amd64", "linux/arm64"]
