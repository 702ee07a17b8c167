"""Installing tools without root (pipeline.setup.userinstall): checksums decide, nothing half-installed."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import ToolError
from pipeline.setup import userinstall


def test_checksum_files_as_the_projects_publish_them():
    sums = f"{'a' * 64}  cosign-linux-arm64\n{'b' * 64}  cosign-linux-amd64\n{'c' * 64} *buildx-v0.13.1.linux-amd64\n"
    assert userinstall.parse_checksums(sums, "cosign-linux-amd64") == "b" * 64
    assert userinstall.parse_checksums(sums, "buildx-v0.13.1.linux-amd64") == "c" * 64
    assert userinstall.parse_checksums(sums, "trivy") is None
    assert userinstall.parse_checksums(("D" * 64) + "\n", "registry_2.8.3_linux_amd64.tar.gz") == "d" * 64


def test_release_file_names_follow_upstream():
    r = userinstall.RELEASES
    assert r["trivy"].asset_name("amd64") == "trivy_0.59.1_Linux-64bit.tar.gz"
    assert r["trivy"].asset_name("arm64") == "trivy_0.59.1_Linux-ARM64.tar.gz"
    assert r["cosign"].asset_name("arm64") == "cosign-linux-arm64"
    assert r["buildx"].asset_name("amd64") == "buildx-v0.13.1.linux-amd64"
    assert r["docker-registry"].checksums_name("amd64") == "registry_2.8.3_linux_amd64.tar.gz.sha256"
    assert r["cosign"].base(None) == "https://github.com/sigstore/cosign/releases/download/v2.5.0"
    assert r["cosign"].base("http://mirror.example/tools/") == "http://mirror.example/tools"


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "mirror"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(folder), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def test_a_file_that_does_not_match_its_checksum_is_not_installed(served, tmp_path, monkeypatch):
    url, folder = served
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (folder / "cosign-linux-amd64").write_bytes(b"#!/bin/sh\necho tampered\n")
    (folder / "cosign_checksums.txt").write_text(f"{hashlib.sha256(b'the real one').hexdigest()}  cosign-linux-amd64\n")
    with pytest.raises(ToolError) as err:
        userinstall.install_one(userinstall.RELEASES["cosign"], base=url, arch="amd64")
    assert "has sha256" in str(err.value) and "nothing was installed" in str(err.value)
    assert not (tmp_path / "home" / ".local" / "bin" / "cosign").exists()
    assert not list((tmp_path / "home").rglob("*cosign*"))


def _publish_cosign(folder: Path, body: bytes = b"#!/bin/sh\necho cosign\n") -> bytes:
    """cosign's amd64 binary and its checksum file in the mirror."""
    (folder / "cosign-linux-amd64").write_bytes(body)
    (folder / "cosign_checksums.txt").write_text(f"{hashlib.sha256(body).hexdigest()}  cosign-linux-amd64\n")
    return body


def test_a_good_file_is_installed_executable_and_a_missing_one_names_the_url(served, tmp_path, monkeypatch):
    url, folder = served
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    body = _publish_cosign(folder)
    said = userinstall.install_one(userinstall.RELEASES["cosign"], base=url, arch="amd64")
    dest = tmp_path / "home" / ".local" / "bin" / "cosign"
    assert dest.read_bytes() == body and dest.stat().st_mode & 0o111
    assert str(dest) in said and "sha256 checked" in said
    with pytest.raises(ToolError) as err:
        userinstall.install_one(userinstall.RELEASES["buildx"], base=url, arch="amd64")
    assert f"{url}/checksums.txt: HTTP 404" in str(err.value)


def test_what_needs_root_is_said_not_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    said = userinstall.install(["qemu-binfmt", "docker-engine"], env={"HOME": str(tmp_path), "PATH": "/usr/bin"})
    assert any(s.startswith("not installed (needs root): qemu-binfmt:") for s in said)
    assert any(s.startswith("not installed (needs root): docker-engine:") for s in said)


def test_a_mirrors_credentials_never_reach_the_output(served, tmp_path, monkeypatch):
    url, folder = served
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _publish_cosign(folder)
    with_creds = url.replace("http://", "http://ci-user:s3cr3t-token@")
    said = userinstall.install_one(userinstall.RELEASES["cosign"], base=with_creds, arch="amd64")
    assert "s3cr3t-token" not in said and "ci-user" not in said and url in said
    with pytest.raises(ToolError) as err:
        userinstall.install_one(userinstall.RELEASES["buildx"], base=with_creds, arch="amd64")
    assert "s3cr3t-token" not in str(err.value) and "HTTP 404" in str(err.value)
