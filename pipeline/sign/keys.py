"""Signing keys: what cosign needs to sign and to verify, the development key, ``keygen``.

``[sign] key`` is a file path, ``env://VAR`` (the PEM text is in the variable), a KMS URI
(``awskms://``, ``gcpkms://``, ``azurekms://``, ``hashivault://``: passed to cosign as they are,
cloud credentials from the environment), or ``keyless = true`` (the CI's OIDC identity token:
Fulcio certificate + Rekor).

The password of a file or ``env://`` key is read from the variable ``[sign] password_env`` names
(``COSIGN_PASSWORD``; set-but-empty is a valid empty password) and handed to cosign in its
environment only: never argv, never a log line, registered with the redaction so that no error
text can carry it either.

**Development key.** A key path inside a ``.pipeline/`` folder (git-ignored; the embedded default
config uses ``.pipeline/cosign.key``) that does not exist yet is generated on first use, with a
random password stored next to it as ``cosign.password`` (mode 0600): the key file is encrypted like
any cosign key, the password file is what marks it as a development key, and a wrong
``COSIGN_PASSWORD`` in the shell (meant for a real key) cannot get in the way. Every use logs a
``sign.development_key`` warning: such signatures prove only that this machine signed. Releases
that matter name a real key (``pipeline keygen``, a KMS URI) or sign keyless.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import log
from pipeline.config import SignConfig
from pipeline.errors import ConfigError, InfraError, UsageError
from pipeline.refs import KeyRef, parse_key_ref
from pipeline.tools import cosign

DEV_DIR = ".pipeline"
PASSWORD_SUFFIX = ".password"
#: what cosign may need of our environment besides the password, by key kind: Sigstore and TUF settings
#: always; the KMS's own credentials for a KMS key; the CI's OIDC token request for keyless
SIGSTORE_PREFIXES = ("SIGSTORE_", "TUF_")
KMS_PREFIXES = {"awskms://": ("AWS_",), "gcpkms://": ("GOOGLE_", "GCP_", "CLOUDSDK_"), "azurekms://": ("AZURE_",),
                "hashivault://": ("VAULT_",)}
KEYLESS_PREFIXES = ("ACTIONS_ID_TOKEN_",)
PASSTHROUGH_PREFIXES = (*SIGSTORE_PREFIXES, *KEYLESS_PREFIXES, *(p for ps in KMS_PREFIXES.values() for p in ps))
DEV_WARNING = ("signing with a DEVELOPMENT key generated on this machine: its signatures prove nothing"
               " elsewhere; for real releases set [sign] key (pipeline keygen, a KMS URI) or keyless = true")


@dataclass(frozen=True)
class Signer:
    """The ``--key`` argument (None: keyless) and the environment cosign signs with."""

    key: str | None
    description: str
    development: bool = False
    env: Mapping[str, str] = field(default_factory=dict, repr=False)   # holds the password: never shown


def is_development_key(path: str | Path) -> bool:
    return DEV_DIR in Path(path).parts


def password_file(key_path: str | Path) -> Path:
    return Path(key_path).with_suffix(PASSWORD_SUFFIX)


def passthrough_env(env: Mapping[str, str], *refs: KeyRef | None) -> dict[str, str]:
    """What of ``env`` cosign gets for these keys (None: keyless): Sigstore/TUF settings, plus the one KMS's
    credentials or the OIDC token request; a key file or env:// key gets no cloud credential at all.
    With no key named, everything a cosign call could need."""
    prefixes: tuple[str, ...] = SIGSTORE_PREFIXES
    for ref in refs if refs else ():
        if ref is None:
            prefixes += KEYLESS_PREFIXES
        elif ref.kind == "kms":
            prefixes += next((ps for scheme, ps in KMS_PREFIXES.items() if ref.value.startswith(scheme)), ())
    if not refs:
        prefixes = PASSTHROUGH_PREFIXES
    return {k: v for k, v in env.items() if k.startswith(prefixes)}


def config_keys(cfg: SignConfig) -> tuple[KeyRef | None, ...]:
    """The keys a sign config signs and verifies with (None: keyless)."""
    if cfg.keyless:
        return (None,)
    out: list[KeyRef | None] = [key_ref(cfg)] if cfg.key else []
    if cfg.public_key:
        out.append(parse_key_ref(cfg.public_key, public=True))
    return tuple(out)


def key_ref(cfg: SignConfig) -> KeyRef | None:
    """The configured signing key (None: keyless). ConfigError when signing has no key at all."""
    if cfg.keyless:
        return None
    if not cfg.key:
        raise ConfigError("sign.key: no signing key configured: set key (a path, env://VAR or a KMS URI;"
                          " 'pipeline keygen' makes a key pair), or keyless = true, or [sign] enabled = false")
    return parse_key_ref(cfg.key)


def read_password(cfg: SignConfig, ref: KeyRef, env: Mapping[str, str]) -> str | None:
    """The key's password (None for KMS keys): the development key's own file, else the named variable."""
    if ref.kind == "kms":
        return None
    if ref.kind == "file":
        pw_file = password_file(ref.value)
        if is_development_key(ref.value) and pw_file.is_file():
            try:
                return pw_file.read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                raise InfraError(f"sign.key: cannot read the development key's password file {pw_file}:"
                                 f" {exc.strerror}") from None
    if cfg.password_env is None:
        return ""
    if cfg.password_env not in env:
        raise InfraError(f"sign.key: the password of {ref.describe()} is not in ${cfg.password_env} (named by"
                         f" sign.password_env); set it (an empty value is a valid empty password)")
    return env[cfg.password_env]


def ensure_development_key(path: Path, runner: cosign.Cosign) -> bool:
    """Generate the development key pair at ``path`` (inside ``.pipeline/``) unless it exists. True if made."""
    if path.exists():
        return False
    if path.suffix != ".key":
        raise ConfigError(f"sign.key: {path}: a development key path must end in .key")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ignore = next((p / ".gitignore" for p in [path, *path.parents] if p.name == DEV_DIR), None)
    if ignore is not None and not ignore.exists():
        ignore.write_text("# made by pipeline: development keys and local state never go into git\n*\n")
    password = secrets.token_urlsafe(32)
    log.register_secret(password)
    pw_file = password_file(path)
    pw_file.unlink(missing_ok=True)
    fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password)
    pub = path.with_suffix(".pub")
    pub.unlink(missing_ok=True)
    env = {**runner.env, "COSIGN_PASSWORD": password}
    cosign.Cosign(env, runner.timeout).generate_key_pair(str(path.with_suffix("")),
                                                         what="generate the development signing key")
    log.get().warning("sign.development_key_generated", key=str(path), public_key=str(pub),
                      password_file=str(pw_file), note=DEV_WARNING)
    return True


def signer(cfg: SignConfig, env: Mapping[str, str], runner: cosign.Cosign) -> Signer:
    """Resolve the configured key into what cosign signs with; generates the development key when due."""
    ref = key_ref(cfg)
    base = passthrough_env(env, ref)
    if ref is None:
        return Signer(None, "keyless (OIDC identity of this CI job)", False, base)
    development = False
    if ref.kind == "file":
        path = Path(ref.value)
        if is_development_key(path):
            ensure_development_key(path, cosign.Cosign({**runner.env, **base}, runner.timeout))
            development = password_file(path).is_file()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise InfraError(f"sign.key: cannot read the signing key {path}"
                             f" ({'no such file' if not path.exists() else 'permission denied'})")
    elif ref.kind == "env":
        if not env.get(ref.value):
            raise InfraError(f"sign.key: {ref.describe()}: ${ref.value} is not set or empty")
        log.register_secret(env[ref.value])
        base[ref.value] = env[ref.value]
    password = read_password(cfg, ref, env)
    if password is not None:
        log.register_secret(password)
        base["COSIGN_PASSWORD"] = password
    if development:
        log.get().warning("sign.development_key", key=ref.value, note=DEV_WARNING)
    return Signer(ref.arg, ("development key " if development else "key ") + ref.describe(), development, base)


def verifier(cfg: SignConfig, env: Mapping[str, str], major: int, workdir: Path, *,
             runner: cosign.Cosign | None = None, allow_http: bool = False) -> cosign.Verifying:
    """How cosign verifies what this config signs: the public key, or the keyless identity and issuer.

    The public key is ``[sign] public_key`` when set, else ``<key>.pub`` next to a key file, else the
    KMS URI itself, else derived from the private key (``cosign public-key``) into ``workdir``.
    """
    ignore_tlog = cfg.tlog_upload is False
    if cfg.keyless:
        return cosign.Verifying(major, None, cfg.identity, cfg.identity_regexp, cfg.issuer, cfg.issuer_regexp,
                                ignore_tlog, allow_http)
    if cfg.public_key:
        ref = parse_key_ref(cfg.public_key, public=True)
        if ref.kind == "file" and not Path(ref.value).is_file():
            raise InfraError(f"sign.public_key: cannot read {ref.value} (no such file)")
        if ref.kind == "env" and not env.get(ref.value):
            raise InfraError(f"sign.public_key: ${ref.value} is not set or empty")
        return cosign.Verifying(major, ref.arg, ignore_tlog=ignore_tlog, allow_http=allow_http)
    signing_ref = key_ref(cfg)
    assert signing_ref is not None
    ref = signing_ref
    if ref.kind == "kms":
        return cosign.Verifying(major, ref.arg, ignore_tlog=ignore_tlog, allow_http=allow_http)
    if ref.kind == "file":
        pub = Path(ref.value).with_suffix(".pub")
        if pub.is_file():
            return cosign.Verifying(major, str(pub), ignore_tlog=ignore_tlog, allow_http=allow_http)
        if not Path(ref.value).is_file():  # verifying never generates a key, development or not
            raise InfraError(f"sign.public_key: nothing to verify with: neither {pub} nor {ref.value} exists;"
                             " set sign.public_key to the release's public key")
    # derive it from the private key (needs the password)
    sign_with = signer(cfg, env, runner or cosign.Cosign())
    out = workdir / "cosign.pub"
    cosign.Cosign({**(runner.env if runner else {}), **sign_with.env}).public_key(
        sign_with.key or "", str(out), what=f"derive the public key of {ref.describe()}")
    return cosign.Verifying(major, str(out), ignore_tlog=ignore_tlog, allow_http=allow_http)


def keygen(prefix: Path, password: str, *, force: bool = False, env: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """``cosign generate-key-pair`` at ``prefix`` (.key 0600, .pub); the password goes by environment only."""
    key, pub = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    existing = [p for p in (key, pub) if p.exists()]
    if existing and not force:
        raise UsageError(f"pipeline keygen: {existing[0]} exists; pass --force to replace the key pair")
    for p in existing:
        p.unlink()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    log.register_secret(password)
    cosign.Cosign({**(env or {}), "COSIGN_PASSWORD": password}).generate_key_pair(str(prefix),
                                                                                 what="pipeline keygen")
    return key, pub


def temporary_dir() -> tempfile.TemporaryDirectory[str]:
    """A private (0700) directory for derived public keys and SBOM files of one stage."""
    return tempfile.TemporaryDirectory(prefix="pipeline-sign-")
