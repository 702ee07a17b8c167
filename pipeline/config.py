"""Configuration: pydantic models for every section, ``load(path, env) -> Config``.

Errors name the file and the field (``config/pipeline.toml: registries[1].url: …``).
Unknown keys are rejected, and so is any value that holds a secret: the config
names the environment variable or credential helper that holds it instead.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

DEFAULT_PATH = Path("config/pipeline.toml")
SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9.]+)?$")
REGISTRY_URL = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(:(?P<port>\d{1,5}))?(?P<ns>(/[a-z0-9]+([._-][a-z0-9]+)*)*)$")
IMAGE_NAME = re.compile(r"^[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$")

# Keys whose value would be the secret itself. The message names the *_env alternative.
SECRET_KEYS = {"password": "password_env", "token": "token_env", "secret": "secret_env",
               "access_key": "access_key_env", "secret_key": "secret_key_env", "api_key": "api_key_env",
               "private_key": "key (a path, env://VAR or a KMS URI)"}
# Values that look like credentials whatever the key is called.
SECRET_VALUES = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "private key material"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), "a GitHub token"),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{16,}"), "a GitLab token"),
    (re.compile(r"\bdckr_pat_[A-Za-z0-9_-]{16,}"), "a Docker Hub token"),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "an AWS access key"),
    (re.compile(r"^[A-Za-z0-9+/]{60,}={0,2}$"), "an encoded secret"),
]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _env_name(value: str | None) -> str | None:
    if value is not None and not ENV_NAME.match(value):
        raise ValueError(f"'{value}' is not an environment variable name (letters, digits, _)")
    return value


class ImageConfig(Section):
    name: str = Field(description="repository path of the image under each registry url")
    context: str = "."
    dockerfile: str = "Dockerfile"
    platforms: list[str] = Field(default_factory=lambda: ["linux/amd64"])
    target: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict)
    offline_base: bool = Field(default=False, description="when the Dockerfile's ARG BASE_IMAGE cannot be pulled,"
                               " build FROM a locally built busybox base instead (offline machines)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not IMAGE_NAME.match(v):
            raise ValueError(f"'{v}' is not a valid image name (lowercase letters, digits, . _ - and /)")
        return v

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one platform is needed, e.g. [\"linux/amd64\"]")
        for p in v:
            if not PLATFORM.match(p):
                raise ValueError(f"'{p}' is not a platform (os/arch[/variant], e.g. linux/arm64)")
        if len(set(v)) != len(v):
            raise ValueError("a platform is listed twice")
        return v


class TagsConfig(Section):
    rules: list[str] = Field(default_factory=list)
    flavor: list[str] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    annotations: list[str] = Field(default_factory=list)
    annotation_levels: list[str] = Field(default_factory=lambda: ["manifest"])
    default_branch: str | None = None
    short_sha_length: int | None = Field(default=None, ge=1, le=40)
    pr_head_sha: bool | None = None

    @field_validator("annotation_levels")
    @classmethod
    def _levels(cls, v: list[str]) -> list[str]:
        allowed = {"manifest", "index", "manifest-descriptor", "index-descriptor"}
        for level in v:
            if level.split("[", 1)[0] not in allowed:
                raise ValueError(f"'{level}' is not an annotation level ({', '.join(sorted(allowed))})")
        return v


def _default_insecure(url: str) -> bool:
    host = url.split("/", 1)[0].rsplit(":", 1)[0] if not url.startswith("[") else url[1:url.index("]")]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RegistryConfig(Section):
    name: str
    url: str
    auth: Literal["docker", "env", "ecr", "none"] = "docker"
    username_env: str | None = None
    password_env: str | None = None
    insecure: bool | None = None
    aws_region: str | None = None
    serve: bool = Field(default=False, description="start a local distribution registry at this localhost"
                        " address when nothing listens there (the self-hosted default)")

    @field_validator("username_env", "password_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        return _env_name(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", v):
            raise ValueError(f"'{v}' is not a valid registry name (letters, digits, . _ -)")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if "://" in v:
            raise ValueError(f"'{v}' has a scheme; write host[:port][/namespace], e.g. ghcr.io/acme")
        if "@" in v:
            raise ValueError("credentials do not belong in the url; use username_env/password_env")
        if not REGISTRY_URL.match(v):
            raise ValueError(f"'{v}' is not host[:port][/namespace] (namespace lowercase)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _auth(self) -> RegistryConfig:
        if self.auth == "env" and not (self.username_env and self.password_env):
            raise ValueError("auth = \"env\" needs username_env and password_env")
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        if self.serve and not _default_insecure(self.url):
            raise ValueError("serve = true needs a localhost or 127.0.0.1 url (a registry started on this machine)")
        return self

    @property
    def host(self) -> str:
        return self.url.split("/", 1)[0]

    @property
    def namespace(self) -> str:
        return self.url.split("/", 1)[1] if "/" in self.url else ""

    @property
    def allow_http(self) -> bool:
        return _default_insecure(self.url) if self.insecure is None else self.insecure

    def repository(self, image: str) -> str:
        return f"{self.namespace}/{image}" if self.namespace else image

    def image(self, image: str) -> str:
        return f"{self.url}/{image}"


class StagingConfig(Section):
    registry: str | None = None
    repository: str | None = None
    tag_prefix: str = "candidate-"


class BuildConfig(Section):
    enabled: bool = True
    mode: Literal["single", "split"] = "single"
    builder: str | None = None
    cache: Literal["inline", "registry", "none"] = "inline"
    provenance: bool = False
    timeout_seconds: int = Field(default=3600, ge=10)


class CopyConfig(Section):
    enabled: bool = True
    failure_policy: Literal["all-or-nothing", "best-effort"] = "all-or-nothing"
    concurrency: int = Field(default=4, ge=1, le=64)


class ScanConfig(Section):
    enabled: bool = True
    fail_on: Literal["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"] = "HIGH"
    ignore_unfixed: bool = False
    ignore_statuses: list[str] = Field(default_factory=list)
    max_allowed: dict[Literal["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"], int] = Field(default_factory=dict)
    fail_on_secrets: bool = True
    exceptions_file: str | None = "config/scan-exceptions.toml"
    trivyignore: str | None = None
    db_repository: list[str] = Field(default_factory=list)
    cache_dir: str | None = None
    skip_db_update: bool = False
    timeout_seconds: int = Field(default=900, ge=10)


class SignConfig(Section):
    enabled: bool = True
    key: str | None = Field(default=None, description="path, env://VAR, awskms://, gcpkms://, azurekms://, hashivault://")
    keyless: bool = False
    password_env: str | None = "COSIGN_PASSWORD"
    tlog_upload: bool | None = None
    recursive: bool = False
    public_key: str | None = None
    identity: str | None = None
    issuer: str | None = None
    sbom: bool = True

    @field_validator("password_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        return _env_name(v)

    @model_validator(mode="after")
    def _one_mode(self) -> SignConfig:
        if self.keyless and self.key:
            raise ValueError("set either key or keyless = true, not both")
        return self


class TagStageConfig(Section):
    enabled: bool = True


class VerifyConfig(Section):
    enabled: bool = True


class LifecycleConfig(Section):
    enabled: bool = False
    rules: list[dict[str, Any]] = Field(default_factory=list)
    policy_file: str | None = None


class RetryConfig(Section):
    attempts: int = Field(default=5, ge=1, le=50)
    initial_seconds: float = Field(default=0.5, gt=0)
    max_seconds: float = Field(default=30.0, gt=0)
    max_retry_after_seconds: float = Field(default=120.0, gt=0)


class ReportConfig(Section):
    dir: str = "dist"


class Config(Section):
    image: ImageConfig
    tags: TagsConfig = Field(default_factory=TagsConfig)
    registries: Annotated[list[RegistryConfig], Field(default_factory=list)]
    staging: StagingConfig = Field(default_factory=StagingConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    copy_: CopyConfig = Field(default_factory=CopyConfig, alias="copy")
    sign: SignConfig = Field(default_factory=SignConfig)
    tag: TagStageConfig = Field(default_factory=TagStageConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _registries(self) -> Config:
        names = [r.name for r in self.registries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"registry name '{dupes[0]}' is used twice")
        if self.staging.registry is not None and self.staging.registry not in names:
            raise ValueError(f"staging.registry '{self.staging.registry}' is not the name of a [[registries]] entry"
                             f" ({', '.join(names) or 'none defined'})")
        return self

    @property
    def staging_registry(self) -> RegistryConfig | None:
        if not self.registries:
            return None
        name = self.staging.registry or self.registries[0].name
        return next(r for r in self.registries if r.name == name)

    @property
    def release_registries(self) -> list[RegistryConfig]:
        return list(self.registries)

    def registry(self, name: str) -> RegistryConfig:
        for r in self.registries:
            if r.name == name:
                return r
        raise ConfigError(f"no registry named '{name}' in the config ({', '.join(x.name for x in self.registries)})")

    def images(self) -> list[str]:
        """Every release image name (registry url / image name), lowercased as metadata-action does."""
        return [r.image(self.image.name).lower() for r in self.registries]


# --------------------------------------------------------------------------- loading


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = "copy" if part == "copy_" else str(part)
            out += ("." if out else "") + part
    return out


def _find_secrets(data: Any, loc: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str] | None:
    if isinstance(data, dict):
        for key, value in data.items():
            k = str(key).lower()
            if k in SECRET_KEYS and value not in (None, "", False):
                return loc + (key,), f"secrets do not belong in the config; use {SECRET_KEYS[k]} to name where it is"
            found = _find_secrets(value, loc + (key,))
            if found:
                return found
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found = _find_secrets(value, loc + (i,))
            if found:
                return found
    elif isinstance(data, str):
        for pattern, what in SECRET_VALUES:
            if pattern.search(data):
                return loc, f"this looks like {what}; secrets do not belong in the config: put it in an environment" \
                            " variable or credential helper and name that (e.g. password_env)"
    return None


def _validate_tag_lines(cfg: Config) -> list[tuple[str, str]]:
    from pipeline.tags import TagRuleError, parse_flavor, parse_rules

    problems: list[tuple[str, str]] = []
    try:
        parse_rules(cfg.tags.rules)
    except TagRuleError as exc:
        where = f"tags.rules[{exc.index}]" if cfg.tags.rules else "tags.rules"
        problems.append((where, f"{exc} in \"{exc.line}\""))
    try:
        parse_flavor(cfg.tags.flavor)
    except TagRuleError as exc:
        problems.append((f"tags.flavor[{exc.index}]", f"{exc} in \"{exc.line}\""))
    return problems


def parse(data: Mapping[str, Any], source: str = "config") -> Config:
    """Validate already-parsed TOML data. Raises ConfigError naming ``source: field``."""
    secret = _find_secrets(dict(data))
    if secret:
        loc, message = secret
        raise ConfigError(f"{source}: {_loc(loc)}: {message}")
    try:
        cfg = Config.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _loc(tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README's config reference)"
        elif err["type"] == "missing":
            msg = "required"
        msg = msg.removeprefix("Value error, ")
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{source}: {loc or '(top level)'}: {msg}{suffix}") from None
    problems = _validate_tag_lines(cfg)
    if problems:
        where, message = problems[0]
        raise ConfigError(f"{source}: {where}: {message}")
    return cfg


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file. ``env`` may name it via PIPELINE_CONFIG."""
    env = env or {}
    path = Path(path or env.get("PIPELINE_CONFIG") or DEFAULT_PATH)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; pass --config PATH or create it (see README)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, str(path))
