"""Verification: what REF means, tag/digest agreement, cosign checks, messages naming what failed."""

from __future__ import annotations

import io
import json

import pytest

from pipeline import config
from pipeline.cli import main
from pipeline.sign import verification
from pipeline.sign.verification import Check, Report, Target
from pipeline.sign import writer
from pipeline.tools import transfer
from pipeline.tools.oci import Layout, digest_of
from pipeline.tools.registry import Registry
from tests.support.fakeaccess import fake_access
from tests.support.fakecosign import fake_envelope, fake_sign
from tests.support.fakeregistry import FAST, FakeRegistry, LazyTransport

def _json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _manifest(arch: str) -> tuple[bytes, dict[str, bytes]]:
    config = _json({"os": "linux", "architecture": arch, "rootfs": {"type": "layers", "diff_ids": []}})
    layer = f"layer of {arch}".encode()
    body = _json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config),
                             "size": len(config)},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(layer),
                              "size": len(layer)}]})
    return body, {digest_of(config): config, digest_of(layer): layer}


#: a real (small, deterministic) image: an index over two platforms and a BuildKit attestation manifest
_AMD64_BODY, _AMD64_BLOBS = _manifest("amd64")
_ARM64_BODY, _ARM64_BLOBS = _manifest("arm64")
_ATT_BODY, _ATT_BLOBS = _manifest("unknown")
_OTHER_BODY, _OTHER_BLOBS = _manifest("s390x")
AMD64, ARM64, ATT, OTHER = (digest_of(b) for b in (_AMD64_BODY, _ARM64_BODY, _ATT_BODY, _OTHER_BODY))
INDEX_BODY = _json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": AMD64, "size": len(_AMD64_BODY),
     "platform": {"os": "linux", "architecture": "amd64"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": ARM64, "size": len(_ARM64_BODY),
     "platform": {"os": "linux", "architecture": "arm64"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": ATT, "size": len(_ATT_BODY),
     "platform": {"os": "unknown", "architecture": "unknown"},
     "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}]})
INDEX = digest_of(INDEX_BODY)
HOSTS = {"ghcr": "127.0.0.1:5001", "ecr": "127.0.0.1:5002", "hub": "127.0.0.1:5003"}
REPOS = {"ghcr": "acme/app", "ecr": "app", "hub": "app"}

CFG = {"image": {"name": "app"},
       "registries": [{"name": "ghcr", "url": "127.0.0.1:5001/acme"}, {"name": "ecr", "url": "127.0.0.1:5002"},
                      {"name": "hub", "url": "127.0.0.1:5003"}],
       "sign": {"key": "release.key", "public_key": "release.pub", "tlog_upload": False}}


def cfg(**sign) -> config.Config:
    return config.parse({**CFG, "sign": {**CFG["sign"], **sign}})


# --------------------------------------------------------------------------- REF


def test_a_bare_tag_means_the_image_in_every_registry():
    targets, named = verification.targets_for(cfg(), "1.2.3")
    assert named is None
    assert [t.ref for t in targets] == ["127.0.0.1:5001/acme/app:1.2.3", "127.0.0.1:5002/app:1.2.3",
                                        "127.0.0.1:5003/app:1.2.3"]


@pytest.mark.parametrize("ref", [INDEX, "@" + INDEX])
def test_a_digest_means_the_digest_in_every_registry(ref):
    targets, named = verification.targets_for(cfg(), ref)
    assert named == INDEX and [t.ref for t in targets][1] == f"127.0.0.1:5002/app@{INDEX}"


def test_a_full_reference_is_that_one_with_the_registry_config_when_known():
    targets, named = verification.targets_for(cfg(), f"127.0.0.1:5001/acme/app:1.2@{INDEX}")
    assert named == INDEX and len(targets) == 1
    assert (targets[0].registry.name, targets[0].repository, targets[0].reference) == ("ghcr", "acme/app", "1.2")
    targets, _ = verification.targets_for(cfg(), "registry.example:5000/x/y:1")
    assert targets[0].registry.name == "registry.example_5000" and targets[0].registry.auth == "docker"


@pytest.mark.parametrize("ref", ["sha256:abc", "not a tag!", "UPPER/Case:1"])
def test_bad_refs(ref):
    with pytest.raises(ValueError):
        verification.targets_for(cfg(), ref)


# --------------------------------------------------------------------------- the engine against fakes


class Registries(dict):
    """name → a fake registry client holding the image; ``tag(name, tag, digest)`` points a tag."""

    def tag(self, name: str, tag: str, digest: str) -> None:
        client = self[name]
        body = INDEX_BODY if digest == INDEX else _OTHER_BODY
        media = "application/vnd.oci.image.index.v1+json" if digest == INDEX else \
            "application/vnd.oci.image.manifest.v1+json"
        client.manifest_put(REPOS[name], tag, body, media)

    def untag(self, name: str, tag: str) -> None:
        self.fakes[name].tag_map[REPOS[name]].pop(tag)


@pytest.fixture
def registries(monkeypatch, fake_cosign, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "release.pub").write_text("-----BEGIN PUBLIC KEY-----\nREAL\n-----END PUBLIC KEY-----\n")
    layout = Layout.create(tmp_path / "image")
    for body, blobs in ((_AMD64_BODY, _AMD64_BLOBS), (_ARM64_BODY, _ARM64_BLOBS), (_ATT_BODY, _ATT_BLOBS),
                        (_OTHER_BODY, _OTHER_BLOBS)):
        for data in blobs.values():
            layout.put(data)
        layout.put(body)
    layout.put(INDEX_BODY)
    out = Registries()
    out.fakes = {n: FakeRegistry(host="127.0.0.1") for n in HOSTS}
    for name, host in HOSTS.items():
        client = Registry(host, name=name, policy=FAST, transport=LazyTransport(out.fakes[name]))
        transfer.push(layout, INDEX, client, REPOS[name])
        transfer.push(layout, OTHER, client, REPOS[name])
        out[name] = client
        out.tag(name, "1.2.3", INDEX)

    def client_of(reg):
        return out[reg.name]

    monkeypatch.setattr(verification, "Access", fake_access(client_of, "/nonexistent"))
    return out


def sign_everything(registries, *, skip: tuple[str, ...] = ()) -> None:
    """Our key's signature of the index and SBOM attestation of each platform, in every registry."""
    for name, client in registries.items():
        repo, ref = REPOS[name], f"{HOSTS[name]}/{REPOS[name]}"
        if f"{ref}@{INDEX}" not in skip:
            payload = writer.simple_signing_payload(ref, INDEX)
            writer.write_legacy_signature(client, repo, INDEX, payload, fake_sign(payload))
        for d in (AMD64, ARM64):
            if f"{ref}@{d}" not in skip:
                writer.write_legacy_attestation(client, repo, d, fake_envelope(
                    ref, d, "https://cyclonedx.org/bom", {"bomFormat": "CycloneDX"}))


def test_all_good(registries, fake_cosign):
    sign_everything(registries)
    targets, _ = verification.targets_for(cfg(), "1.2.3")
    report = verification.verify(cfg(), {}, targets)
    assert report.ok and report.digest == INDEX, report.text()
    checks = sorted((c.registry, c.check, c.platform or "") for c in report.checks)
    assert checks == sorted((r, k, p) for r in ("ghcr", "ecr", "hub")
                            for k, p in (("tag", ""), ("signature", ""), ("attestation", "linux/amd64"),
                                         ("attestation", "linux/arm64")))
    # the attestation manifest (unknown/unknown) of the index is not a platform
    assert all(ATT not in c.ref for c in report.checks)
    verify_calls = [c["argv"] for c in fake_cosign.calls() if c["argv"][0] == "verify"]
    assert verify_calls and all("--insecure-ignore-tlog=true" in a and a[a.index("--key") + 1] == "release.pub"
                                and "--local-image" in a for a in verify_calls)


def test_a_retagged_registry_is_named(registries, fake_cosign):
    sign_everything(registries)
    registries.tag("hub", "1.2.3", OTHER)
    report = verification.verify(cfg(), {}, verification.targets_for(cfg(), "1.2.3")[0])
    assert not report.ok and report.digest == INDEX          # two registries against one
    assert report.failure_message() == (f"verification failed: hub: 127.0.0.1:5003/app:1.2.3 tag: points at {OTHER},"
                                         f" not the other registries' {INDEX}")


def test_a_missing_signature_and_attestation_are_named(registries, fake_cosign):
    sign_everything(registries, skip=(f"127.0.0.1:5002/app@{INDEX}", f"127.0.0.1:5003/app@{ARM64}"))
    report = verification.verify(cfg(), {}, verification.targets_for(cfg(), "1.2.3")[0], expected=INDEX)
    assert [c.line() for c in report.problems] == [
        f"ecr: 127.0.0.1:5002/app@{INDEX} signature: no signatures found",
        f"hub: 127.0.0.1:5003/app@{ARM64} attestation linux/arm64: no cyclonedx attestations found"]
    assert report.failure_message().endswith("(and 1 more)")


def test_expected_digest_wins_over_agreement(registries, fake_cosign):
    sign_everything(registries)
    report = verification.verify(cfg(), {}, verification.targets_for(cfg(), "1.2.3")[0], expected=OTHER,
                                 signatures=False)
    assert {c.detail for c in report.problems} == {f"points at {INDEX}, not the released digest {OTHER}"}
    assert fake_cosign.calls() == []


def test_a_missing_tag_and_sign_disabled(registries, fake_cosign):
    registries.untag("ecr", "1.2.3")
    report = verification.verify(cfg(enabled=False), {}, verification.targets_for(cfg(), "1.2.3")[0])
    assert [c.line() for c in report.problems] == ["ecr: 127.0.0.1:5002/app:1.2.3 tag: not found"]
    assert fake_cosign.calls() == []


def test_report_shapes():
    r = Report(INDEX, [Check("a", "h/app:1", "tag", True, "→ x"), Check("a", "h/app@d", "signature", False, "no")])
    data = r.to_dict()
    assert data["ok"] is False and data["problems"] == ["a: h/app@d signature: no"]
    assert "FAIL a" in r.text() and r.text().splitlines()[-1] == "verification failed: a: h/app@d signature: no"
    assert Report(None).failure_message() == "verification failed: nothing was checked" and not Report(None).ok


def test_target_ref_formats():
    reg = cfg().registries[0]
    assert Target(reg, "acme/app", "1").ref == "127.0.0.1:5001/acme/app:1"
    assert Target(reg, "acme/app", INDEX).ref == f"127.0.0.1:5001/acme/app@{INDEX}"


# --------------------------------------------------------------------------- the commands


def run(args, env=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(args, env=env or {}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_verify_command_exit_codes(tmp_path, registries, fake_cosign):
    p = tmp_path / "pipeline.toml"
    p.write_text("""
[image]
name = "app"
[[registries]]
name = "ghcr"
url = "127.0.0.1:5001/acme"
[[registries]]
name = "ecr"
url = "127.0.0.1:5002"
[[registries]]
name = "hub"
url = "127.0.0.1:5003"
[sign]
key = "release.key"
public_key = "release.pub"
tlog_upload = false
""")
    sign_everything(registries)
    code, out, err = run(["verify", "1.2.3", "--config", str(p), "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["ok"] is True and json.loads(out)["ref"] == "1.2.3"
    registries.tag("ghcr", "1.2.3", OTHER)
    code, out, err = run(["verify", "1.2.3", "--config", str(p)])
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("pipeline: error: verification failed: ghcr: 127.0.0.1:5001/acme/app:1.2.3")
    assert "FAIL ghcr" in out
    code, _, err = run(["verify", "not a tag!", "--config", str(p)])
    assert code == 2 and "pipeline verify:" in err
    code, _, err = run(["verify", "1.2.3", "--digest", "sha256:xyz", "--config", str(p)])
    assert code == 2 and "--digest" in err


def test_keygen_needs_a_password_source_and_never_takes_it_on_argv(tmp_path):
    code, _, err = run(["keygen", "--output", str(tmp_path / "k")], {})
    assert code == 2 and "COSIGN_PASSWORD" in err and "--password-stdin" in err
    code, _, err = run(["keygen", "--password", "x"], {})
    assert code == 2   # there is no such option


def test_keygen_refuses_to_overwrite(tmp_path, fake_cosign):
    (tmp_path / "k.key").write_text("existing")
    code, _, err = run(["keygen", "--output", str(tmp_path / "k")], {"COSIGN_PASSWORD": "pw-abc-123"})
    assert code == 2 and "--force" in err
    assert (tmp_path / "k.key").read_text() == "existing" and fake_cosign.calls() == []
    code, out, err = run(["keygen", "--output", str(tmp_path / "k"), "--force", "--format", "json"],
                         {"COSIGN_PASSWORD": "pw-abc-123"})
    assert code == 0, err
    assert json.loads(out) == {"private_key": f"{tmp_path / 'k'}.key", "public_key": f"{tmp_path / 'k'}.pub",
                               "password_source": "$COSIGN_PASSWORD"}
    call = fake_cosign.calls()[0]
    assert call["argv"] == ["generate-key-pair", "--output-key-prefix", str(tmp_path / "k")]
    assert call["password"] == "pw-abc-123" and "pw-abc-123" not in out + err


def test_keygen_reads_the_password_from_stdin(tmp_path, fake_cosign, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin-pw\n"))
    code, out, err = run(["keygen", "--output", str(tmp_path / "s"), "--password-stdin"], {})
    assert code == 0, err
    assert fake_cosign.calls()[0]["password"] == "from-stdin-pw" and "from-stdin-pw" not in out + err
