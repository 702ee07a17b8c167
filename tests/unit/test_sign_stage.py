"""The sign stage against a fake cosign executable (through the real proc chokepoint) and a fake registry.

What is checked: what gets signed where, the idempotency decision in the stage, and that the key
password travels only in cosign's environment: never argv, never a log event, never an error.
"""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from pipeline.access import registries as registries_mod
from pipeline import config, refs
from pipeline.build.build import BuildOutput
from pipeline.context import Context
from pipeline.errors import ConfigError, InfraError
from pipeline.metadata.ci import CIInfo
from pipeline.metadata.rules import TagResult
from pipeline.metadata.tags import TagsOutput
from pipeline.sign import keys
from pipeline.sign import sign as sign_stage
from pipeline.sign import writer
from pipeline.sign.attachments import listing
from pipeline.sign.sign import Sign
from pipeline.stages.copy import CopyOutput, RegistryCopy
from pipeline.tools import cosign, transfer
from pipeline.tools.registry import Registry
from tests.support.fakecosign import fake_envelope, fake_sign
from tests.support.fakeregistry import FAST, FakeRegistry, LazyTransport
from tests.support.layouts import image_layout, root_of
from tests.support.fakeaccess import fake_access

PASSWORD = "pw-Very-Secret-9f3e1c"
HOSTS = {"a": "localhost:5000", "b": "127.0.0.1:5001"}
REPOS = {"a": "app", "b": "team/app"}


@pytest.fixture
def world(tmp_path, monkeypatch, fake_cosign):
    """Two registries (in-memory) holding the copied image; SBOMs faked; returns a context factory."""
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    (key_dir / "release.key").write_text("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nx\n")
    (key_dir / "release.pub").write_text("-----BEGIN PUBLIC KEY-----\nREAL\n-----END PUBLIC KEY-----\n")
    layout, index = image_layout(tmp_path / "layout")
    platforms = layout.platforms(index)
    fakes = {n: FakeRegistry(host=h.split(":")[0]) for n, h in HOSTS.items()}
    clients = {n: Registry(h, name=n, policy=FAST, transport=LazyTransport(fakes[n])) for n, h in HOSTS.items()}
    for n, client in clients.items():
        transfer.push(layout, index, client, REPOS[n])
    sboms: list[str] = []
    monkeypatch.setattr(registries_mod, "Access", fake_access(lambda reg: clients[reg.name]))
    monkeypatch.setattr(sign_stage.trivy, "sbom", lambda view, **kw: sboms.append(root_of(view)) or
                        b'{"bomFormat": "CycloneDX"}')

    def make(sign: dict | None = None, env: dict | None = None) -> Context:
        data = {"image": {"name": "app", "platforms": ["linux/amd64", "linux/arm64"]},
                "registries": [{"name": "a", "url": "localhost:5000"}, {"name": "b", "url": "127.0.0.1:5001/team"}],
                "staging": {"registry": "a"},
                "sign": {"key": str(key_dir / "release.key"), "tlog_upload": False, **(sign or {})}}
        cfg = config.parse(data)
        ctx = Context(config=cfg, ci=CIInfo("github", "tag", "push", "refs/tags/v1.2.3", "a" * 40),
                      env={"COSIGN_PASSWORD": PASSWORD} if env is None else env,
                      now=datetime(2026, 1, 1, tzinfo=UTC))
        ctx.outputs["tags"] = TagsOutput(TagResult("1.2.3", ["1.2.3"], False, {}, {}), ("localhost:5000/app",))
        ctx.outputs["build"] = BuildOutput("a", "app", index, platforms, "k", "candidate-x", False,
                                           layout=str(layout.path))
        ctx.outputs["copy"] = CopyOutput(index, {"a": RegistryCopy("a", "app", index),
                                                 "b": RegistryCopy("b", "team/app", index)}, {})
        return ctx

    make.index, make.platforms, make.layout = index, platforms, layout   # type: ignore[attr-defined]
    make.fakes, make.clients = fakes, clients                            # type: ignore[attr-defined]
    make.sboms = sboms        # type: ignore[attr-defined]
    make.key_dir = key_dir    # type: ignore[attr-defined]
    return make


def already_signed(world, *, key: str = "ours") -> None:
    """Every registry holds a signature of the index and an SBOM attestation per platform, by ``key``."""
    for name, client in world.clients.items():
        repo = REPOS[name]
        payload = writer.simple_signing_payload(f"{HOSTS[name]}/{repo}", world.index)
        writer.write_legacy_signature(client, repo, world.index, payload, fake_sign(payload, key))
        for digest in world.platforms.values():
            writer.write_legacy_attestation(client, repo, digest, fake_envelope(
                f"{HOSTS[name]}/{repo}", digest, "https://cyclonedx.org/bom", {"bomFormat": "CycloneDX"}, key))


