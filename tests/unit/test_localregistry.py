"""Pure parts of the local registry manager and the offline base image (no processes, no sockets)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pipeline.errors import ToolError
from pipeline.setup import localregistry as lr
from pipeline.setup import offline_base as ob
from pipeline.tools.proc import Completed

# --------------------------------------------------------------------------- config.yml


def test_config_yaml_full() -> None:
    text = lr.config_yaml(addr="127.0.0.1:5000", root_dir="/srv/reg data", secret="s3", delete=True,
                          htpasswd="/etc/reg/htpasswd", tls_cert="/c/cert.pem", tls_key="/c/key.pem", name="local")
    assert text == """\
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
  fields:
    registry: "local"
storage:
  filesystem:
    rootdirectory: "/srv/reg data"
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: "127.0.0.1:5000"
  secret: "s3"
  headers:
    X-Content-Type-Options: [nosniff]
  tls:
    certificate: "/c/cert.pem"
    key: "/c/key.pem"
auth:
  htpasswd:
    realm: "pipeline-registry"
    path: "/etc/reg/htpasswd"
"""


def test_config_yaml_plain_without_deletes() -> None:
    text = lr.config_yaml(addr=":5000", root_dir="/var/lib/registry", secret="x", delete=False)
    assert "    enabled: false\n" in text
    assert "auth:" not in text and "tls:" not in text
    assert '  addr: ":5000"\n' in text


def test_config_yaml_quotes_awkward_paths() -> None:
    text = lr.config_yaml(addr="127.0.0.1:1", root_dir='/a "b"\\c', secret="x", delete=True)
    assert '    rootdirectory: "/a \\"b\\"\\\\c"\n' in text


@pytest.mark.parametrize(("bind", "port", "addr", "host"), [
    ("127.0.0.1", 5000, "127.0.0.1:5000", "127.0.0.1:5000"),
    ("0.0.0.0", 5001, ":5001", "127.0.0.1:5001"),
    ("", 5002, ":5002", "127.0.0.1:5002"),
    ("::1", 5003, "[::1]:5003", "[::1]:5003"),
    ("10.0.0.7", 80, "10.0.0.7:80", "10.0.0.7:80"),
])
def test_listen_addr_and_client_host(bind: str, port: int, addr: str, host: str) -> None:
    assert lr.listen_addr(bind, port) == addr
    assert lr.client_host(bind, port) == host


# --------------------------------------------------------------------------- state file


def _instance(**kw: object) -> lr.RegistryInstance:
    base: dict[str, object] = {
        "name": "local", "host": "127.0.0.1:5000", "port": 5000, "data_dir": Path("/d"),
        "state_dir": Path("/s/local"), "pid": 1234, "auth": True, "delete": False, "tls": True,
        "backend": "binary", "bind": "127.0.0.1", "htpasswd": Path("/s/htpasswd"),
        "ca_cert": Path("/s/local/tls/cert.pem")}
    base.update(kw)
    return lr.RegistryInstance(**base)  # type: ignore[arg-type]


def test_state_round_trip() -> None:
    inst = _instance()
    text = lr.instance_to_json(inst)
    data = json.loads(text)
    assert data["pid"] == 1234 and data["data_dir"] == "/d" and data["backend"] == "binary"
    assert lr.instance_from_json(text) == inst


def test_state_round_trip_without_optional_paths_and_unknown_keys() -> None:
    inst = _instance(pid=None, htpasswd=None, ca_cert=None, auth=False, tls=False, backend="container",
                     container_id="abc")
    data = json.loads(lr.instance_to_json(inst))
    data["written_by_a_newer_version"] = True
    assert lr.instance_from_json(json.dumps(data)) == inst


def test_instance_urls_and_hint() -> None:
    inst = _instance()
    assert inst.url == "https://127.0.0.1:5000"
    assert inst.config_path == Path("/s/local/config.yml")
    assert inst.log_path == Path("/s/local/registry.log")
    assert inst.certs_d_hint == ("docker trusts this registry after: mkdir -p /etc/docker/certs.d/127.0.0.1:5000 "
                                 "&& cp /s/local/tls/cert.pem /etc/docker/certs.d/127.0.0.1:5000/ca.crt")
    assert _instance(tls=False, ca_cert=None).certs_d_hint is None
    assert _instance(tls=False, ca_cert=None).url == "http://127.0.0.1:5000"


def test_status_and_stop_without_state(tmp_path: Path) -> None:
    assert lr.status("nothing", state_root=tmp_path) is None
    assert lr.stop("nothing", state_root=tmp_path) is False


def test_stop_with_a_dead_pid_clears_it(tmp_path: Path) -> None:
    inst = _instance(state_dir=tmp_path / "local", pid=2 ** 22 + 12345, tls=False, ca_cert=None)
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "state.json").write_text(lr.instance_to_json(inst))
    assert lr.status("local", state_root=tmp_path) is None
    assert lr.stop("local", state_root=tmp_path) is False
    assert json.loads((tmp_path / "local" / "state.json").read_text())["pid"] is None


def test_unreadable_state_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "state.json").write_text("{not json")
    with pytest.raises(ToolError, match=r"state .*state.json is unreadable"):
        lr.status("local", state_root=tmp_path)


def test_bad_name_rejected(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="not valid"):
        lr.status("../x", state_root=tmp_path)


# --------------------------------------------------------------------------- htpasswd


def test_htpasswd_argv_has_no_password() -> None:
    argv = lr.htpasswd_argv(Path("/x/htpasswd"), "alice")
    assert argv == ["htpasswd", "-i", "-B", "/x/htpasswd", "alice"]
    assert "-b" not in argv


def test_add_user_sends_password_on_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], str | None]] = []

    def fake_run(argv, *, input=None, **kw):
        calls.append((list(argv), input))
        Path(argv[-2]).write_text("alice:$2y$05$hash\n")
        return Completed(tuple(argv), 0, "", "")

    monkeypatch.setattr(lr.proc, "run", fake_run)
    path = tmp_path / "auth" / "htpasswd"
    lr.add_user(path, "alice", "correct horse battery")
    (argv, stdin), = calls
    assert "correct horse battery" not in " ".join(argv)
    assert stdin == "correct horse battery\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("user", ["", "a:b", "a b"])
def test_add_user_rejects_bad_names(tmp_path: Path, user: str) -> None:
    with pytest.raises(ToolError, match="not valid"):
        lr.add_user(tmp_path / "h", user, "pw")


# --------------------------------------------------------------------------- access log

# recorded from docker-registry 2.8.2 (buildkit pushing, curl mounting)
LOG = """\
time="2026-11-26T23:11:15.9Z" level=info msg="response completed" http.request.method=PUT http.response.status=201
127.0.0.1 - - [26/Nov/2026:23:11:15 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "python-httpx/0.28.1"
127.0.0.1 - - [26/Nov/2026:23:11:15 +0000] "POST /v2/pipeline/offline-base/blobs/uploads/ HTTP/1.1" 202 0 "" "buildkit/v0.0-dev"
127.0.0.1 - - [26/Nov/2026:23:11:15 +0000] "POST /v2/pipeline/offline-base/blobs/uploads/?mount=sha256:251a&from=bb/test HTTP/1.1" 202 0 "" "buildkit/v0.0-dev"
127.0.0.1 - - [26/Nov/2026:23:11:15 +0000] "PUT /v2/pipeline/offline-base/blobs/uploads/e227c2ef-aabd?_state=Xgjx%3D%3D&digest=sha256%3A300f HTTP/1.1" 201 0 "" "buildkit/v0.0-dev"
127.0.0.1 - - [26/Nov/2026:23:11:16 +0000] "PATCH /v2/a/b/blobs/uploads/43cf?_state=_x3t HTTP/1.1" 202 0 "" "curl/7.88.1"
127.0.0.1 - - [26/Nov/2026:23:11:16 +0000] "PUT /v2/a/b/blobs/uploads/43cf?_state=IoVn&digest=sha256:2cf2 HTTP/1.1" 201 0 "" "curl/7.88.1"
127.0.0.1 - - [26/Nov/2026:23:11:16 +0000] "PUT /v2/a/b/blobs/uploads/9999?_state=IoVn&digest=sha256:dead HTTP/1.1" 400 120 "" "curl/7.88.1"
127.0.0.1 - - [26/Nov/2026:23:11:16 +0000] "POST /v2/c/blobs/uploads/?mount=sha256:2cf2&from=a/b HTTP/1.1" 201 0 "" "curl/7.88.1"
127.0.0.1 - - [26/Nov/2026:23:11:16 +0000] "PUT /v2/pipeline/offline-base/manifests/busybox HTTP/1.1" 201 0 "" "buildkit/v0.0-dev"
"""


def test_parse_access_line() -> None:
    line = LOG.splitlines()[4]
    a = lr.parse_access_line(line)
    assert a == lr.AccessLine("PUT", "/v2/pipeline/offline-base/blobs/uploads/e227c2ef-aabd?_state=Xgjx%3D%3D"
                                     "&digest=sha256%3A300f", 201, 0, "buildkit/v0.0-dev")
    assert lr.parse_access_line(LOG.splitlines()[0]) is None
    assert lr.parse_access_line("") is None


def test_completed_uploads_counts_finished_puts_only() -> None:
    lines = LOG.splitlines()
    assert lr.completed_uploads(lines) == [("pipeline/offline-base", "sha256:300f"), ("a/b", "sha256:2cf2")]
    assert lr.completed_uploads(lines, repo="a/b") == [("a/b", "sha256:2cf2")]
    assert lr.completed_mounts(lines) == [("c", "sha256:2cf2")]


def test_uploads_since_offset(tmp_path: Path) -> None:
    inst = _instance(state_dir=tmp_path)
    assert lr.log_offset(inst) == 0 and lr.uploads_since(inst) == []
    head, tail = LOG[:LOG.index("127.0.0.1 - - [26/Nov/2026:23:11:16")], LOG[LOG.index("127.0.0.1 - - [26/Nov/2026:23:11:16"):]
    inst.log_path.write_text(head)
    offset = lr.log_offset(inst)
    with open(inst.log_path, "a") as fh:
        fh.write(tail)
    assert lr.uploads_since(inst, offset) == [("a/b", "sha256:2cf2")]
    assert len(lr.uploads_since(inst)) == 2


def test_basic_auth_header() -> None:
    assert lr.basic_auth_header("u", "pw!") == {"Authorization": "Basic dTpwdyE="}


# --------------------------------------------------------------------------- offline base (pure)


def test_target_arch() -> None:
    assert ob.target_arch("linux/amd64") == "amd64"
    assert ob.target_arch("linux/arm64/v8") == "arm64"
    with pytest.raises(ToolError, match="not linux/<arch>"):
        ob.target_arch("windows")


def test_content_key_covers_inputs() -> None:
    bins = {"amd64": b"A", "arm64": b"B"}
    key = ob.content_key(bins, ["linux/amd64", "linux/arm64"])
    assert len(key) == 64
    assert ob.content_key(bins, ["linux/arm64", "linux/amd64"]) == key  # order does not matter
    assert ob.content_key({"amd64": b"A", "arm64": b"C"}, ["linux/amd64", "linux/arm64"]) != key
    assert ob.content_key(bins, ["linux/amd64"]) != key
    assert ob.content_key(bins, ["linux/amd64", "linux/arm64"], dockerfile="FROM scratch\n") != key
    changed = dict(ob.ROOTFS)
    changed["etc/group"] = ("root:x:0:\n", 0o644)
    assert ob.content_key(bins, ["linux/amd64", "linux/arm64"], rootfs=changed) != key
    assert ob.key_tag(key) == "busybox-" + key[:12]


def test_build_argv_writes_a_local_layout_and_pushes_nothing() -> None:
    argv = ob.build_argv(Path("/ctx"), Path("/out/layout"), ["linux/amd64", "linux/arm64"], Path("/m.json"), "k" * 64)
    assert argv == ["docker", "buildx", "build", "--builder", "default", "--platform", "linux/amd64,linux/arm64",
                    "--provenance=false", "--progress=plain", "--output", "type=oci,dest=/out/layout,tar=false",
                    "--metadata-file", "/m.json", "--label", "io.pipeline.offline-base.key=" + "k" * 64, "/ctx"]


def test_dockerfile_needs_nothing_from_docker_hub() -> None:
    froms = [ln for ln in ob.DOCKERFILE.splitlines() if ln.upper().startswith("FROM")]
    assert froms == ["FROM scratch"]
    assert "# syntax" not in ob.DOCKERFILE  # a syntax line would pull docker/dockerfile
    assert ob.ETC_PASSWD.startswith("root:x:0:0:")
    assert ob.ETC_GROUP.startswith("root:x:0:")
    assert all(text.startswith("#!/bin/sh\n") for path, (text, mode) in ob.ROOTFS.items() if mode == 0o755)


def _start_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, binary: bool) -> tuple[dict, lr.RegistryInstance]:
    seen: dict = {}
    monkeypatch.setattr(lr.proc, "which", lambda name: f"/usr/bin/{name}" if binary else None)
    monkeypatch.setattr(lr.docker, "ensure_image", lambda image, why: None)
    monkeypatch.setattr(lr.docker, "run_container", lambda image, name, **kw: seen.update(kw) or "c0ffee")

    class Child:
        pid = 4242

    def spawn(argv, log_path, *, env=None):
        seen.update(argv=list(argv), env=dict(env or {}))
        return Child()

    monkeypatch.setattr(lr.proc, "spawn_daemon", spawn)
    monkeypatch.setattr(lr, "wait_ready", lambda *a, **k: None)
    inst = lr.start("hubcache", port=0, state_root=tmp_path, proxy="https://registry-1.docker.io",
                    proxy_credentials=("robot", "pw-0f9e8d7c"))
    return seen, inst


def test_pull_through_credentials_never_reach_a_containers_environment(tmp_path, monkeypatch) -> None:
    # a container's environment is part of its configuration: `docker inspect` showed the upstream password
    seen, inst = _start_cache(tmp_path, monkeypatch, binary=False)
    assert inst.backend == "container"
    assert "pw-0f9e8d7c" not in repr(seen) and "environment" not in seen
    text = inst.config_path.read_text()
    assert 'username: "robot"' in text and 'password: "pw-0f9e8d7c"' in text
    assert inst.config_path.stat().st_mode & 0o777 == 0o600
    # stopped, the cache keeps no copy of the password on disk
    monkeypatch.setattr(lr.docker, "stop_container", lambda cid, **kw: cid == "c0ffee")
    assert lr._stop_instance(inst) is True
    assert not inst.config_path.exists()
    assert all("pw-0f9e8d7c" not in f.read_text(errors="replace") for f in tmp_path.rglob("*") if f.is_file())


def test_pull_through_credentials_reach_our_registry_process_through_its_environment_only(tmp_path,
                                                                                         monkeypatch) -> None:
    seen, inst = _start_cache(tmp_path, monkeypatch, binary=True)
    assert seen["env"] == {"REGISTRY_PROXY_USERNAME": "robot", "REGISTRY_PROXY_PASSWORD": "pw-0f9e8d7c"}
    assert "pw-0f9e8d7c" not in " ".join(seen["argv"])
    assert "pw-0f9e8d7c" not in inst.config_path.read_text()
    assert inst.config_path.stat().st_mode & 0o777 == 0o600
