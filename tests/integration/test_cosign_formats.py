"""Signatures our client writes are what cosign 2.5 and cosign 3.1 write and verify (issue 11 §4).

cosign signs offline and the project's registry client writes the artifacts. These tests release
with each cosign line (the default toolchain's 2.5, Debian unstable's 3.1.1 from the current
toolchain) and check the result with that cosign run directly against the registry, as a user
would; then the other line verifies it too, and a registry signed by 2.5 keeps verifying (and gets
no second signature) after the move to 3.1.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import project
from tests.support.project import http
from tests.support.project import run_main as run

SHA = "c05c05c05c05c05c05c05c05c05c05c05c05c05c"
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG MARK=formats
RUN echo "built for $(uname -m) ${MARK}" > /built.txt
"""
EMPTY_ROOT = '{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}'
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "cosign", "cosign-current", "trivy"):
        require_tool(tool)


def github_env(**extra: str) -> dict[str, str]:
    return project.github_env("refs/tags/v1.2.3", SHA, **extra)


def keypair(tmp: Path, password: str) -> tuple[Path, Path]:
    env = github_env(COSIGN_PASSWORD=password)
    r = run(["keygen", "--output", str(tmp / "keys" / "release")], env)
    assert r.code == 0, r.err
    return tmp / "keys" / "release.key", tmp / "keys" / "release.pub"


def release(tmp: Path, registries: dict[str, Any], offline_base: str, *, name: str, key: Path, password: str,
            mark: str) -> dict[str, Any]:
    cfg = project.write_project(tmp, registries, offline_base, name=name, dockerfile=DOCKERFILE,
                                sign=f'key = "{key}"\ntlog_upload = false\n')
    cfg.write_text(cfg.read_text().replace("[image.build_args]\n", f"[image.build_args]\nMARK = \"{mark}\"\n"))
    r = run(["release", "--config", str(cfg), "--format", "json"], github_env(COSIGN_PASSWORD=password))
    assert r.code == 0, r.err[-4000:]
    data = r.json
    data["cfg"] = cfg
    return data


def cosign_direct(exe: str, *args: str) -> subprocess.CompletedProcess:
    """cosign as a user runs it, straight against the registry (credentials from the session's DOCKER_CONFIG)."""
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, check=False)


def verify_args(pub: Path, ref: str, *, attestation: str | None = None) -> list[str]:
    base = ["--key", str(pub), "--insecure-ignore-tlog=true", "--allow-http-registry=true",
            "--allow-insecure-registry=true"]
    if attestation is None:
        return ["verify", *base, ref]
    return ["verify-attestation", "--type", attestation, *base, ref]


def signed_count(out: dict[str, Any]) -> int:
    return sum(1 for item in out["outputs"]["sign"]["items"] if item["action"] == "signed")


