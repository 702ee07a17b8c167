"""Pure: parse and format references: images (``registry/repo:tag@sha256:…``, docker's rules) and
signing keys (``[sign] key``: a file, ``env://VAR`` or a KMS URI, as cosign takes them)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
TAG = re.compile(r"^[\w][\w.-]{0,127}$")
REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
DOCKER_HUB = "docker.io"
KMS_SCHEMES = ("awskms://", "gcpkms://", "azurekms://", "hashivault://")
ENV_SCHEME = "env://"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RefError(ValueError):
    pass


@dataclass(frozen=True)
class Ref:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Ref:
        return replace(self, tag=None, digest=digest)

    def with_tag(self, tag: str) -> Ref:
        return replace(self, tag=tag, digest=None)


def parse(text: str) -> Ref:
    """Parse a reference the way docker does (docker.io and library/ implied for short names)."""
    rest = text.strip()
    if not rest:
        raise RefError("empty image reference")
    digest = None
    if "@" in rest:
        rest, digest = rest.rsplit("@", 1)
        if not DIGEST.match(digest):
            raise RefError(f"'{text}': '{digest}' is not a sha256 digest")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not TAG.match(tag):
            raise RefError(f"'{text}': '{tag}' is not a valid tag")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
    else:
        registry, repository = DOCKER_HUB, rest
        if "/" not in repository:
            repository = f"library/{repository}"
    if not REPO.match(repository):
        raise RefError(f"'{text}': '{repository}' is not a valid repository name (lowercase)")
    return Ref(registry, repository, tag, digest)


def platform_key(platform: str) -> str:
    """``linux/arm64/v8`` → ``linux-arm64-v8``: safe in file names and tags."""
    return platform.replace("/", "-")


@dataclass(frozen=True)
class KeyRef:
    """A ``[sign] key`` / ``public_key`` value: ``file``, ``env`` (env://VAR), ``kms`` (a KMS URI), ``url``."""

    kind: str
    value: str

    @property
    def arg(self) -> str:
        """What goes after ``--key``."""
        return f"{ENV_SCHEME}{self.value}" if self.kind == "env" else self.value

    def describe(self) -> str:
        if self.kind == "env":
            return f"env://{self.value}"
        if self.kind == "kms":
            return self.value.split("://", 1)[0] + "://…" if len(self.value) > 60 else self.value
        return self.value


def parse_key_ref(text: str, *, public: bool = False) -> KeyRef:
    """Parse a key reference; raise ValueError with a sentence a user can act on."""
    value = text.strip()
    if not value:
        raise ValueError("empty key reference")
    if value.startswith(ENV_SCHEME):
        name = value[len(ENV_SCHEME):]
        if not ENV_NAME.match(name):
            raise ValueError(f"'{value}': env:// needs an environment variable name (letters, digits, _)")
        return KeyRef("env", name)
    if value.startswith(KMS_SCHEMES):
        if value.endswith("://"):
            raise ValueError(f"'{value}': the KMS URI names no key")
        return KeyRef("kms", value)
    if public and value.startswith(("https://", "http://")):
        return KeyRef("url", value)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        kinds = "a file path, env://VAR, " + ", ".join(KMS_SCHEMES) + (", https://" if public else "")
        raise ValueError(f"'{value}': unsupported key reference (use {kinds})")
    return KeyRef("file", value)
