"""cosign: argv builders (by equality), version-dependent flags, key references, output parsers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import refs
from pipeline.errors import ToolError
from pipeline.tools import cosign as c
from pipeline.tools.cosign import Signing, Verifying

DATA = Path(__file__).resolve().parents[1] / "data" / "cosign"
DIGEST = "sha256:" + "ab" * 32
REF = f"127.0.0.1:5000/team/app@{DIGEST}"


def rec(name: str) -> str:
    return (DATA / name).read_text()


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize("text,major", [("2.5.0", 2), ("v2.4.1", 2), ("3.1.2", 3), ("v3.0.0-rc.1", 3), ("2", 2),
                                        ("4.0.0", 4)])
def test_major_version(text, major):
    assert c.major_version(text) == major


@pytest.mark.parametrize("text", [None, "", "devel", "1.13.1"])
def test_major_version_unknown_or_too_old_is_a_tool_error(text):
    with pytest.raises(ToolError) as exc:
        c.major_version(text)
    assert "cosign" in str(exc.value)


# --------------------------------------------------------------------------- key references


@pytest.mark.parametrize("text,kind,arg", [
    ("cosign.key", "file", "cosign.key"),
    (".pipeline/cosign.key", "file", ".pipeline/cosign.key"),
    ("/abs/path/release.key", "file", "/abs/path/release.key"),
    ("env://COSIGN_PRIVATE_KEY", "env", "env://COSIGN_PRIVATE_KEY"),
    ("awskms:///alias/release", "kms", "awskms:///alias/release"),
    ("awskms://localhost:4566/arn:aws:kms:us-east-1:000000000000:key/1234", "kms",
     "awskms://localhost:4566/arn:aws:kms:us-east-1:000000000000:key/1234"),
    ("gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k", "kms",
     "gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k"),
    ("azurekms://vault.vault.azure.net/release", "kms", "azurekms://vault.vault.azure.net/release"),
    ("hashivault://release", "kms", "hashivault://release"),
])
def test_key_references(text, kind, arg):
    ref = refs.parse_key_ref(text)
    assert (ref.kind, ref.arg) == (kind, arg)


def test_public_key_may_be_a_url_but_a_private_key_may_not():
    assert refs.parse_key_ref("https://example.com/cosign.pub", public=True).kind == "url"
    with pytest.raises(ValueError, match="unsupported key reference"):
        refs.parse_key_ref("https://example.com/cosign.key")


@pytest.mark.parametrize("text,message", [
    ("k8s://ns/secret", "unsupported key reference"),
    ("env://", "environment variable name"),
    ("env://NOT-A-NAME", "environment variable name"),
    ("awskms://", "names no key"),
    ("   ", "empty"),
])
def test_bad_key_references(text, message):
    with pytest.raises(ValueError, match=message):
        refs.parse_key_ref(text)


def test_kms_description_is_short():
    long = "gcpkms://projects/" + "x" * 80
    assert refs.parse_key_ref(long).describe() == "gcpkms://…"
    assert refs.parse_key_ref("env://K").describe() == "env://K"


# --------------------------------------------------------------------------- sign / attest argv


def test_sign_v2_with_a_key_and_no_tlog():
    assert c.sign_argv(REF, Signing(2, "cosign.key", tlog_upload=False, allow_http=True)) == [
        "cosign", "sign", "--yes", "--key", "cosign.key", "--tlog-upload=false",
        "--allow-http-registry=true", "--allow-insecure-registry=true", REF]


def test_sign_v3_without_tlog_turns_the_signing_config_off():
    # v3's TUF signing config rejects --tlog-upload=false (specs/cosign.md §5)
    assert c.sign_argv(REF, Signing(3, "cosign.key", tlog_upload=False)) == [
        "cosign", "sign", "--yes", "--key", "cosign.key", "--use-signing-config=false", "--tlog-upload=false", REF]


@pytest.mark.parametrize("major", [2, 3])
@pytest.mark.parametrize("tlog", [None, True])
def test_sign_with_the_tlog_adds_no_flag(major, tlog):
    assert c.sign_argv(REF, Signing(major, "awskms:///alias/k", tlog_upload=tlog)) == [
        "cosign", "sign", "--yes", "--key", "awskms:///alias/k", REF]


def test_sign_keyless_has_no_key_flag():
    assert c.sign_argv(REF, Signing(2, None)) == ["cosign", "sign", "--yes", REF]


def test_sign_recursive_and_annotations_are_sorted():
    argv = c.sign_argv(REF, Signing(2, "k.key"), annotations={"b": "2", "a": "1=x"}, recursive=True)
    assert argv == ["cosign", "sign", "--yes", "--key", "k.key", "--recursive", "-a", "a=1=x", "-a", "b=2", REF]


def test_sign_refuses_a_tag():
    with pytest.raises(ValueError, match="by digest"):
        c.sign_argv("127.0.0.1:5000/team/app:1.2.3", Signing(2, "k.key"))
    with pytest.raises(ValueError, match="by digest"):
        c.attest_argv("127.0.0.1:5000/team/app:latest", "sbom.json", Signing(2, "k.key"))


@pytest.mark.parametrize("major,tlog", [(2, ["--tlog-upload=false"]),
                                        (3, ["--use-signing-config=false", "--tlog-upload=false"])])
def test_attest_cyclonedx(major, tlog):
    assert c.attest_argv(REF, "/tmp/sbom.cdx.json", Signing(major, "env://K", tlog_upload=False)) == [
        "cosign", "attest", "--yes", "--type", "cyclonedx", "--predicate", "/tmp/sbom.cdx.json",
        "--key", "env://K", *tlog, REF]


def test_attest_vuln_type():
    assert c.attest_argv(REF, "v.json", Signing(2, None), predicate_type="vuln")[:6] == [
        "cosign", "attest", "--yes", "--type", "vuln", "--predicate"]


# --------------------------------------------------------------------------- verify argv


def test_verify_with_a_key_without_tlog():
    assert c.verify_argv(REF, Verifying(2, "cosign.pub", ignore_tlog=True)) == [
        "cosign", "verify", "--key", "cosign.pub", "--insecure-ignore-tlog=true", "--output", "json", REF]


@pytest.mark.parametrize("major", [2, 3])
def test_verify_is_the_same_line_for_both_majors(major):
    # v3 reads bundles and falls back to .sig tags on its own; v2 reads .sig tags
    assert c.verify_argv(REF, Verifying(major, "k.pub")) == ["cosign", "verify", "--key", "k.pub", "--output",
                                                              "json", REF]


def test_verify_keyless_identity_and_issuer():
    v = Verifying(2, identity_regexp="^https://github.com/acme/app/", issuer="https://token.actions.githubusercontent.com",
                  allow_http=True)
    assert c.verify_argv(REF, v) == [
        "cosign", "verify", "--certificate-identity-regexp", "^https://github.com/acme/app/",
        "--certificate-oidc-issuer", "https://token.actions.githubusercontent.com",
        "--allow-http-registry=true", "--allow-insecure-registry=true", "--output", "json", REF]


def test_verify_keyless_needs_both():
    with pytest.raises(ValueError, match="identity and an issuer"):
        c.verify_argv(REF, Verifying(2, identity="me@example.com"))


def test_verify_attestation_names_the_type():
    assert c.verify_attestation_argv(REF, Verifying(2, "k.pub", ignore_tlog=True)) == [
        "cosign", "verify-attestation", "--type", "cyclonedx", "--key", "k.pub", "--insecure-ignore-tlog=true",
        "--output", "json", REF]


def test_key_pair_argv():
    assert c.generate_key_pair_argv(".pipeline/cosign") == ["cosign", "generate-key-pair", "--output-key-prefix",
                                                            ".pipeline/cosign"]
    assert c.public_key_argv("env://K", "/tmp/k.pub") == ["cosign", "public-key", "--key", "env://K", "--outfile",
                                                          "/tmp/k.pub"]


# --------------------------------------------------------------------------- parsers (recorded output)


def test_parse_verify_output_recorded():
    payloads = c.parse_verify_output(rec("verify_stdout.json"))
    assert len(payloads) == 1
    critical = payloads[0]["critical"]
    assert critical["type"] == "cosign container image signature"
    assert critical["image"]["docker-manifest-digest"].startswith("sha256:")


def test_parse_attestation_output_recorded_two_envelopes():
    statements = c.parse_attestation_output(rec("verify_attestation_stdout.jsonl"))
    assert len(statements) == 2
    for s in statements:
        assert s["_type"] == "https://in-toto.io/Statement/v0.1"
        assert s["predicateType"] == "https://cyclonedx.org/bom"
        assert s["predicate"]["bomFormat"] == "CycloneDX"


def test_parsers_ignore_noise():
    assert c.parse_verify_output("Verification for x --\nnot json\n[{\"a\": 1}]\n{broken") == [{"a": 1}]
    assert c.parse_attestation_output('{"payload": "!!!"}\n{"payloadType": "x"}') == []


@pytest.mark.parametrize("name,reason,policy", [
    ("verify_wrong_key_stderr.txt",
     "no matching signatures: invalid signature when validating ASN.1 encoded signature", True),
    ("verify_unsigned_stderr.txt", "no signatures found", True),
    ("verify_attestation_wrong_key_stderr.txt",
     "no matching attestations: accepted signatures do not match threshold, Found: 0, Expected 1", True),
    ("verify_unreachable_stderr.txt", None, False),
])
def test_failure_reason_and_policy_classification(name, reason, policy):
    text = rec(name)
    code = {"verify_wrong_key_stderr.txt": 12, "verify_unsigned_stderr.txt": 10}.get(name, 1)
    if reason:
        assert c.failure_reason(text) == reason
    assert c.is_policy_failure(code, text) is policy


@pytest.mark.parametrize("stderr", ["panic: runtime error: invalid memory address", "Error: open /tmp/x: no such file",
                                    "Error: unknown flag: --local-image", ""])
def test_an_error_cosign_does_not_say_is_a_verdict_is_a_broken_tool(stderr):
    """exit 1 with a message we do not recognise: exit 3 (the tool is broken), never "the signature is bad"."""
    assert c.is_policy_failure(1, stderr) is False


def test_failure_reason_falls_back_to_the_last_line():
    assert c.failure_reason("one\ntwo\n\n") == "two"
    assert c.failure_reason("") == ""


def test_the_major_version_comes_from_the_binary_when_it_says_devel():
    """Debian's cosign 3.1.1 says GitVersion devel; its sign --help (recorded) shows what it is."""
    data = Path(__file__).resolve().parents[1] / "data" / "cosign"
    assert c.help_major((data / "sign_help_v3.1.1.txt").read_text()) == 3
    assert c.help_major((data / "sign_help_v2.5.0.txt").read_text()) == 2
    assert c.help_major("      --use-signing-config   whether to use … (default false)\n      --tlog-upload") == 2
    assert c.parse_version("GitVersion:    devel\n") is None and c.parse_version("GitVersion: v3.1.2\n") == "3.1.2"
