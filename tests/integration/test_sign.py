"""Sign, attest, verify on the real toolchain (issue 5 acceptance).

Releases run through ``pipeline.cli.main`` against three real registries; what they leave is
checked with cosign run directly (not through our code) and with raw HTTP. An independent
watcher thread polls the registries during the release to prove the ordering: a valid signature
for the digest exists in a registry before its first release tag does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import project
from tests.support.project import Run, http
from tests.support.project import run_main as run

SHA = "5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f"
RELEASE_TAGS = ["1.2.3", "1.2", "1", "latest"]
PLATFORMS = ("linux/amd64", "linux/arm64")
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG MARK=signed
RUN echo "built for $(uname -m) ${MARK}" > /built.txt
"""


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "cosign", "trivy"):
        require_tool(tool)


# --------------------------------------------------------------------------- helpers


def github_env(ref: str = "refs/tags/v1.2.3", **extra: str) -> dict[str, str]:
    return project.github_env(ref, SHA, **extra)


def write_config(tmp: Path, registries: dict[str, Any], offline_base: str, *, name: str, sign: str) -> Path:
    return project.write_project(tmp, registries, offline_base, name=name, dockerfile=DOCKERFILE, sign=sign)


def tags_of(client: httpx.Client, repo: str) -> list[str]:
    r = client.get(f"/v2/{repo}/tags/list")
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return r.json().get("tags") or []


def manifest(client: httpx.Client, repo: str, ref: str) -> tuple[bytes, str] | None:
    r = client.get(f"/v2/{repo}/manifests/{ref}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.content, "sha256:" + hashlib.sha256(r.content).hexdigest()


def sig_tag(digest: str, major: int = 2) -> str:
    """Where the signature of ``digest`` is found by tag: cosign 2's ``.sig`` tag, or the fallback tag of
    cosign 3's referrers (an index of Sigstore bundles) on a registry without the referrers API."""
    return digest.replace(":", "-") + (".sig" if major == 2 else "")


def artifact_count(client: httpx.Client, repo: str, digest: str, kind: str, major: int) -> int:
    """Signatures (``sig``) or attestations (``att``) of ``digest``: layers of cosign 2's tag, or bundles
    of that kind in cosign 3's referrers index."""
    if major == 2:
        return layer_count(client, repo, digest.replace(":", "-") + f".{kind}")
    found = manifest(client, repo, digest.replace(":", "-"))   # the index signs, the platforms are attested
    return len(json.loads(found[0]).get("manifests", [])) if found else 0


def layer_count(client: httpx.Client, repo: str, tag: str) -> int:
    found = manifest(client, repo, tag)
    return len(json.loads(found[0])["layers"]) if found else 0


def cosign(*args: str) -> subprocess.CompletedProcess:
    """cosign run directly, as a user would (credentials from the session's DOCKER_CONFIG)."""
    return subprocess.run(["cosign", *args], capture_output=True, text=True, timeout=300, check=False)


@dataclass
class Poll:
    started: float
    tags: frozenset[str]
    sig_manifests: dict[str, str]   # .sig tag -> manifest digest seen in this poll


@dataclass
class Watcher:
    """Polls one registry's repository with raw HTTP, as fast as it can, until stopped."""

    reg: Any
    repo: str
    polls: list[Poll] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self._loop, daemon=True)
        t.start()
        return t

    def _loop(self) -> None:
        with http(self.reg) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    tags = tags_of(client, self.repo)
                    sigs = {}
                    for t in tags:
                        if t.startswith("sha256-") and not t.endswith(".att"):
                            found = manifest(client, self.repo, t)
                            if found:
                                sigs[t] = found[1]
                except httpx.HTTPError as exc:
                    self.errors.append(str(exc))
                    continue
                self.polls.append(Poll(started, frozenset(tags), sigs))
                time.sleep(0.005)


# --------------------------------------------------------------------------- the signed release


