"""The local registry manager and the offline base image against the real tools."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import stat
import time
from pathlib import Path

import httpx
import pytest

from pipeline.errors import ToolError
from pipeline.setup import localregistry as lr
from pipeline.setup import offline_base as ob
from pipeline.tools import proc


@pytest.fixture
def registry_binary(require_tool) -> None:
    require_tool("docker-registry")


def _push_blob(url: str, repo: str, data: bytes, headers: dict[str, str] | None = None) -> str:
    """Upload one blob the way clients do (POST, then PUT with the digest); returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(headers=headers or {}) as c:
        r = c.post(f"{url}/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        location = location if location.startswith("http") else url + location
        sep = "&" if "?" in location else "?"
        r = c.put(f"{location}{sep}digest={digest.replace(':', '%3A')}", content=data,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    return digest


# --------------------------------------------------------------------------- lifecycle


def test_start_status_stop(tmp_path: Path, registry_binary: None) -> None:
    inst = lr.start("life", port=0, state_root=tmp_path)
    try:
        assert inst.backend == "binary" and inst.pid and not inst.auth and inst.delete
        assert inst.host == f"127.0.0.1:{inst.port}"
        assert lr.status("life", state_root=tmp_path) == inst
        assert httpx.get(f"{inst.url}/v2/").status_code == 200
        state = json.loads((tmp_path / "life" / "state.json").read_text())
        assert state["pid"] == inst.pid and state["port"] == inst.port
        assert 'rootdirectory: "' + str(tmp_path / "life" / "data") + '"' in inst.config_path.read_text()
        assert stat.S_IMODE(inst.config_path.stat().st_mode) == 0o600  # holds http.secret
    finally:
        assert lr.stop("life", state_root=tmp_path) is True
    assert lr.status("life", state_root=tmp_path) is None
    assert not lr.listening("127.0.0.1", inst.port)
    assert json.loads((tmp_path / "life" / "state.json").read_text())["pid"] is None
    assert lr.stop("life", state_root=tmp_path) is False


def test_start_is_idempotent(tmp_path: Path, registry_binary: None) -> None:
    first = lr.start("idem", port=0, state_root=tmp_path)
    try:
        again = lr.start("idem", port=first.port, state_root=tmp_path)
        assert again == first
        with pytest.raises(ToolError, match="already runs .* with other settings: delete"):
            lr.start("idem", port=first.port, state_root=tmp_path, delete=False)
    finally:
        lr.stop("idem", state_root=tmp_path)


def test_port_taken_by_something_else(tmp_path: Path, registry_binary: None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ToolError, match=f"port {port} is already in use") as exc:
            lr.start("taken", port=port, state_root=tmp_path)
    assert "\n" not in str(exc.value)
    assert lr.status("taken", state_root=tmp_path) is None


def test_wait_ready_times_out_with_log_line(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_text('time="x" level=info msg="starting"\ntime="y" level=fatal msg="open /nope: permission denied"\n')
    port = lr.free_port()
    started = time.monotonic()
    with pytest.raises(ToolError, match="not ready within 1s .*open /nope: permission denied"):
        lr.wait_ready(f"http://127.0.0.1:{port}", 1, log_path=log)
    assert time.monotonic() - started < 5


def test_registry_that_exits_fails_fast_with_its_message(tmp_path: Path, registry_binary: None) -> None:
    started = time.monotonic()
    try:  # 192.0.2.1 (TEST-NET-1) is no address of this machine: the registry cannot listen there
        with pytest.raises(ToolError, match=r"registry at .* exited \(\d+\) while starting: .*192\.0\.2\.1") as exc:
            lr.start("broken", port=lr.free_port(), state_root=tmp_path, bind="192.0.2.1")
    finally:
        lr.stop("broken", state_root=tmp_path)
    assert "\n" not in str(exc.value)
    assert time.monotonic() - started < 10
    assert lr.status("broken", state_root=tmp_path) is None


def test_port_zero_on_a_foreign_address(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="cannot listen on 192.0.2.1"):
        lr.start("broken", port=0, state_root=tmp_path, bind="192.0.2.1")


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    data = tmp_path / "data-is-a-file"
    data.write_text("")
    with pytest.raises(ToolError, match="data-is-a-file"):
        lr.start("broken", port=0, state_root=tmp_path, data_dir=data)


def test_data_survives_restart(tmp_path: Path, registry_binary: None) -> None:
    inst = lr.start("keep", port=0, state_root=tmp_path)
    try:
        offset = lr.log_offset(inst)
        digest = _push_blob(inst.url, "survive/me", b"kept across restarts")
        assert lr.uploads_since(inst, offset) == [("survive/me", digest)]
        assert lr.stop("keep", state_root=tmp_path)
        again = lr.start("keep", port=inst.port, state_root=tmp_path)
        assert again.pid != inst.pid
        r = httpx.get(f"{again.url}/v2/survive/me/blobs/{digest}")
        assert r.status_code == 200 and r.content == b"kept across restarts"
    finally:
        lr.stop("keep", state_root=tmp_path)


def test_tls_self_signed(tmp_path: Path, registry_binary: None, require_tool) -> None:
    require_tool("openssl")
    inst = lr.start("tls", port=0, state_root=tmp_path, tls=True)
    try:
        assert inst.url.startswith("https://") and inst.ca_cert and inst.ca_cert.is_file()
        assert httpx.get(f"{inst.url}/v2/", verify=ssl.create_default_context(cafile=str(inst.ca_cert))).status_code == 200
        assert f"/etc/docker/certs.d/{inst.host}/ca.crt" in (inst.certs_d_hint or "")
    finally:
        lr.stop("tls", state_root=tmp_path)


# --------------------------------------------------------------------------- users and auth


def test_add_user_and_basic_auth(tmp_path: Path, registry_binary: None, require_tool) -> None:
    require_tool("htpasswd")
    htpasswd = tmp_path / "htpasswd"
    inst = lr.start("auth", port=0, state_root=tmp_path, htpasswd=htpasswd)
    try:
        assert inst.auth and stat.S_IMODE(htpasswd.stat().st_mode) == 0o600
        url = f"{inst.url}/v2/"
        assert httpx.get(url).status_code == 401
        lr.add_user(htpasswd, "alice", "first-Secret-1")       # the running registry re-reads the file
        assert httpx.get(url, auth=("alice", "first-Secret-1")).status_code == 200
        assert httpx.get(url, auth=("alice", "wrong")).status_code == 401
        lr.add_user(htpasswd, "alice", "second-Secret-2")      # replaces alice
        assert htpasswd.read_text().count("alice:") == 1
        assert "$2y$" in htpasswd.read_text()                  # bcrypt
        assert stat.S_IMODE(htpasswd.stat().st_mode) == 0o600
        assert httpx.get(url, auth=("alice", "second-Secret-2")).status_code == 200
        assert httpx.get(url, auth=("alice", "first-Secret-1")).status_code == 401
        assert "Secret" not in inst.log_path.read_text()
    finally:
        lr.stop("auth", state_root=tmp_path)


def test_session_registries(registries) -> None:
    ghcr, ecr, hub = registries["ghcr"], registries["ecr"], registries["hub"]
    assert len({ghcr.host, ecr.host, hub.host}) == 3
    assert (ghcr.delete, ecr.delete, hub.delete) == (False, False, True)
    assert ecr.password is None and httpx.get(f"{ecr.url}/v2/").status_code == 200
    for reg in (ghcr, hub):
        assert httpx.get(f"{reg.url}/v2/").status_code == 401
        assert httpx.get(f"{reg.url}/v2/", headers=reg.auth_header()).status_code == 200
        assert httpx.get(f"{reg.url}/v2/", auth=(reg.username, reg.password + "x")).status_code == 401
        assert f'password_env = "PIPELINE_TEST_{reg.name.upper()}_PASSWORD"' in reg.toml
    assert 'auth = "none"' in ecr.toml and f'url = "{ecr.host}"' in ecr.toml
    config = json.loads((Path(os.environ["DOCKER_CONFIG"]) / "config.json").read_text())
    assert set(config["auths"]) == {ghcr.host, hub.host}


def test_session_registry_deletes(registries) -> None:
    def delete(reg) -> int:
        digest = _push_blob(reg.url, "del/me", b"delete " + reg.name.encode(), reg.auth_header())
        return httpx.delete(f"{reg.url}/v2/del/me/blobs/{digest}", headers=reg.auth_header()).status_code

    assert delete(registries["hub"]) == 202
    assert delete(registries["ghcr"]) == 405


def test_upload_counter(registries, registry_uploads) -> None:
    ecr = registries["ecr"]
    offset = ecr.log_offset()
    _push_blob(ecr.url, "count/a", b"one")
    _push_blob(ecr.url, "count/a", b"two")
    _push_blob(ecr.url, "count/b", b"three")
    assert registry_uploads(ecr, offset) == 3
    assert registry_uploads(ecr, offset, repo="count/a") == 2


# --------------------------------------------------------------------------- offline base image


def test_offline_base_is_cached(offline_base: str, registries, monkeypatch: pytest.MonkeyPatch) -> None:
    ecr = registries["ecr"]
    assert offline_base.startswith(f"{ecr.host}/pipeline/offline-base@sha256:")

    real_run = proc.run

    def no_build(argv, *a, **kw):
        assert list(argv[:2]) != ["docker", "buildx"], "ensure_offline_base built again on a cached re-run"
        return real_run(argv, *a, **kw)

    monkeypatch.setattr(ob.proc, "run", no_build)
    offset = ecr.log_offset()
    started = time.monotonic()
    again = ob.ensure_offline_base(ecr.host)
    assert time.monotonic() - started < 3
    assert again == offline_base
    assert ecr.uploads_since(offset) == []


def test_offline_base_index(offline_base: str, registries) -> None:
    host, _, rest = offline_base.partition("/")
    repo, _, digest = rest.partition("@")
    r = httpx.get(f"http://{host}/v2/{repo}/manifests/{digest}",
                  headers={"Accept": "application/vnd.oci.image.index.v1+json, "
                                     "application/vnd.docker.distribution.manifest.list.v2+json"})
    assert r.status_code == 200
    platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in r.json()["manifests"])
    assert platforms == ["linux/amd64", "linux/arm64"]
    r = httpx.head(f"http://{host}/v2/{repo}/manifests/busybox",
                   headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    assert r.headers["Docker-Content-Digest"] == digest


@pytest.mark.parametrize(("platform", "machine"), [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")])
def test_offline_base_runs(offline_base: str, platform: str, machine: str, require_tool) -> None:
    require_tool(f"qemu-{platform.split('/')[1]}")
    r = proc.run(["docker", "run", "--rm", "--platform", platform, offline_base, "uname", "-m"], timeout=300)
    assert r.stdout.strip() == machine


def test_dockerfile_from_offline_base_adds_users(offline_base: str, tmp_path: Path, require_tool) -> None:
    require_tool("qemu-arm64")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {offline_base}\n"
        "RUN addgroup -S -g 10001 app && adduser -S -D -H -u 10001 -G app app\n"
        "RUN [ \"$(id -u app):$(id -g app)\" = 10001:10001 ] && [ -d /tmp ] && [ -k /tmp ]\n"
        "USER app\n"
        "RUN touch /tmp/ok && uname -m > /tmp/ok\n")
    proc.run(["docker", "buildx", "build", "--builder", "default", "--platform", "linux/amd64,linux/arm64",
              "--progress=plain", str(tmp_path)], timeout=900, what="build FROM the offline base")


def test_offline_base_in_an_auth_registry(registries, docker_engine, require_tool) -> None:
    """buildx and the HEAD check both use the session's DOCKER_CONFIG credentials."""
    require_tool("buildx")
    hub = registries["hub"]
    ref = ob.ensure_offline_base(hub.host, "library/offline-base", platforms=("linux/amd64",))
    assert ref.startswith(f"{hub.host}/library/offline-base@sha256:")
    assert ob.ensure_offline_base(hub.host, "library/offline-base", platforms=("linux/amd64",)) == ref
    r = httpx.head(f"{hub.url}/v2/library/offline-base/manifests/{ref.split('@')[1]}", headers={
        **hub.auth_header(), "Accept": "application/vnd.oci.image.index.v1+json, "
                                       "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200


def test_container_backend_without_the_binary(tmp_path: Path, docker_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without docker-registry the registry:2 image runs; where it cannot be had, the error is one clear line."""
    real_which = proc.which
    monkeypatch.setattr(lr.proc, "which", lambda tool: None if tool == lr.BINARY else real_which(tool))
    have_image = proc.run(["docker", "image", "inspect", lr.IMAGE], check=False, timeout=60).returncode == 0
    if not have_image:
        with pytest.raises(ToolError, match=r"registry:2 image is not available .*apt-get install docker-registry") \
                as exc:
            lr.start("box", port=0, state_root=tmp_path)
        assert "\n" not in str(exc.value)
        assert lr.status("box", state_root=tmp_path) is None
        return
    inst = lr.start("box", port=0, state_root=tmp_path)
    try:
        assert inst.backend == "container" and inst.container_id
        assert lr.status("box", state_root=tmp_path) == inst
        digest = _push_blob(inst.url, "in/box", b"container backend")
        assert lr.uploads_since(inst) == []  # the container's log is collected on stop
    finally:
        assert lr.stop("box", state_root=tmp_path)
    assert ("in/box", digest) in lr.uploads_since(inst)
