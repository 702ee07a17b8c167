"""Verification: what REF means, tag/digest agreement, cosign checks, messages naming what failed."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import pytest

from pipeline import config
from pipeline.cli import main
from pipeline.sign import verification
from pipeline.sign.verification import Check, Report, Target
from tests.support.fakeaccess import fake_access

INDEX = "sha256:" + "1" * 64
AMD64 = "sha256:" + "2" * 64
ARM64 = "sha256:" + "3" * 64
OTHER = "sha256:" + "9" * 64
INDEX_BODY = json.dumps({"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
    {"digest": AMD64, "platform": {"os": "linux", "architecture": "amd64"}},
    {"digest": ARM64, "platform": {"os": "linux", "architecture": "arm64"}},
    {"digest": "sha256:" + "4" * 64, "platform": {"os": "unknown", "architecture": "unknown"},
     "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}]}).encode()

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


@dataclass
class Head:
    digest: str


class FakeRegistry:
    def __init__(self, refs: dict[str, str]) -> None:
        self.refs = refs   # tag or digest -> digest

    def manifest_head(self, repo, ref):
        d = self.refs.get(ref)
        return Head(d) if d else None

    def manifest_get(self, repo, ref):
        assert ref == INDEX
        return INDEX_BODY, "application/vnd.oci.image.index.v1+json", INDEX


@pytest.fixture
def registries(monkeypatch, fake_cosign, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "release.pub").write_text("-----BEGIN PUBLIC KEY-----\nREAL\n-----END PUBLIC KEY-----\n")
    state = {"ghcr": {"1.2.3": INDEX}, "ecr": {"1.2.3": INDEX}, "hub": {"1.2.3": INDEX}}

    def client(reg):
        refs = dict(state[reg.name])
        refs.update({d: d for d in (INDEX, AMD64, ARM64, OTHER)})
        return FakeRegistry(refs)

    monkeypatch.setattr(verification, "Access", fake_access(client, "/nonexistent"))
    return state


def sign_everything(fake_cosign, *, skip: tuple[str, ...] = ()) -> None:
    for host in ("127.0.0.1:5001/acme/app", "127.0.0.1:5002/app", "127.0.0.1:5003/app"):
        if f"{host}@{INDEX}" not in skip:
            fake_cosign.mark_signed("sign", f"{host}@{INDEX}")
        for d in (AMD64, ARM64):
            if f"{host}@{d}" not in skip:
                fake_cosign.mark_signed("attest", f"{host}@{d}")


def test_all_good(registries, fake_cosign):
    sign_everything(fake_cosign)
    targets, _ = verification.targets_for(cfg(), "1.2.3")
    report = verification.verify(cfg(), {}, targets)
    assert report.ok and report.digest == INDEX, report.text()
    checks = sorted((c.registry, c.check, c.platform or "") for c in report.checks)
    assert checks == sorted((r, k, p) for r in ("ghcr", "ecr", "hub")
                            for k, p in (("tag", ""), ("signature", ""), ("attestation", "linux/amd64"),
                                         ("attestation", "linux/arm64")))
    # the attestation manifest (unknown/unknown) of the index is not a platform
    assert all("4444" not in c.ref for c in report.checks)
    verify_calls = [c["argv"] for c in fake_cosign.calls() if c["argv"][0] == "verify"]
    assert all("--insecure-ignore-tlog=true" in a and a[a.index("--key") + 1] == "release.pub" for a in verify_calls)


def test_a_retagged_registry_is_named(registries, fake_cosign):
    sign_everything(fake_cosign)
    registries["hub"]["1.2.3"] = OTHER
    report = verification.verify(cfg(), {}, verification.targets_for(cfg(), "1.2.3")[0])
    assert not report.ok and report.digest == INDEX          # two registries against one
    assert report.failure_message() == (f"verification failed: hub: 127.0.0.1:5003/app:1.2.3 tag: points at {OTHER},"
                                         f" not the other registries' {INDEX}")


def test_a_missing_signature_and_attestation_are_named(registries, fake_cosign):
    sign_everything(fake_cosign, skip=(f"127.0.0.1:5002/app@{INDEX}", f"127.0.0.1:5003/app@{ARM64}"))
    report = verification.verify(cfg(), {}, verification.targets_for(cfg(), "1.2.3")[0], expected=INDEX)
    assert [c.line() for c in report.problems] == [
        f"ecr: 127.0.0.1:5002/app@{INDEX} signature: no matching signatures: invalid signature",
        f"hub: 127.0.0.1:5003/app@{ARM64} attestation linux/arm64: no matching signatures: invalid signature"]
    assert report.failure_message().endswith("(and 1 more)")


def test_expected_digest_wins_over_agreement(registries, fake_cosign):
    sign_everything(fake_cosign)
    report = verification.verify(cfg(), {}, verification.targets_for(cfg(), "1.2.3")[0], expected=OTHER,
                                 signatures=False)
    assert {c.detail for c in report.problems} == {f"points at {INDEX}, not the released digest {OTHER}"}
    assert fake_cosign.calls() == []


def test_a_missing_tag_and_sign_disabled(registries, fake_cosign):
    del registries["ecr"]["1.2.3"]
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
    sign_everything(fake_cosign)
    code, out, err = run(["verify", "1.2.3", "--config", str(p), "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["ok"] is True and json.loads(out)["ref"] == "1.2.3"
    registries["ghcr"]["1.2.3"] = OTHER
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