def referrers_index(reg: Any, repo: str, digest: str) -> dict[str, Any] | None:
    with http(reg) as client:
        r = client.get(f"/v2/{repo}/manifests/{digest.replace(':', '-')}",
                       headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    return r.json() if r.status_code == 200 else None


def legacy_layers(reg: Any, repo: str, digest: str, suffix: str) -> int:
    with http(reg) as client:
        r = client.get(f"/v2/{repo}/manifests/{digest.replace(':', '-')}.{suffix}")
    return len(r.json()["layers"]) if r.status_code == 200 else 0


@pytest.mark.parametrize("line", ["default", "current"])
def test_a_release_signed_with_each_cosign_line_verifies_with_that_cosign(
        line, tmp_path, registries, offline_base, cosign_on_path):
    exe = cosign_on_path(line)
    password = secrets.token_urlsafe(16)
    key, pub = keypair(tmp_path, password)
    out = release(tmp_path, registries, offline_base, name=f"formats/{line}", key=key, password=password,
                  mark=line)
    digest = out["digest"]
    assert out["outputs"]["sign"]["cosign_major"] == (3 if line == "current" else 2)
    for name in ("ghcr", "ecr", "hub"):
        reg = registries[name]
        ref = f"{reg.host}/formats/{line}@{digest}"
        r = cosign_direct(exe, *verify_args(pub, ref))
        assert r.returncode == 0, f"{name}: {r.stderr[-2000:]}"
        for platform, pdigest in out["platforms"].items():
            pref = f"{reg.host}/formats/{line}@{pdigest}"
            r = cosign_direct(exe, *verify_args(pub, pref, attestation="cyclonedx"))
            assert r.returncode == 0, f"{name} {platform}: {r.stderr[-2000:]}"
        if line == "current":   # cosign 3's format: bundles as referrers, here in the fallback index
            index = referrers_index(reg, f"formats/{line}", digest)
            assert index and len(index["manifests"]) == 1, index
            assert legacy_layers(reg, f"formats/{line}", digest, "sig") == 0
        else:                   # cosign 2's: the .sig tag, one layer
            assert legacy_layers(reg, f"formats/{line}", digest, "sig") == 1
            assert referrers_index(reg, f"formats/{line}", digest) is None
    # a second release signs nothing: no second referrer, no second layer
    again = run(["release", "--config", str(out["cfg"]), "--format", "json"], github_env(COSIGN_PASSWORD=password))
    assert again.code == 0, again.err[-3000:]
    assert signed_count(again.json) == 0
    hub = registries["hub"]
    if line == "current":
        assert len(referrers_index(hub, f"formats/{line}", digest)["manifests"]) == 1
    else:
        assert legacy_layers(hub, f"formats/{line}", digest, "sig") == 1


def test_what_cosign_3_made_verifies_with_cosign_2_and_the_reverse(
        tmp_path, registries, offline_base, cosign_on_path):
    """Each line's artifacts, verified with the other line's cosign (2.5 reads v3 bundles with
    verify-attestation --new-bundle-format, the way its docs give; 3.1 reads .sig tags)."""
    password = secrets.token_urlsafe(16)
    key, pub = keypair(tmp_path, password)
    v2 = cosign_on_path("default")
    out2 = release(tmp_path / "v2", registries, offline_base, name="formats/cross2", key=key, password=password,
                   mark="cross2")
    v3 = cosign_on_path("current")
    out3 = release(tmp_path / "v3", registries, offline_base, name="formats/cross3", key=key, password=password,
                   mark="cross3")
    root = tmp_path / "empty-root.json"
    root.write_text(EMPTY_ROOT)
    reg = registries["ecr"]
    base = ["--key", str(pub), "--insecure-ignore-tlog=true", "--allow-http-registry=true",
            "--allow-insecure-registry=true"]
    r = cosign_direct(v3, "verify", *base, f"{reg.host}/formats/cross2@{out2['digest']}")
    assert r.returncode == 0, r.stderr[-2000:]
    amd64 = out2["platforms"]["linux/amd64"]
    r = cosign_direct(v3, "verify-attestation", "--type", "cyclonedx", *base, f"{reg.host}/formats/cross2@{amd64}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = cosign_direct(v2, "verify-attestation", "--new-bundle-format", "--trusted-root", str(root), "--type",
                      SIGN_PREDICATE, *base, f"{reg.host}/formats/cross3@{out3['digest']}")
    assert r.returncode == 0, r.stderr[-2000:]
    amd64 = out3["platforms"]["linux/amd64"]
    r = cosign_direct(v2, "verify-attestation", "--new-bundle-format", "--trusted-root", str(root), "--type",
                      "cyclonedx", *base, f"{reg.host}/formats/cross3@{amd64}")
    assert r.returncode == 0, r.stderr[-2000:]
    # and a wrong key is refused by both
    other_pw = secrets.token_urlsafe(16)
    _, other_pub = keypair(tmp_path / "other", other_pw)
    bad = ["--key", str(other_pub), *base[2:]]
    assert cosign_direct(v3, "verify", *bad, f"{reg.host}/formats/cross2@{out2['digest']}").returncode != 0
    assert cosign_direct(v3, "verify", *bad, f"{reg.host}/formats/cross3@{out3['digest']}").returncode != 0


def test_a_registry_signed_by_cosign_2_keeps_verifying_after_the_move_to_cosign_3(
        tmp_path, registries, offline_base, cosign_on_path):
    password = secrets.token_urlsafe(16)
    key, pub = keypair(tmp_path, password)
    cosign_on_path("default")
    out = release(tmp_path, registries, offline_base, name="formats/move", key=key, password=password, mark="move")
    cosign_on_path("current")
    again = run(["release", "--config", str(out["cfg"]), "--format", "json"], github_env(COSIGN_PASSWORD=password))
    assert again.code == 0, again.err[-3000:]
    assert again.json["outputs"]["sign"]["cosign_major"] == 3
    assert signed_count(again.json) == 0                                 # what v2 signed counts: nothing new
    hub = registries["hub"]
    assert legacy_layers(hub, "formats/move", out["digest"], "sig") == 1
    assert referrers_index(hub, "formats/move", out["digest"]) is None   # no v3 artifact added beside it
    r = run(["verify", "1.2.3", "--config", str(out["cfg"]), "--format", "json"], github_env())
    assert r.code == 0, r.err[-3000:]
    assert r.json["ok"] is True


def test_cosign_talks_to_no_registry_while_signing_and_verifying(
        tmp_path, registries, offline_base, cosign_on_path):
    """Every write to a registry in a signed release comes from our client (the registry's access log
    names the agent); cosign and Trivy send no request at all, BuildKit only reads its build cache."""
    for line in ("default", "current"):
        cosign_on_path(line)
        password = secrets.token_urlsafe(16)
        key, _ = keypair(tmp_path / line, password)
        offsets = {n: registries[n].log_offset() for n in ("ghcr", "ecr", "hub")}
        release(tmp_path / line, registries, offline_base, name=f"formats/agents-{line}", key=key,
                password=password, mark=f"agents-{line}")
        from pipeline.setup import localregistry

        agents: set[str] = set()
        writers: set[str] = set()
        for n, offset in offsets.items():
            for text in localregistry.read_log_since(registries[n].instance, offset):
                line_ = localregistry.parse_access_line(text)
                if line_ is not None and f"formats/agents-{line}" in line_.path:
                    agent = line_.user_agent.split("/", 1)[0]
                    agents.add(agent)
                    if line_.method not in ("GET", "HEAD"):
                        writers.add(agent)
        assert writers == {"pipeline"}, writers
        agents.discard("buildkit")          # the cache import (cache-from) reads staging
        assert agents == {"pipeline"}, agents     # cosign and Trivy sent nothing, not even a read