@dataclass
class Released:
    tmp: Path
    cfg: Path
    env: dict[str, str]
    password: str
    key: Path
    pub: Path
    name: str
    first: Run
    watchers: dict[str, Watcher]

    @property
    def digest(self) -> str:
        return self.first.json["digest"]

    @property
    def platforms(self) -> dict[str, str]:
        return self.first.json["platforms"]

    @property
    def major(self) -> int:
        """The cosign line that signed (2, or 3 with PIPELINE_TEST_TOOLCHAIN=current)."""
        return int(self.first.json["outputs"]["sign"]["cosign_major"])


@pytest.fixture(scope="module")
def released(tmp_path_factory, registries, offline_base) -> Released:
    tmp = tmp_path_factory.mktemp("signed")
    password = "pw-" + secrets.token_urlsafe(18)
    env = github_env(COSIGN_PASSWORD=password)
    keygen = run(["keygen", "--output", str(tmp / "keys" / "release")], env)
    assert keygen.code == 0, keygen.err
    key, pub = tmp / "keys" / "release.key", tmp / "keys" / "release.pub"
    name = f"signed/app{secrets.token_hex(3)}"
    cfg = write_config(tmp, registries, offline_base, name=name,
                       sign=f'key = "{key}"\ntlog_upload = false\nsbom = true')
    watchers = {n: Watcher(r, name) for n, r in registries.items()}
    threads = [w.start() for w in watchers.values()]
    try:
        first = run(["release", "--config", str(cfg), "--format", "json"], env)
    finally:
        time.sleep(0.2)
        for w in watchers.values():
            w.stop.set()
        for t in threads:
            t.join(10)
    assert first.code == 0, first.err[-5000:]
    assert password not in first.out + first.err + keygen.out + keygen.err
    return Released(tmp, cfg, env, password, key, pub, name, first, watchers)


def test_keygen_wrote_a_protected_key_pair(released):
    assert stat.S_IMODE(released.key.stat().st_mode) == 0o600
    assert released.key.read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    assert released.pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_cosign_verify_passes_for_the_release_tag_in_every_registry(released, registries):
    for reg in registries.values():
        ref = f"{reg.host}/{released.name}:1.2.3"
        r = cosign("verify", "--key", str(released.pub), "--insecure-ignore-tlog=true", ref)
        assert r.returncode == 0, f"{reg.name}: {r.stderr}"
        payloads = json.loads(r.stdout)
        assert {p["critical"]["image"]["docker-manifest-digest"] for p in payloads} == {released.digest}


def test_cosign_verify_attestation_cyclonedx_per_platform(released, registries):
    assert set(released.platforms) == set(PLATFORMS)
    for reg in registries.values():
        for platform, digest in released.platforms.items():
            ref = f"{reg.host}/{released.name}@{digest}"
            r = cosign("verify-attestation", "--key", str(released.pub), "--type", "cyclonedx",
                       "--insecure-ignore-tlog=true", ref)
            assert r.returncode == 0, f"{reg.name} {platform}: {r.stderr}"
            envelope = json.loads(r.stdout.splitlines()[0])
            statement = json.loads(base64.b64decode(envelope["payload"]))
            assert statement["predicateType"] == "https://cyclonedx.org/bom"
            assert statement["subject"][0]["digest"]["sha256"] == digest.split(":", 1)[1]
            assert statement["predicate"]["bomFormat"] == "CycloneDX"


def test_every_registry_held_a_valid_signature_before_its_first_release_tag(released, registries):
    sig = sig_tag(released.digest, released.major)
    for name, watcher in released.watchers.items():
        polls = watcher.polls
        assert polls, f"{name}: the watcher saw nothing ({watcher.errors[:1]})"
        first_tag = next((i for i, p in enumerate(polls) if p.tags & set(RELEASE_TAGS)), None)
        assert first_tag is not None, f"{name}: the watcher never saw a release tag"
        assert first_tag > 0 and not polls[0].tags & set(RELEASE_TAGS), f"{name}: tagged before watching began"
        seen = [p for p in polls[:first_tag] if sig in p.sig_manifests]
        assert seen, f"{name}: no signature for {released.digest} before the first release tag appeared"
        before = seen[-1]
        assert before.started < polls[first_tag].started
        # the signature seen then is the one there now, and cosign (run directly) says it is valid
        with http(registries[name]) as client:
            assert manifest(client, released.name, sig)[1] == before.sig_manifests[sig]
        r = cosign("verify", "--key", str(released.pub), "--insecure-ignore-tlog=true",
                   f"{registries[name].host}/{released.name}@{released.digest}")
        assert r.returncode == 0, r.stderr