def sig_layers(world, name: str, digest: str) -> int:
    listed = listing(world.clients[name], REPOS[name], digest)
    return listed.signatures


def _no_password_anywhere(fake_cosign, events, *texts: str) -> None:
    assert events and fake_cosign.calls(), "nothing was captured: the check would prove nothing"
    for call in fake_cosign.calls():
        assert all(PASSWORD not in arg for arg in call["argv"]), call["argv"]
    for event in events:
        assert PASSWORD not in json.dumps(event, default=str), event
    for text in texts:
        assert PASSWORD not in text


def test_signs_the_index_and_attests_each_platform_in_every_registry(world, fake_cosign):
    ctx = world()
    with capture_logs() as events:
        out = Sign().run(ctx)
    assert out.count("signed") == 6 and out.count("present") == 0
    assert sorted((i.registry, i.kind, i.platform) for i in out.items) == sorted(
        (r, k, p) for r in ("a", "b") for k, p in (("signature", None), ("cyclonedx", "linux/amd64"),
                                                   ("cyclonedx", "linux/arm64")))
    refs = {i.ref for i in out.items}
    arm64 = world.platforms["linux/arm64"]
    assert f"localhost:5000/app@{world.index}" in refs and f"127.0.0.1:5001/team/app@{arm64}" in refs
    signs = [c for c in fake_cosign.calls() if c["argv"][0] in ("sign-blob", "attest")]
    assert len(signs) == 6
    assert all(c["password"] == PASSWORD for c in signs)              # by environment …
    assert all(c["docker_config"] is None for c in signs)             # and no registry credentials: no registry
    assert all("--tlog-upload=false" in c["argv"] for c in signs)
    assert all("--no-upload" in c["argv"] for c in signs if c["argv"][0] == "attest")
    verifies = [c for c in fake_cosign.calls() if c["argv"][0].startswith("verify")]
    assert verifies and all("--local-image" in c["argv"] for c in verifies)   # cosign never asks a registry
    for name in ("a", "b"):                                           # what our client wrote, in cosign's format
        assert sig_layers(world, name, world.index) == 1
        assert all(listing(world.clients[name], REPOS[name], d).attestations == {"https://cyclonedx.org/bom": 1}
                   for d in world.platforms.values())
    assert sorted(world.sboms) == sorted(world.platforms.values())   # once each, from the local image
    _no_password_anywhere(fake_cosign, events, repr(out), json.dumps(out.__dict__, default=str))  # … and nowhere else
    assert out.signer == f"key {world.key_dir / 'release.key'}" and out.format.startswith("tags sha256-<hex>.sig")


def test_recursive_also_signs_each_platform_manifest(world, fake_cosign):
    out = Sign().run(world({"recursive": True, "sbom": False}))
    assert sorted((i.registry, i.platform or "") for i in out.items if i.kind == "signature") == [
        ("a", ""), ("a", "linux/amd64"), ("a", "linux/arm64"), ("b", ""), ("b", "linux/amd64"), ("b", "linux/arm64")]
    assert "attest" not in fake_cosign.commands()


def test_what_our_key_already_signed_is_kept(world, fake_cosign):
    already_signed(world)
    out = Sign().run(world())
    assert out.count("present") == 6 and out.count("signed") == 0
    assert set(fake_cosign.commands()) == {"verify", "verify-attestation"}   # checked, never re-signed
    assert world.sboms == []                                                 # no SBOM needed either
    assert sig_layers(world, "a", world.index) == 1


def test_nothing_there_needs_no_check_before_signing(world, fake_cosign):
    Sign().run(world({"sbom": False}))
    assert sorted(fake_cosign.commands()) == ["sign-blob", "sign-blob", "verify", "verify"]   # sign, then prove it


def test_signatures_by_other_keys_get_ours_added(world, fake_cosign):
    already_signed(world, key="theirs")                               # someone else's: our verify says no
    out = Sign().run(world({"sbom": False}))
    assert {i.action for i in out.items} == {"signed"}
    assert sig_layers(world, "a", world.index) == 2                   # theirs kept, ours appended


def test_a_wrong_password_fails_with_exit_3_and_the_password_scrubbed(world, fake_cosign, monkeypatch):
    fake_cosign.control(FAKE_COSIGN_FAIL="sign")
    with capture_logs() as events, pytest.raises(InfraError) as exc:
        Sign().run(world())
    message = str(exc.value)
    assert exc.value.exit_code == 3
    assert message.startswith("signing failed in ") and "no release tag is written" in message
    assert "decrypt with *** failed" in message                 # the fake echoed it; proc scrubbed it
    _no_password_anywhere(fake_cosign, events, message)


