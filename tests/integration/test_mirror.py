"""Base images from our own mirror, pinned in a lock file; a pull-through cache (issue 14).

The upstream behaves like Docker Hub: the real registry binary behind the fault proxy, which counts
every request and, with a pull quota on, sends Hub's ``ratelimit-*`` headers and answers 429
``TOOMANYREQUESTS`` past N manifest GETs (HEADs are free, as on Hub). Every release runs
``python -m pipeline`` as a separate process; what landed is read back with raw HTTP.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.setup import localregistry
from tests.support import project
from tests.support.faultproxy import FaultProxy
from tests.support.project import github_env, http_manifest, http_tags

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS build
RUN echo "built on $(uname -m)" > /built.txt
FROM ${BASE_IMAGE}
COPY --from=build /built.txt /built.txt
COPY app.txt /app.txt
"""
BASE_REPO = "library/busybox"


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "qemu-arm64"):
        require_tool(tool)


@dataclass
class Upstream:
    registry: localregistry.RegistryInstance
    proxy: FaultProxy
    digest: str                     # the two-platform base's index digest

    @property
    def host(self) -> str:
        return self.proxy.host

    @property
    def base(self) -> str:
        return f"{self.host}/{BASE_REPO}:1.36"

    def requests(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.proxy.records()]

    def manifest_gets(self) -> int:
        return sum(1 for m, p in self.requests() if m == "GET" and "/manifests/" in p)


def _start_upstream(root: Path, name: str, offline_base: str, htpasswd: Path | None = None) -> Upstream:
    from pipeline.tools import transfer
    from pipeline.tools.oci import Layout
    from pipeline.tools.registry import Registry, credentials_from_docker_config

    inst = localregistry.start(name, port=0, state_root=root, htpasswd=htpasswd, delete=True)
    proxy = FaultProxy(inst.url, seed=14, rate=0.0).start()
    # the session's two-platform base, put there as library/busybox:1.36 (by our client, straight to the registry)
    src_host, _, rest = offline_base.partition("/")
    src_repo, _, digest = rest.partition("@")
    layout = Layout.create(root / f"{name}-base")
    import os
    with Registry(src_host, insecure=True) as src:
        transfer.pull(src, src_repo, digest, layout)
    creds = credentials_from_docker_config(inst.host, os.environ)
    with Registry(inst.host, insecure=True, credentials=creds) as dst:
        transfer.push(layout, digest, dst, BASE_REPO)
        body, media = layout.manifest(digest)
        dst.manifest_put(BASE_REPO, "1.36", body, media)
    proxy.reset_stats()
    return Upstream(inst, proxy, digest)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, offline_base) -> Iterator[Upstream]:
    root = tmp_path_factory.mktemp("hub-upstream")
    up = _start_upstream(root, "fakehub", offline_base)
    try:
        yield up
    finally:
        up.proxy.stop()
        localregistry.stop("fakehub", state_root=root)


def _project(tmp: Path, registries: dict[str, Any], base: str, *, mark: str, mirror: str = "") -> Path:
    cfg = project.write_project(tmp, registries, base, name="mirrored/app", dockerfile=DOCKERFILE,
                                release=("ecr",), extra=f"[mirror]\nenabled = true\n{mirror}\n")
    (tmp / "ctx" / "app.txt").write_text(f"{mark}\n")
    return cfg


def _release(tmp: Path, cfg: Path, **env: str) -> subprocess.CompletedProcess:
    return project.run_process(["release", "--config", str(cfg), "--format", "json"],
                               github_env(PIPELINE_LOG_FORMAT="json", **env), tmp, timeout=1500)