def test_release_manifest_records_what_was_signed(released):
    sign = released.first.json["outputs"]["sign"]
    assert sign["digest"] == released.digest and sign["development_key"] is False
    assert sign["format"].startswith("tags sha256-<hex>.sig" if released.major == 2 else "OCI referrers")
    items = sign["items"]
    assert {i["registry"] for i in items} == {"ghcr", "ecr", "hub"}
    assert all(i["action"] == "signed" for i in items)
    assert len(items) == 3 * (1 + len(PLATFORMS))   # the index signature + one SBOM per platform
    verify = released.first.json["outputs"]["verify"]
    assert sorted(verify["cosign"]) == ["ecr", "ghcr", "hub"]
    assert [s["stage"] for s in released.first.json["stages"]][5:9] == ["copy", "sign", "tag", "verify"]


def test_second_release_adds_no_signature_or_attestation(released, registries):
    def counts() -> dict[str, tuple[int, ...]]:
        out = {}
        for name, reg in registries.items():
            with http(reg) as client:
                out[name] = (artifact_count(client, released.name, released.digest, "sig", released.major),
                             *(artifact_count(client, released.name, d, "att", released.major)
                               for _, d in sorted(released.platforms.items())))
        return out

    before = counts()
    assert all(c == (1, 1, 1) for c in before.values()), before
    again = run(["release", "--config", str(released.cfg), "--format", "json"], released.env)
    assert again.code == 0, again.err[-4000:]
    assert counts() == before
    items = again.json["outputs"]["sign"]["items"]
    assert items and all(i["action"] == "present" for i in items)
    assert "sbom.generated" not in again.err      # nothing to attest: no SBOM made either
    assert released.password not in again.out + again.err


def test_pipeline_verify_passes_for_the_release(released):
    r = run(["verify", "1.2.3", "--config", str(released.cfg), "--format", "json"], released.env)
    assert r.code == 0, r.err[-3000:]
    data = r.json
    assert data["ok"] is True and data["digest"] == released.digest
    kinds = sorted({(c["registry"], c["check"]) for c in data["checks"]})
    assert kinds == sorted((reg, check) for reg in ("ghcr", "ecr", "hub")
                           for check in ("tag", "signature", "attestation"))


def test_tampering_retag_makes_verify_fail_naming_it(released, registries):
    hub = registries["hub"]
    amd64 = released.platforms["linux/amd64"]
    with http(hub) as client:
        index_body, _ = manifest(client, released.name, released.digest)
        other, _ = manifest(client, released.name, amd64)
        media = json.loads(other)["mediaType"]
        index_media = json.loads(index_body)["mediaType"]
        put = client.put(f"/v2/{released.name}/manifests/1.2", content=other, headers={"Content-Type": media})
        assert put.status_code == 201, put.text
    try:
        r = run(["verify", "1.2", "--config", str(released.cfg)], released.env)
        assert r.code == 1, r.err[-3000:]
        line = r.error_line()
        assert "hub" in line and f"{hub.host}/{released.name}:1.2" in line and amd64 in line
        # the full reference alone (no other registry to compare with): the retagged image is unsigned
        r = run(["verify", f"{hub.host}/{released.name}:1.2", "--config", str(released.cfg)], released.env)
        assert r.code == 1
        assert "signature" in r.error_line() and "no signatures found" in r.error_line()
        # and with the expected digest it is named as not the released one
        r = run(["verify", f"{hub.host}/{released.name}:1.2", "--digest", released.digest,
                 "--config", str(released.cfg), "--format", "json"], released.env)
        assert r.code == 1 and any("points at" in p for p in r.json["problems"])
    finally:
        with http(hub) as client:
            restored = client.put(f"/v2/{released.name}/manifests/1.2", content=index_body,
                                  headers={"Content-Type": index_media})
            assert restored.status_code == 201