def test_a_signature_that_does_not_verify_after_signing_is_an_error(world, fake_cosign, monkeypatch):
    fake_cosign.control(FAKE_COSIGN_VERIFY="fail")
    with pytest.raises(InfraError, match="does not verify with the configured public key"):
        Sign().run(world({"sbom": False}))


def test_a_public_key_of_another_pair_is_caught_before_signing(world, fake_cosign, tmp_path):
    other = tmp_path / "other.pub"
    other.write_text("-----BEGIN PUBLIC KEY-----\nOTHER\n-----END PUBLIC KEY-----\n")
    with pytest.raises(InfraError, match="is not the public key of sign.key"):
        Sign().run(world({"public_key": str(other)}))
    assert "sign-blob" not in fake_cosign.commands()


def test_unreadable_key_and_missing_password_are_exit_3(world, fake_cosign, tmp_path):
    with pytest.raises(InfraError, match="cannot read the signing key .*nope.key .no such file"):
        Sign().run(world({"key": str(tmp_path / "nope.key")}))
    with pytest.raises(InfraError, match=r"not in \$COSIGN_PASSWORD"):
        Sign().run(world(env={}))
    assert fake_cosign.calls() == []


def test_an_empty_password_is_a_password(world, fake_cosign):
    Sign().run(world({"sbom": False}, env={"COSIGN_PASSWORD": ""}))
    assert {c["password"] for c in fake_cosign.calls() if c["argv"][0] == "sign-blob"} == {""}


def test_no_key_at_all_is_a_config_error(world, fake_cosign):
    ctx = world()
    ctx.config = config.parse({"image": {"name": "app"}, "registries": [{"name": "a", "url": "localhost:5000"},
                                                                        {"name": "b", "url": "127.0.0.1:5001"}]})
    with pytest.raises(ConfigError, match="no signing key configured"):
        Sign().run(ctx)
    assert "cannot sign: no [sign] key" in Sign().describe(ctx)


def test_env_key_is_passed_by_environment(world, fake_cosign):
    pem = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nsecret-key-material\n"
    derived = world.key_dir / "derived.pub"     # what the fake's `cosign public-key` derives
    derived.write_text("-----BEGIN PUBLIC KEY-----\nDERIVED\n-----END PUBLIC KEY-----\n")
    out = Sign().run(world({"key": "env://RELEASE_KEY", "public_key": str(derived),
                            "sbom": False},
                           env={"COSIGN_PASSWORD": PASSWORD, "RELEASE_KEY": pem}))
    assert out.count("signed") == 2
    signs = [c for c in fake_cosign.calls() if c["argv"][0] == "sign-blob"]
    assert all(c["argv"][c["argv"].index("--key") + 1] == "env://RELEASE_KEY" for c in signs)
    assert all("secret-key-material" not in " ".join(c["argv"]) for c in fake_cosign.calls())


def test_describe_names_the_development_key(world, fake_cosign):
    ctx = world({"key": ".pipeline/does-not-exist/cosign.key"})
    assert "a development key generated now at .pipeline/does-not-exist/cosign.key" in Sign().describe(ctx)
    ctx = world()
    text = Sign().describe(ctx)
    assert "sign the index by digest in a, b" in text and "no second signature" in text


def test_development_key_password_file_wins_over_the_shell(tmp_path):
    key = tmp_path / ".pipeline" / "cosign.key"
    key.parent.mkdir()
    key.write_text("k")
    keys.password_file(key).write_text("dev-password-123")
    cfg = config.parse({"image": {"name": "a"}, "sign": {"key": str(key)}}).sign
    ref = refs.parse_key_ref(str(key))
    assert keys.read_password(cfg, ref, {"COSIGN_PASSWORD": "for-a-real-key"}) == "dev-password-123"
    plain = tmp_path / "release.key"
    assert keys.read_password(cfg, refs.parse_key_ref(str(plain)), {"COSIGN_PASSWORD": ""}) == ""
    assert keys.read_password(cfg, refs.parse_key_ref("awskms:///alias/x"), {}) is None
    no_env = config.parse({"image": {"name": "a"}, "sign": {"key": str(plain), "password_env": None}}).sign
    assert keys.read_password(no_env, refs.parse_key_ref(str(plain)), {}) == ""


