"""cosign: pure argv builders, one runner, output parsers. cosign only signs and verifies here.

Every command line comes from a pure function (tested by equality) and runs
through :func:`pipeline.tools.proc.run`. The key password reaches cosign only as
``COSIGN_PASSWORD`` in the child's environment (never argv), and stdin is always
given (empty) so cosign never waits for a password on it.

cosign major versions differ in defaults (specs/cosign.md §0, §5):

* **v2** writes the legacy format: a manifest tagged ``sha256-<hex>.sig`` (one
  layer per signature) and ``sha256-<hex>.att`` (one DSSE layer per attestation)
  in the image's repository. ``--tlog-upload=false`` turns the Rekor upload off.
* **v3** writes Sigstore bundles as OCI 1.1 referrers (fallback index tag
  ``sha256-<hex>`` on registries without the referrers API). Its TUF signing
  config rejects ``--tlog-upload=false``, so a private setup passes
  ``--use-signing-config=false --tlog-upload=false``.

cosign never talks to a registry in a release (specs/cosign-offline.md): it signs blobs and
statements offline (``sign-blob``, ``attest-blob --statement``, ``attest --no-upload`` on a digest
reference, which makes no registry request) and the project's registry client writes the
artifacts (:mod:`pipeline.sign.writer`); it verifies a local OCI layout that the client filled
(``verify --local-image``, :mod:`pipeline.sign.layouts`). So every registry request of signing
and verifying retries under the one policy. With the tlog off, verifiers pass
``--insecure-ignore-tlog=true``.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ToolError
from pipeline.tools import proc

COSIGN = "cosign"
MIN_MAJOR = 2
LATEST_KNOWN_MAJOR = 3

#: ``cosign attest --type`` names → the predicate type URI stored with the attestation (specs/cosign.md §7)
PREDICATE_TYPES = {
    "cyclonedx": "https://cyclonedx.org/bom",
    "spdxjson": "https://spdx.dev/Document",
    "vuln": "https://cosign.sigstore.dev/attestation/vuln/v1",
    "custom": "https://cosign.sigstore.dev/attestation/v1",
}
#: what ``cosign sign`` v3 signs (an in-toto statement with this predicate type)
SIGN_PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"

#: cosign's stderr phrases (and legacy exit codes 10–13) that mean "verification said no", not "broken"
_POLICY_PHRASES = ("no signatures found", "no matching signatures", "no matching attestations",
                   "none of the attestations matched", "no certificate found", "invalid signature",
                   "signature mismatch", "verifying signature", "failed to verify", "error verifying",
                   "claims", "image tag not found", "could not find", "no attestations", "subject")
_INFRA_PHRASES = ("connection refused", "no such host", "i/o timeout", "tls:", "dial tcp", "unauthorized",
                  "denied", "unexpected status code 5", "context deadline exceeded", "eof")


# --------------------------------------------------------------------------- versions and key references


def leading_major(version: str | None) -> int:
    """``"2.5.0"`` → 2, ``"v3.1.2"`` → 3, ``"2"`` → 2 (all a ``devel`` build's behaviour tells); 0 when
    ``version`` says nothing."""
    m = re.match(r"^v?(\d+)", (version or "").strip())
    return int(m.group(1)) if m else 0


def major_version(version: str | None) -> int:
    """:func:`leading_major`, where a version older than v2 or unknown is a ToolError."""
    major = leading_major(version)
    if not major:
        raise ToolError("cosign: cannot tell its version (run 'pipeline doctor')", tool=COSIGN)
    if major < MIN_MAJOR:
        raise ToolError(f"cosign: version {version} is too old; v{MIN_MAJOR} or later is needed", tool=COSIGN)
    return major


def help_major(sign_help: str) -> int:
    """The major version from ``cosign sign --help`` itself, for builds whose ``cosign version`` says
    ``devel`` (Debian's): v3 defaults ``--use-signing-config`` to true (its help lists
    ``--use-signing-config=true:``), 2.6 has the flag defaulting to false, older v2 lack it but have
    ``--tlog-upload``."""
    for line in sign_help.splitlines():
        if "--use-signing-config" in line and "cosign sign" not in line:   # the flag, not a usage example
            return 3 if ("--use-signing-config=true" in line or "(default true)" in line) else 2
    return 2 if "--tlog-upload" in sign_help else 1


def parse_version(text: str) -> str | None:
    """``cosign version``: ``GitVersion: v2.5.0``; ``None`` for a ``devel`` build (Debian's)."""
    m = re.search(r"^GitVersion:\s*v?(\S+)", text, re.MULTILINE) or re.search(r'"gitVersion":\s*"v?([^"]+)"', text)
    if not m or not re.match(r"\d+\.\d+", m.group(1)):
        return None
    return m.group(1)


@functools.cache
def installed_major() -> int:
    """The installed cosign's major version: its own ``cosign version`` when that names one, else what its
    ``sign --help`` shows (never a package manager's word about some other file)."""
    if proc.which(COSIGN) is None:
        raise ToolError("cosign is not installed; run 'pipeline doctor' to see how to install it", tool=COSIGN)
    out = proc.run([COSIGN, "version"], check=False, timeout=60, what="cosign version")
    version = parse_version(out.stdout + "\n" + out.stderr)
    if version:
        return major_version(version)
    sign_help = proc.run([COSIGN, "sign", "--help"], check=False, timeout=60, what="cosign sign --help")
    return major_version(str(help_major(sign_help.stdout + sign_help.stderr)))


# --------------------------------------------------------------------------- argv builders (pure)


@dataclass(frozen=True)
class Signing:
    """What a signing command needs besides the reference: the key (None = keyless) and the flags."""

    major: int
    key: str | None                 # the --key argument; None for keyless
    tlog_upload: bool | None = None  # None: cosign's default (upload)
    allow_http: bool = False


@dataclass(frozen=True)
class Verifying:
    """How to verify: a public key reference, or a keyless identity and issuer."""

    major: int
    key: str | None = None
    identity: str | None = None
    identity_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None
    ignore_tlog: bool = False
    allow_http: bool = False


def _registry_flags(allow_http: bool) -> list[str]:
    return ["--allow-http-registry=true", "--allow-insecure-registry=true"] if allow_http else []


def _tlog_flags(major: int, tlog_upload: bool | None) -> list[str]:
    if tlog_upload is not False:
        return []
    if major >= 3:  # the TUF signing config refuses --tlog-upload=false (specs/cosign.md §5)
        return ["--use-signing-config=false", "--tlog-upload=false"]
    return ["--tlog-upload=false"]


def sign_argv(ref: str, s: Signing, *, annotations: Mapping[str, str] | None = None,
              recursive: bool = False) -> list[str]:
    """``cosign sign --yes [--key K] … ref@digest`` (never a tag: the reference must carry a digest)."""
    _need_digest(ref)
    argv = [COSIGN, "sign", "--yes"]
    if s.key:
        argv += ["--key", s.key]
    argv += _tlog_flags(s.major, s.tlog_upload)
    argv += _registry_flags(s.allow_http)
    if recursive:
        argv.append("--recursive")
    for k, v in sorted((annotations or {}).items()):
        argv += ["-a", f"{k}={v}"]
    return argv + [ref]


def attest_argv(ref: str, predicate_path: str, s: Signing, *, predicate_type: str = "cyclonedx") -> list[str]:
    """``cosign attest --yes --type T --predicate FILE [--key K] … ref@digest``."""
    _need_digest(ref)
    argv = [COSIGN, "attest", "--yes", "--type", predicate_type, "--predicate", predicate_path]
    if s.key:
        argv += ["--key", s.key]
    argv += _tlog_flags(s.major, s.tlog_upload)
    argv += _registry_flags(s.allow_http)
    return argv + [ref]


def _key_flags(s: Signing) -> list[str]:
    return (["--key", s.key] if s.key else []) + _tlog_flags(s.major, s.tlog_upload)


def sign_blob_argv(payload: str, s: Signing, *, output_signature: str, bundle: str | None = None,
                   output_certificate: str | None = None) -> list[str]:
    """cosign v2 ``sign-blob``: the signature of a simple-signing payload (the same scheme ``cosign sign``
    uses for a ``.sig`` layer), written to ``output_signature`` (base64). ``bundle`` (cosign's legacy
    bundle file) carries the Rekor entry when the tlog is on; ``output_certificate`` the keyless cert."""
    argv = [COSIGN, "sign-blob", "--yes", *_key_flags(s), "--output-signature", output_signature]
    if bundle:
        argv += ["--bundle", bundle]
    if output_certificate:
        argv += ["--output-certificate", output_certificate]
    return argv + [payload]


def attest_blob_argv(statement: str, s: Signing, *, bundle: str) -> list[str]:
    """cosign v3 ``attest-blob --statement``: a Sigstore bundle (DSSE) over our in-toto statement, exactly
    what ``cosign sign`` v3 puts in its referrer (``sign`` itself would read the registry)."""
    return [COSIGN, "attest-blob", "--yes", *_key_flags(s), "--statement", statement, "--bundle", bundle]


def attest_offline_argv(ref: str, predicate_path: str, s: Signing, *, predicate_type: str,
                        bundle: str | None = None) -> list[str]:
    """``cosign attest --no-upload`` on a digest reference (no registry request at all): v2 prints the DSSE
    envelope of the ``.att`` layer on stdout; v3 writes the referrer's bundle to ``bundle``."""
    _need_digest(ref)
    argv = [COSIGN, "attest", "--yes", "--no-upload", "--type", predicate_type, "--predicate", predicate_path,
            *_key_flags(s)]
    if bundle:
        argv += ["--bundle", bundle]
    return argv + [ref]


def verify_local_argv(layout: str, v: Verifying, *, predicate_type: str | None = None) -> list[str]:
    """``cosign verify --local-image DIR`` (or ``verify-attestation --type T``): a layout our client filled
    with the image manifest and its artifacts; no registry is asked."""
    if predicate_type:
        return [COSIGN, "verify-attestation", "--local-image", "--type", predicate_type, *_verify_flags(v),
                "--output", "json", layout]
    return [COSIGN, "verify", "--local-image", *_verify_flags(v), "--output", "json", layout]


def _verify_flags(v: Verifying) -> list[str]:
    out: list[str] = []
    if v.key:
        out += ["--key", v.key]
    else:
        if v.identity:
            out += ["--certificate-identity", v.identity]
        if v.identity_regexp:
            out += ["--certificate-identity-regexp", v.identity_regexp]
        if v.issuer:
            out += ["--certificate-oidc-issuer", v.issuer]
        if v.issuer_regexp:
            out += ["--certificate-oidc-issuer-regexp", v.issuer_regexp]
        if not (v.identity or v.identity_regexp) or not (v.issuer or v.issuer_regexp):
            raise ValueError("keyless verification needs an identity and an issuer")
    if v.ignore_tlog:
        out.append("--insecure-ignore-tlog=true")
    return out + _registry_flags(v.allow_http)


def verify_argv(ref: str, v: Verifying) -> list[str]:
    """``cosign verify … -o json ref`` (stdout: a JSON array of verified payloads)."""
    return [COSIGN, "verify", *_verify_flags(v), "--output", "json", ref]


def verify_attestation_argv(ref: str, v: Verifying, *, predicate_type: str = "cyclonedx") -> list[str]:
    """``cosign verify-attestation --type T …`` (stdout: one DSSE envelope per verified attestation)."""
    return [COSIGN, "verify-attestation", "--type", predicate_type, *_verify_flags(v), "--output", "json", ref]


def generate_key_pair_argv(prefix: str) -> list[str]:
    """``cosign generate-key-pair --output-key-prefix P`` writes P.key (0600) and P.pub."""
    return [COSIGN, "generate-key-pair", "--output-key-prefix", prefix]


def public_key_argv(key: str, outfile: str) -> list[str]:
    return [COSIGN, "public-key", "--key", key, "--outfile", outfile]


def _need_digest(ref: str) -> None:
    if "@sha256:" not in ref:
        raise ValueError(f"{ref}: cosign signs by digest here, never by tag")


# --------------------------------------------------------------------------- parsers (pure)


@dataclass(frozen=True)
class Verified:
    """The outcome of a verify command: ok, what it verified, and the reason when not."""

    ok: bool
    payloads: tuple[dict[str, Any], ...] = ()
    reason: str = ""

    @property
    def count(self) -> int:
        return len(self.payloads)


def parse_verify_output(stdout: str) -> list[dict[str, Any]]:
    """``cosign verify -o json``: a JSON array of simple-signing payloads (one line; more lines tolerated)."""
    out: list[dict[str, Any]] = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith(("[", "{")):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        out.extend(x for x in (data if isinstance(data, list) else [data]) if isinstance(x, dict))
    return out


def parse_attestation_output(stdout: str) -> list[dict[str, Any]]:
    """``cosign verify-attestation``: one DSSE envelope per line; returns the decoded in-toto statements."""
    out: list[dict[str, Any]] = []
    for envelope in parse_verify_output(stdout):
        payload = envelope.get("payload")
        if not isinstance(payload, str):
            continue
        try:
            raw = base64.b64decode(payload + "=" * (-len(payload) % 4))
            statement = json.loads(raw)
        except ValueError:
            continue
        if isinstance(statement, dict):
            out.append(statement)
    return out


def legacy_annotations(bundle_path: str, cert_path: str) -> dict[str, str]:
    """The ``.sig`` layer annotations cosign v2 adds beside the signature: the keyless certificate
    (``dev.sigstore.cosign/certificate``, its ``chain``) and the Rekor bundle (``dev.sigstore.cosign/bundle``),
    from what ``sign-blob`` wrote (specs/cosign.md §1.3)."""
    out: dict[str, str] = {}
    try:
        data = json.loads(Path(bundle_path).read_text())
    except (OSError, ValueError):
        data = {}
    rekor = data.get("rekorBundle") if isinstance(data, dict) else None
    if isinstance(rekor, dict) and rekor:
        out["dev.sigstore.cosign/bundle"] = json.dumps(rekor, separators=(",", ":"))
    cert = ""
    try:
        cert = Path(cert_path).read_text()
    except OSError:
        raw = data.get("cert") if isinstance(data, dict) else None
        if isinstance(raw, str) and raw:
            try:
                cert = base64.b64decode(raw).decode()
            except ValueError:
                cert = ""
    if "BEGIN CERTIFICATE" in cert:
        out["dev.sigstore.cosign/certificate"] = cert
        out["dev.sigstore.cosign/chain"] = ""
    return out


def failure_reason(stderr: str) -> str:
    """The line of cosign's stderr that says why (its ``Error: …`` line, else the last line)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("Error:"):
            return ln.removeprefix("Error:").strip().rstrip(":").strip()
    return lines[-1] if lines else ""


def is_policy_failure(returncode: int, stderr: str) -> bool:
    """A verify that said no (exit 1 in this project) versus one that could not ask (exit 3). Only what
    cosign says when a verification fails counts as "no"; an error we do not recognise is a broken tool or
    registry (exit 3), never a verdict."""
    if returncode in (10, 11, 12, 13):  # legacy path exit codes (specs/cosign.md §6.1)
        return True
    text = stderr.lower()
    if any(p in text for p in _INFRA_PHRASES):
        return False
    return any(p in text for p in _POLICY_PHRASES)


# --------------------------------------------------------------------------- runner


@dataclass
class Cosign:
    """Runs cosign with one environment (registry credentials, the key password) for a whole stage."""

    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 300

    def run(self, argv: Sequence[str], what: str, *, check: bool = True) -> proc.Completed:
        return proc.run(argv, env=self.env, input="", timeout=self.timeout, check=check, what=what)

    def sign(self, ref: str, s: Signing, *, what: str) -> None:
        self.run(sign_argv(ref, s), what)

    def attest(self, ref: str, predicate_path: str, s: Signing, *, predicate_type: str, what: str) -> None:
        self.run(attest_argv(ref, predicate_path, s, predicate_type=predicate_type), what)

    def verify(self, ref: str, v: Verifying, *, what: str) -> Verified:
        return self._verify(verify_argv(ref, v), what, parse_verify_output)

    def verify_attestations(self, ref: str, v: Verifying, *, predicate_type: str, what: str) -> Verified:
        return self._verify(verify_attestation_argv(ref, v, predicate_type=predicate_type), what,
                            parse_attestation_output)

    def _verify(self, argv: list[str], what: str, parse: Any) -> Verified:
        r = self.run(argv, what, check=False)
        if r.returncode == 0:
            return Verified(True, tuple(parse(r.stdout)))
        reason = failure_reason(r.stderr) or f"exit status {r.returncode}"
        if not is_policy_failure(r.returncode, r.stderr):
            raise ToolError(f"{what}: cosign failed: {reason}", tool=COSIGN, returncode=r.returncode,
                            stderr=r.stderr)
        return Verified(False, (), reason)

    def sign_blob(self, payload: str, s: Signing, *, workdir: str, what: str) -> tuple[str, dict[str, str]]:
        """(base64 signature, extra layer annotations: certificate, chain, Rekor bundle) for a payload."""
        sig, bundle, cert = (str(Path(workdir) / n) for n in ("blob.sig", "blob.bundle", "blob.crt"))
        self.run(sign_blob_argv(payload, s, output_signature=sig, bundle=bundle,
                                output_certificate=None if s.key else cert), what)
        return Path(sig).read_text().strip(), legacy_annotations(bundle, cert)

    def attest_blob(self, statement: str, s: Signing, *, workdir: str, what: str) -> bytes:
        bundle = str(Path(workdir) / "statement.bundle.json")
        self.run(attest_blob_argv(statement, s, bundle=bundle), what)
        return Path(bundle).read_bytes()

    def attest_offline(self, ref: str, predicate_path: str, s: Signing, *, predicate_type: str, workdir: str,
                       what: str) -> bytes:
        """v2: the DSSE envelope (stdout); v3: the bundle."""
        bundle = str(Path(workdir) / "attestation.bundle.json") if s.major >= 3 else None
        r = self.run(attest_offline_argv(ref, predicate_path, s, predicate_type=predicate_type, bundle=bundle), what)
        if bundle:
            return Path(bundle).read_bytes()
        envelope = next((ln.strip() for ln in r.stdout.splitlines() if ln.strip().startswith("{")), "")
        if not envelope:
            raise ToolError(f"{what}: cosign printed no attestation envelope", tool=COSIGN)
        return envelope.encode()

    def verify_local(self, layout: str, v: Verifying, *, predicate_type: str | None = None, what: str) -> Verified:
        parse = parse_attestation_output if predicate_type else parse_verify_output
        return self._verify(verify_local_argv(layout, v, predicate_type=predicate_type), what, parse)

    def generate_key_pair(self, prefix: str, *, what: str = "cosign generate-key-pair") -> None:
        self.run(generate_key_pair_argv(prefix), what)

    def public_key(self, key: str, outfile: str, *, what: str = "cosign public-key") -> None:
        self.run(public_key_argv(key, outfile), what)