def test_verify_with_another_key_fails_naming_the_signature(released, registries):
    other = released.tmp / "other"
    env = released.env | {"COSIGN_PASSWORD": "another"}
    assert run(["keygen", "--output", str(other)], env).code == 0
    cfg = released.tmp / "other.toml"
    cfg.write_text(released.cfg.read_text().replace("tlog_upload = false",
                                                    f'tlog_upload = false\npublic_key = "{other}.pub"'))
    r = run(["verify", "1.2.3", "--config", str(cfg), "--format", "json"], released.env)
    assert r.code == 1
    problems = r.json["problems"]
    # cosign 2 says "no matching signatures"; cosign 3 words it its own way, still about the signature
    said = "no matching signatures" if released.major == 2 else "signature"
    assert any(p.startswith("ghcr: ") and "signature" in p and said in p for p in problems), problems
    assert any("attestation linux/arm64" in p for p in problems), problems
    assert said in r.error_line()


def test_wrong_or_unreadable_key_writes_no_release_tag(released, registries, offline_base):
    """A new ref (branch tag `feature-x`): the build is new, signing fails, nothing gets tagged."""
    env = github_env("refs/heads/feature-x", COSIGN_PASSWORD="definitely-not-" + released.password)
    cfg = released.cfg
    r = run(["release", "--config", str(cfg)], env)
    assert r.code == 3, r.err[-4000:]
    line = r.error_line()
    assert "signing failed in" in line and any(n in line for n in ("ghcr", "ecr", "hub")), line
    assert released.password not in r.out + r.err and env["COSIGN_PASSWORD"] not in r.out + r.err
    missing = released.tmp / "missing.toml"
    missing.write_text(cfg.read_text().replace(str(released.key), str(released.tmp / "nope.key")))
    r = run(["release", "--config", str(missing)], released.env | {"GITHUB_REF": "refs/heads/feature-x"})
    assert r.code == 3
    assert "cannot read the signing key" in r.error_line() and "nope.key" in r.error_line()
    for reg in registries.values():
        with http(reg) as client:
            assert "feature-x" not in tags_of(client, released.name), f"{reg.name} got a release tag"


def test_development_key_is_generated_once_with_a_warning(tmp_path):
    from structlog.testing import capture_logs

    from pipeline.config import SignConfig
    from pipeline.sign import keys
    from pipeline.tools import cosign as cosign_tool

    key = tmp_path / ".pipeline" / "cosign.key"
    cfg = SignConfig(key=str(key), tlog_upload=False)
    env = {"COSIGN_PASSWORD": "not-the-dev-password"}   # a shell's password for a real key: ignored here
    with capture_logs() as events:
        signer = keys.signer(cfg, env, cosign_tool.Cosign())
    assert signer.development and "development key" in signer.description
    names = [e["event"] for e in events]
    assert names == ["sign.development_key_generated", "sign.development_key"]
    assert all("DEVELOPMENT" in e["note"] for e in events)
    pw = keys.password_file(key)
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600 and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tmp_path / ".pipeline" / ".gitignore").read_text().splitlines()[-1] == "*"
    password = pw.read_text()
    assert signer.env["COSIGN_PASSWORD"] == password and password not in repr(signer)
    assert all(password not in json.dumps(e, default=str) for e in events)
    # the pair is a real cosign pair with that password; a second use generates nothing new
    before = key.read_bytes()
    with capture_logs() as events:
        again = keys.signer(cfg, env, cosign_tool.Cosign())
    assert key.read_bytes() == before and [e["event"] for e in events] == ["sign.development_key"]
    out = tmp_path / "derived.pub"
    r = subprocess.run(["cosign", "public-key", "--key", str(key), "--outfile", str(out)],
                       env={**os.environ, **again.env}, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert out.read_text().split() == key.with_suffix(".pub").read_text().split()