def test_development_key_is_generated_on_first_use(tmp_path, fake_cosign):
    key = tmp_path / "proj" / ".pipeline" / "cosign.key"
    cfg = config.parse({"image": {"name": "a"}, "sign": {"key": str(key)}}).sign
    with capture_logs() as events:
        signer = keys.signer(cfg, {"COSIGN_PASSWORD": PASSWORD}, cosign.Cosign())
    password = keys.password_file(key).read_text()
    assert signer.development and signer.env["COSIGN_PASSWORD"] == password != PASSWORD
    assert stat.S_IMODE(keys.password_file(key).stat().st_mode) == 0o600
    assert (tmp_path / "proj" / ".pipeline" / ".gitignore").read_text().endswith("*\n")
    call = fake_cosign.calls()[0]
    assert call["argv"] == ["generate-key-pair", "--output-key-prefix", str(key.with_suffix(""))]
    assert call["password"] == password
    assert [e["event"] for e in events] == ["sign.development_key_generated", "sign.development_key"]
    assert all(e["log_level"] == "warning" and "DEVELOPMENT" in e["note"] for e in events)
    assert all(password not in json.dumps(e) for e in events) and password not in repr(signer)
    with capture_logs() as events:
        keys.signer(cfg, {}, cosign.Cosign())        # second use: nothing generated, still a warning
    assert len(fake_cosign.calls()) == 1 and [e["event"] for e in events] == ["sign.development_key"]


def test_verifying_never_generates_a_development_key(tmp_path, fake_cosign):
    key = tmp_path / ".pipeline" / "cosign.key"
    cfg = config.parse({"image": {"name": "a"}, "sign": {"key": str(key), "tlog_upload": False}}).sign
    with pytest.raises(InfraError, match="nothing to verify with"):
        keys.verifier(cfg, {}, 2, tmp_path)
    assert not key.parent.exists() and fake_cosign.calls() == []


def test_verifier_public_key_sources(tmp_path, fake_cosign):
    key = tmp_path / "release.key"
    key.write_text("k")
    base = {"image": {"name": "a"}}
    sign = config.parse({**base, "sign": {"key": str(key)}}).sign
    v = keys.verifier(sign, {"COSIGN_PASSWORD": PASSWORD}, 3, tmp_path)       # no .pub: derived, with the password
    assert v.key == str(tmp_path / "cosign.pub") and not v.ignore_tlog
    assert fake_cosign.calls()[-1]["argv"][:3] == ["public-key", "--key", str(key)]
    assert fake_cosign.calls()[-1]["password"] == PASSWORD
    key.with_suffix(".pub").write_text("pub")
    assert keys.verifier(sign, {}, 2, tmp_path).key == str(key.with_suffix(".pub"))   # next to the key
    kms = config.parse({**base, "sign": {"key": "awskms:///alias/k", "tlog_upload": False}}).sign
    v = keys.verifier(kms, {}, 2, tmp_path, allow_http=True)
    assert (v.key, v.ignore_tlog, v.allow_http) == ("awskms:///alias/k", True, True)
    keyless = config.parse({**base, "sign": {"keyless": True, "identity_regexp": "^https://github.com/acme/",
                                             "issuer": "https://token.actions.githubusercontent.com"}}).sign
    v = keys.verifier(keyless, {}, 2, tmp_path)
    assert (v.key, v.identity_regexp, v.issuer) == (None, "^https://github.com/acme/",
                                                    "https://token.actions.githubusercontent.com")


def test_cosign_gets_the_cloud_credentials_of_its_own_kms_only():
    from pipeline.refs import parse_key_ref
    from pipeline.sign import keys

    env = {"AWS_SECRET_ACCESS_KEY": "a", "GOOGLE_APPLICATION_CREDENTIALS": "/g.json", "VAULT_TOKEN": "v",
           "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "o", "SIGSTORE_REKOR_URL": "https://rekor", "GHCR_TOKEN": "r"}
    assert keys.passthrough_env(env, parse_key_ref("cosign.key")) == {"SIGSTORE_REKOR_URL": "https://rekor"}
    assert set(keys.passthrough_env(env, parse_key_ref("awskms:///alias/release"))) == {"AWS_SECRET_ACCESS_KEY",
                                                                                     "SIGSTORE_REKOR_URL"}
    assert set(keys.passthrough_env(env, parse_key_ref("hashivault://release"))) == {"VAULT_TOKEN", "SIGSTORE_REKOR_URL"}
    assert set(keys.passthrough_env(env, None)) == {"ACTIONS_ID_TOKEN_REQUEST_TOKEN", "SIGSTORE_REKOR_URL"}
    assert "GHCR_TOKEN" not in keys.passthrough_env(env)