def _mirror(tmp: Path, cfg: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return project.run_process(["mirror", "--config", str(cfg), "--format", "json", *args],
                               github_env(PIPELINE_LOG_FORMAT="json", **env), tmp, timeout=600)


def _mirror_repo(up: Upstream) -> str:
    return f"mirror/{up.host.replace(':', '-')}/{BASE_REPO}"


def _released_index(registries, digest: str) -> dict:
    found = http_manifest(registries["ecr"], "mirrored/app", digest)
    assert found is not None
    return json.loads(found[0])


def _events(stderr: str, name: str) -> list[dict]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                out.append(event)
    return out


def test_mirror_pins_the_base_and_later_releases_ask_the_upstream_nothing(tmp_path, registries, upstream):
    ecr = registries["ecr"]
    up = upstream
    cfg = _project(tmp_path, registries, up.base, mark="one")

    # release 1: resolves the tag upstream, copies the whole index into the mirror, writes the lock
    run = _release(tmp_path, cfg)
    assert run.returncode == 0, run.stderr[-4000:]
    lock = json.loads((tmp_path / "base-images.lock").read_text())
    key = f"{up.host}/{BASE_REPO}:1.36"
    assert lock["images"][key]["digest"] == up.digest
    platforms = lock["images"][key]["platforms"]
    assert sorted(platforms) == ["linux/amd64", "linux/arm64"]
    assert up.manifest_gets() >= 3              # the index and both platform manifests
    mirrored = http_manifest(ecr, _mirror_repo(up), up.digest)
    assert mirrored is not None and mirrored[1] == up.digest           # digest preserved
    for p, d in platforms.items():
        child = http_manifest(ecr, _mirror_repo(up), d)
        assert child is not None, p
        with project.http(ecr) as client:       # every layer of both platforms is in the mirror
            for layer in json.loads(child[0])["layers"]:
                assert client.head(f"/v2/{_mirror_repo(up)}/blobs/{layer['digest']}").status_code == 200
    assert "1.36" in http_tags(ecr, _mirror_repo(up))
    report = json.loads((tmp_path / "dist" / "release.json").read_text())
    (base,) = [b for b in report["base_images"] if b["reference"] == key]
    assert base["digest"] == up.digest and base["upstream_asked"] and base["copied"]
    assert base["mirror"] == f"{ecr.host}/{_mirror_repo(up)}@{up.digest}"
    # the released image names its base (index: the base's index; each platform: that platform's manifest)
    index = _released_index(registries, report["digest"])
    assert index["annotations"]["org.opencontainers.image.base.digest"] == up.digest
    assert index["annotations"]["org.opencontainers.image.base.name"] == key
    for entry in index["manifests"]:
        p = entry.get("platform", {})
        if p.get("os") == "unknown":
            continue
        body = http_manifest(ecr, "mirrored/app", entry["digest"])[0]
        want = platforms[f"{p['os']}/{p['architecture']}"]
        assert json.loads(body)["annotations"]["org.opencontainers.image.base.digest"] == want

    # release 2, other build inputs: a new build, and not one request to the upstream (HEAD or GET)
    up.proxy.reset_stats()
    _project(tmp_path, registries, up.base, mark="two")
    run = _release(tmp_path, cfg)
    assert run.returncode == 0, run.stderr[-4000:]
    second = json.loads((tmp_path / "dist" / "release.json").read_text())
    assert second["digest"] != report["digest"] and not second["candidate"]["reused"]
    assert up.requests() == []
    (base,) = [b for b in second["base_images"] if b["reference"] == key]
    assert base["source"] == "lock" and not base["upstream_asked"] and not base["copied"]

    # the upstream down: the release still succeeds, FROM the locked digest
    up.proxy.dead = True
    try:
        _project(tmp_path, registries, up.base, mark="three")
        run = _release(tmp_path, cfg)
        assert run.returncode == 0, run.stderr[-4000:]
        assert up.requests() == []
    finally:
        up.proxy.dead = False

    # the tag moves upstream; a fresh clone with the committed lock still builds FROM the locked digest
    moved = _move_tag(up)
    clone = tmp_path / "clone"
    clone.mkdir()
    clone_cfg = _project(clone, registries, up.base, mark="clone")
    shutil.copy(tmp_path / "base-images.lock", clone / "base-images.lock")
    up.proxy.reset_stats()
    run = _release(clone, clone_cfg)
    assert run.returncode == 0, run.stderr[-4000:]
    fresh = json.loads((clone / "dist" / "release.json").read_text())
    assert _released_index(registries, fresh["digest"])["annotations"][
        "org.opencontainers.image.base.digest"] == up.digest
    assert up.requests() == []

    # --check sees the move (HEADs only: free on Hub) and changes nothing; --update moves the lock
    run = _mirror(clone, clone_cfg, "--check")
    assert run.returncode == 1, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["moved"] == [{"reference": key, "locked": up.digest, "upstream": moved}]
    asked = up.requests()
    assert asked and all(m == "HEAD" or p.split("?")[0] == "/v2/" for m, p in asked), asked   # no pull counted
    assert json.loads((clone / "base-images.lock").read_text())["images"][key]["digest"] == up.digest
    run = _mirror(clone, clone_cfg, "--update")
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((clone / "base-images.lock").read_text())["images"][key]["digest"] == moved
    assert http_manifest(ecr, _mirror_repo(up), moved) is not None
    run = _mirror(clone, clone_cfg, "--check")
    assert run.returncode == 0, run.stderr[-3000:]
    # the plan says what the mirror step would do, from the same lock
    plan = project.run_process(["plan", "--config", str(clone_cfg), "--format", "json"], github_env(), clone)
    line = next(s for s in json.loads(plan.stdout)["stages"] if s["stage"] == "mirror")
    assert line["action"] == "run" and moved[:19] in line["detail"]


def _move_tag(up: Upstream) -> str:
    """Point the upstream's tag at another index (the same platforms, one more annotation); its digest."""
    with httpx.Client(base_url=up.registry.url, headers={"Accept": project.ACCEPT}, timeout=30) as client:
        index = client.get(f"/v2/{BASE_REPO}/manifests/{up.digest}").json()
        index.setdefault("annotations", {})["org.example.rebuilt"] = "2"
        body = json.dumps(index).encode()
        r = client.put(f"/v2/{BASE_REPO}/manifests/1.36", content=body,
                       headers={"Content-Type": index.get("mediaType", "application/vnd.oci.image.index.v1+json")})
        r.raise_for_status()
        return r.headers["Docker-Content-Digest"]


def test_rate_limits_are_shown_and_a_spent_quota_names_the_fix(tmp_path, registries, upstream):
    up = upstream
    # little left: the release goes through and says so
    up.proxy.pull_quota(4)
    try:
        cfg = _project(tmp_path, registries, up.base, mark="quota", mirror='prefix = "mirror-quota"')
        run = _release(tmp_path, cfg)
        assert run.returncode == 0, run.stderr[-4000:]
        low = _events(run.stderr, "registry.rate_limit_low")
        assert low and low[0]["registry"] == up.host and low[0]["remaining"] <= 1, run.stderr[-3000:]
        # spent: a clear error naming the upstream, the limit and the fix; no retries for hours
        up.proxy.pull_quota(1)
        cfg = _project(tmp_path / "b", registries, up.base, mark="spent", mirror='prefix = "mirror-spent"')
        run = _release(tmp_path / "b", cfg)
        assert run.returncode == 3, run.stderr[-3000:]
        line = project.Run(run.returncode, run.stdout, run.stderr).error_line()
        assert up.host in line and "pull rate limit reached" in line and "Log in to" in line, line
        assert "0 of 1 pulls left" in line, line
        refused = [r for r in up.proxy.records() if r.fault == "rate-limit"]
        assert len(refused) == 1, refused      # a spent quota is not retried
    finally:
        up.proxy.pull_quota(None)


def test_a_private_upstream_needs_and_uses_credentials(tmp_path, registries, offline_base, docker_config):
    import base64
    import secrets

    htpasswd = tmp_path / "auth" / "htpasswd"
    user, password = "puller", secrets.token_urlsafe(18)
    localregistry.add_user(htpasswd, user, password)
    root = tmp_path / "private"
    # the base is pushed with credentials: a docker config that has them
    conf = tmp_path / "docker-config"
    conf.mkdir()
    data = json.loads((docker_config / "config.json").read_text())
    import os
    inst_probe = localregistry.start("private-up", port=0, state_root=root, htpasswd=htpasswd)
    try:
        data["auths"][inst_probe.host] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        (conf / "config.json").write_text(json.dumps(data))
        old = os.environ["DOCKER_CONFIG"]
        os.environ["DOCKER_CONFIG"] = str(conf)
        try:
            up = _start_upstream(root, "private-up", offline_base, htpasswd)
        finally:
            os.environ["DOCKER_CONFIG"] = old
        # clients reach it through the proxy: `docker login <proxy host>`, as a user would log in to the upstream
        data["auths"][up.host] = data["auths"][inst_probe.host]
        (conf / "config.json").write_text(json.dumps(data))
        try:
            cfg = _project(tmp_path / "p", registries, up.base, mark="private")
            # without credentials: one line naming the upstream and what to do
            run = _release(tmp_path / "p", cfg)
            assert run.returncode == 3, run.stderr[-3000:]
            line = project.Run(run.returncode, run.stdout, run.stderr).error_line()
            assert up.host in line and "authentication required" in line, line
            # with them (the docker config, as `docker login` writes it): mirrored, and the password nowhere
            run = _release(tmp_path / "p", cfg, DOCKER_CONFIG=str(conf))
            assert run.returncode == 0, run.stderr[-4000:]
            assert password not in run.stdout + run.stderr
            assert http_manifest(registries["ecr"], _mirror_repo(up), up.digest) is not None
            assert password not in (tmp_path / "p" / "base-images.lock").read_text()
        finally:
            up.proxy.stop()
    finally:
        localregistry.stop("private-up", state_root=root)


def _pulls(requests: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What Docker Hub counts or serves bytes for: GETs of manifests and blobs (not HEADs, not the /v2/ ping)."""
    return [(m, p) for m, p in requests if m == "GET" and ("/manifests/" in p or "/blobs/" in p)]


def test_pull_through_cache_serves_an_engine_configured_with_the_printed_snippet(tmp_path, upstream):
    import secrets

    from tests.support.engines import second_engine

    up = upstream
    token = secrets.token_urlsafe(20)
    env = {**github_env(), "PIPELINE_LOG_FORMAT": "json", "HUB_USER": "puller", "HUB_TOKEN": token}
    start = project.run_process(["registry", "start", "--name", "hubcache", "--port", "0", "--proxy",
                                 f"http://{up.host}", "--proxy-ttl", "24h", "--data-dir", str(tmp_path / "cache"),
                                 "--proxy-username-env", "HUB_USER", "--proxy-password-env", "HUB_TOKEN",
                                 "--proxy-as", "docker.io",    # our fake Hub stands for Docker Hub
                                 "--format", "json"], env, tmp_path)
    assert start.returncode == 0, start.stderr[-3000:]
    cache = json.loads(start.stdout)
    assert cache["proxy"] == f"http://{up.host}"
    try:
        # the upstream's token reaches the registry process through its environment only
        pid = cache["pid"]
        config_file = tmp_path / ".pipeline" / "registry" / "hubcache" / "config.yml"
        assert "remoteurl" in config_file.read_text() and token not in config_file.read_text()
        assert token not in Path(f"/proc/{pid}/cmdline").read_text() and token not in start.stdout + start.stderr
        assert f"REGISTRY_PROXY_PASSWORD={token}" in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        snippet = project.run_process(["registry", "client-config", "--name", "hubcache", "--format", "json"],
                                      env, tmp_path)
        assert snippet.returncode == 0, snippet.stderr
        snippets = json.loads(snippet.stdout)
        import tomllib
        buildkit = tomllib.loads(snippets["buildkitd.toml"])
        assert buildkit["registry"]["docker.io"]["mirrors"] == [cache["address"]]
        assert buildkit["registry"][cache["address"]]["http"] is True
        hosts = tomllib.loads(snippets["hosts.toml"])
        assert hosts["server"] == "https://registry-1.docker.io"
        assert hosts["host"][f"http://{cache['address']}"]["capabilities"] == ["pull", "resolve"]
        # read-only: a push to the cache is refused
        with httpx.Client(base_url=f"http://{cache['address']}", timeout=30) as client:
            assert client.post("/v2/x/blobs/uploads/").status_code >= 400
        # an engine configured with exactly the printed daemon.json pulls Docker Hub names through the cache
        daemon = json.loads(snippets["daemon.json"])
        assert daemon == {"registry-mirrors": [f"http://{cache['address']}"]}
        with second_engine("hubmirror", "pl-hubmir0", "10.231.48.1/24", snippets["daemon.json"]) as engine:
            up.proxy.reset_stats()
            pulled = engine.docker("pull", f"{BASE_REPO}:1.36")
            assert pulled.returncode == 0, pulled.stderr[-2000:]
            first = up.requests()
            assert any(m == "GET" and "/blobs/" in p for m, p in first), first
            # again, after the engine forgot it: the cache answers; the upstream sees no GET (a tag is
            # revalidated with a HEAD, which Docker Hub does not count)
            assert engine.docker("image", "rm", f"{BASE_REPO}:1.36").returncode == 0
            up.proxy.reset_stats()
            again = engine.docker("pull", f"{BASE_REPO}:1.36")
            assert again.returncode == 0, again.stderr[-2000:]
            assert _pulls(up.requests()) == [], up.requests()
            assert any(m == "HEAD" for m, _ in up.requests())
            # by digest: not a single request
            assert engine.docker("image", "rm", f"{BASE_REPO}:1.36").returncode == 0
            up.proxy.reset_stats()
            by_digest = engine.docker("pull", f"{BASE_REPO}@{_current(up)}")   # what the tag pulled (cached)
            assert by_digest.returncode == 0, by_digest.stderr[-2000:]
            assert [r for r in up.requests() if r[1].split("?")[0] != "/v2/"] == [], up.requests()
    finally:
        project.run_process(["registry", "stop", "--name", "hubcache"], env, tmp_path)


CROSS = """\
ARG BASE_IMAGE
FROM --platform=$BUILDPLATFORM ${BASE_IMAGE} AS tools
RUN echo "tools ran on $(uname -m)" > /tools.txt
FROM ${BASE_IMAGE}
COPY --from=tools /tools.txt /tools.txt
COPY app.txt /app.txt
"""


def test_a_builder_that_can_only_push_gets_the_mirrored_base_through_the_loopback_registry(
        tmp_path, registries, upstream, classic_engine):
    """The classic image store reads no OCI layout: the platforms a build uses (a --platform=$BUILDPLATFORM
    stage's included) go from the local layout to the loopback registry of builds (our client), and BuildKit
    gets them as a docker-image:// named context."""
    from pipeline.setup import localregistry as lr

    up = upstream
    cfg = _project(tmp_path, registries, up.base, mark="classic", mirror='prefix = "mirror-classic"')
    (tmp_path / "ctx" / "Dockerfile").write_text(CROSS)
    cfg.write_text(cfg.read_text().replace('mode = "single"', 'mode = "auto"'))
    up.proxy.reset_stats()
    try:
        run = _release(tmp_path, cfg, **classic_engine.env)
        assert run.returncode == 0, run.stderr[-4000:]
    finally:
        lr.stop(lr.BUILD_LOOPBACK, state_root=tmp_path / ".pipeline" / "registry")
    report = json.loads((tmp_path / "dist" / "release.json").read_text())
    index = _released_index(registries, report["digest"])
    assert index["annotations"]["org.opencontainers.image.base.digest"] == _current(up)
    started = _events(run.stderr, "build.started")
    assert sorted(e["to"] for e in started) == ["loopback registry", "loopback registry"], started
    # BuildKit asked the upstream nothing: only our client's copy into the mirror reached it
    assert all("pipeline" in r.user_agent for r in up.proxy.records()), {r.user_agent for r in up.proxy.records()}


def test_split_builds_and_their_merge_agree_on_the_mirrored_bases(tmp_path, registries, upstream):
    """Each runner builds one platform FROM the mirror; the merge computes the same build key (the bases'
    digests are inputs) and the index names the base."""
    up = upstream
    cfg = _project(tmp_path, registries, up.base, mark="split", mirror='prefix = "mirror-split"')
    (tmp_path / "ctx" / "Dockerfile").write_text(CROSS)
    cfg.write_text(cfg.read_text().replace('mode = "single"', 'mode = "split"'))
    digests = tmp_path / "digests"
    for platform in project.PLATFORMS:
        run = project.run_process(["build", "--config", str(cfg), "--platform", platform, "--digest-out",
                                   str(digests)], github_env(PIPELINE_LOG_FORMAT="json"), tmp_path, timeout=1500)
        assert run.returncode == 0, run.stderr[-4000:]
    merged = project.run_process(["release", "--config", str(cfg), "--from-digests", str(digests), "--format", "json"],
                                 github_env(PIPELINE_LOG_FORMAT="json"), tmp_path, timeout=1500)
    assert merged.returncode == 0, merged.stderr[-4000:]
    index = _released_index(registries, json.loads(merged.stdout)["digest"])
    assert index["annotations"]["org.opencontainers.image.base.digest"] == _current(up)
    keys = {json.loads(p.read_text())["key"] for p in digests.glob("*.json")}
    assert len(keys) == 1, keys


def _current(up: Upstream) -> str:
    with httpx.Client(base_url=up.registry.url, headers={"Accept": project.ACCEPT}, timeout=30) as client:
        return client.head(f"/v2/{BASE_REPO}/manifests/1.36").headers["Docker-Content-Digest"]
