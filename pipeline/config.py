"""Configuration: pydantic models for every section, ``load(path, env) -> Config``.

Errors name the file and the field (``config/pipeline.toml: registries[1].url: …``).
Unknown keys are rejected, and so is any value that holds a secret: the config
names the environment variable or credential helper that holds it instead.
"""

from __future__ import annotations

import functools

import ipaddress
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError
from pipeline.refs import ENV_NAME, RefError, parse_key_ref
from pipeline.refs import parse as parse_ref

DEFAULT_PATH = Path("config/pipeline.toml")
SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
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


SECRET_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
#: build-argument names that say a secret is meant (a build argument is kept in the image's history)
SECRET_ARG = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIALS?)", re.I)


class BuildSecret(Section):
    """One BuildKit secret (``RUN --mount=type=secret,id=…``): its value from an environment variable or a
    file, handed to buildx as a 0600 file (``--secret id=…,src=…``), never on a command line or in buildx's
    environment, never in the image."""

    env: str | None = Field(default=None, description="the environment variable that holds the secret")
    file: str | None = Field(default=None, description="a file that holds the secret")

    @model_validator(mode="after")
    def _one_source(self) -> BuildSecret:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env = \"VAR\" or file = \"path\"")
        if self.env is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.env):
            raise ValueError(f"env: '{self.env}' is not an environment variable name")
        return self


class ImageConfig(Section):
    name: str = Field(description="repository path of the image under each registry url")
    context: str = "."
    dockerfile: str = "Dockerfile"
    platforms: list[str] = Field(default_factory=lambda: ["linux/amd64"])
    target: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, BuildSecret] = Field(default_factory=dict, description="BuildKit secrets by id:"
                                            " { env = \"VAR\" } or { file = \"path\" }")
    offline_base: bool = Field(default=False, description="when the Dockerfile's ARG BASE_IMAGE cannot be pulled,"
                               " build FROM a locally built busybox base instead (offline machines)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not IMAGE_NAME.match(v):
            raise ValueError(f"'{v}' is not a valid image name (lowercase letters, digits, . _ - and /)")
        return v

    @field_validator("build_args")
    @classmethod
    def _build_args(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if SECRET_ARG.search(name):
                raise At(f".{name}", f"a build argument is kept in the image's history; pass a secret as a build"
                         f" secret: [image.secrets] {name} = {{ env = \"{name}\" }} and"
                         f" RUN --mount=type=secret,id={name} in the Dockerfile")
        return v

    @field_validator("secrets")
    @classmethod
    def _secret_ids(cls, v: dict[str, BuildSecret]) -> dict[str, BuildSecret]:
        for name in v:
            if not SECRET_ID.match(name):
                raise At(f".{name}", f"'{name}' is not a secret id (letters, digits, . _ -)")
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


ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z]{2}(-[a-z]+)+-\d)\.amazonaws\.com(\.cn)?$")
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
#: auth kinds with well-known credential variables: (username_env, password_env) defaults.
CREDENTIAL_ENV_DEFAULTS = {"ghcr": ("GITHUB_ACTOR", "GITHUB_TOKEN"),
                           "dockerhub": ("DOCKERHUB_USERNAME", "DOCKERHUB_TOKEN")}


class RegistryConfig(Section):
    name: str
    url: str
    auth: Literal["docker", "env", "ecr", "ghcr", "dockerhub", "none"] = Field(
        default="docker", description="docker: docker config and credential helpers; env: username_env/password_env;"
        " ecr: an ECR token (boto3 or the aws CLI); ghcr: GITHUB_ACTOR/GITHUB_TOKEN; dockerhub: DOCKERHUB_USERNAME/"
        "DOCKERHUB_TOKEN (an access token); none: anonymous")
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
        m = REGISTRY_URL.match(v)
        if not m:
            raise ValueError(f"'{v}' is not host[:port][/namespace] (namespace lowercase)")
        if m.group("port") and not 0 < int(m.group("port")) < 65536:
            raise ValueError(f"'{v}': port {m.group('port')} is not between 1 and 65535")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _auth(self) -> RegistryConfig:
        if self.auth == "env" and not (self.username_env and self.password_env):
            raise ValueError("auth = \"env\" needs username_env and password_env")
        if (self.username_env is None) != (self.password_env is None) and self.auth not in CREDENTIAL_ENV_DEFAULTS:
            raise ValueError("username_env and password_env go together")
        if self.auth == "ghcr" and self.host != "ghcr.io":
            raise ValueError(f"auth = \"ghcr\" is for ghcr.io, not {self.host}; use auth = \"env\" elsewhere")
        if self.auth == "dockerhub" and self.host not in DOCKER_HUB_HOSTS:
            raise ValueError(f"auth = \"dockerhub\" is for docker.io, not {self.host}; use auth = \"env\" elsewhere")
        if self.auth == "ecr" and not self.aws_region and not ECR_HOST.match(self.host):
            raise ValueError("auth = \"ecr\" needs aws_region when the url is not"
                             " <account>.dkr.ecr.<region>.amazonaws.com")
        if self.serve and not _default_insecure(self.url):
            raise ValueError("serve = true needs a localhost or 127.0.0.1 url (a registry started on this machine)")
        return self

    @property
    def host(self) -> str:
        return self.url.split("/", 1)[0]

    @property
    def credential_env(self) -> tuple[str, str] | None:
        """``(username_env, password_env)`` the credentials come from, defaults of ghcr/dockerhub included."""
        default = CREDENTIAL_ENV_DEFAULTS.get(self.auth)
        if default:
            return self.username_env or default[0], self.password_env or default[1]
        if self.auth == "env" or (self.username_env and self.password_env):
            assert self.username_env and self.password_env
            return self.username_env, self.password_env
        return None

    @property
    def is_ecr(self) -> bool:
        return self.auth == "ecr" or bool(ECR_HOST.match(self.host))

    @property
    def ecr_account(self) -> str | None:
        m = ECR_HOST.match(self.host)
        return m.group("account") if m else None

    @property
    def ecr_region(self) -> str | None:
        m = ECR_HOST.match(self.host)
        return self.aws_region or (m.group("region") if m else None)

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
    mode: Literal["auto", "single", "split"] = Field(
        default="auto", description="auto: one buildx call for every platform where the builder can (containerd"
        " image store, docker-container), else one call per platform merged by digest (the classic store)")
    builder: str | None = None
    cache: Literal["inline", "registry", "none"] = "inline"
    provenance: bool = False
    timeout_seconds: int = Field(default=3600, ge=10)


class MirrorConfig(Section):
    """Base images kept in a registry of ours, pinned by digest in a lock file (pipeline/build/mirror.py)."""

    enabled: bool = False
    registry: str | None = Field(default=None, description="the [[registries]] name that keeps the copies"
                                 " (default: the staging registry)")
    prefix: str = Field(default="mirror", description="repositories there: <prefix>/<upstream host>/<repository>")
    lock: str = Field(default="base-images.lock", description="reference -> digest per platform; commit it")
    images: list[str] = Field(default_factory=list, description="more images to keep besides the Dockerfile's FROMs")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not IMAGE_NAME.match(v):
            raise ValueError(f"'{v}' is not a repository path (lowercase letters, digits, . _ - and /)")
        return v

    @field_validator("lock")
    @classmethod
    def _lock(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a file name is needed, e.g. \"base-images.lock\"")
        return v

    @field_validator("images")
    @classmethod
    def _images(cls, v: list[str]) -> list[str]:
        for i, image in enumerate(v):
            try:
                parse_ref(image)
            except RefError as exc:
                raise At(f"[{i}]", str(exc)) from None
        return v


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
    expiry_warning_days: int = Field(default=14, ge=0, le=365, description="warn this many days before an"
                                     " exception in use expires (0: never)")
    vex: list[str] = Field(default_factory=list, description="OpenVEX documents whose not_affected / fixed"
                           " statements the gate applies (e.g. written by 'pipeline vex export')")
    trivyignore: str | None = None
    db_repository: list[str] = Field(default_factory=list, description="DB mirrors tried in order"
                                     " (default: Trivy's mirror.gcr.io, then ghcr.io)")
    java_db_repository: list[str] = Field(default_factory=list)
    cache_dir: str | None = Field(default=None, description="Trivy's cache (DB and scans); default Trivy's own")
    skip_db_update: bool = False
    vuln_db_required: bool = Field(default=True, description="false: with no vulnerability DB reachable, scan"
                                   " secrets only and say loudly that vulnerabilities were not checked")
    timeout_seconds: int = Field(default=900, ge=10)

    @field_validator("ignore_statuses")
    @classmethod
    def _statuses(cls, v: list[str]) -> list[str]:
        from pipeline.tools.trivy import STATUSES

        for s in v:
            if s not in STATUSES:
                raise ValueError(f"'{s}' is not a Trivy status ({', '.join(STATUSES)})")
        return v

    @field_validator("max_allowed")
    @classmethod
    def _caps(cls, v: dict[str, int]) -> dict[str, int]:
        for sev, n in v.items():
            if n < 0:
                raise ValueError(f"{sev} = {n}: a count cannot be negative")
        return v

    @field_validator("db_repository", "java_db_repository")
    @classmethod
    def _repos(cls, v: list[str]) -> list[str]:
        for repo in v:
            if "://" in repo:
                raise ValueError(f"'{repo}' has a scheme; write host/repository[:tag], e.g. mirror.gcr.io/aquasec/trivy-db:2")
            try:
                parse_ref(repo)
            except RefError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _one_status_filter(self) -> ScanConfig:
        if self.ignore_unfixed and self.ignore_statuses:
            raise ValueError("set either ignore_unfixed or ignore_statuses, not both (ignore_unfixed is"
                             " ignore_statuses = every status but \"fixed\"; Trivy drops it silently when both are given)")
        return self


CRON_FIELD = re.compile(r"^(\*|[0-9]+)([-/,][0-9*]+)*$")


class RescanConfig(Section):
    keep: int = Field(default=20, ge=1, le=10000, description="the newest released images per repository that"
                      " pipeline rescan judges again")
    schedule: str = Field(default="17 5 * * *", description="when the generated CI files run the rescan"
                          " (cron: minute hour day month weekday, UTC)")
    image: str | None = Field(default=None, description="the image 'rescan --emit-cronjob' runs: one with this"
                              " package, trivy and (for --attest) cosign")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        fields = v.split()
        if len(fields) != 5 or not all(CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"'{v}' is not a cron schedule of five fields (minute hour day month weekday),"
                             " e.g. \"17 5 * * *\"")
        return v


class SignConfig(Section):
    enabled: bool = True
    key: str | None = Field(default=None, description="path, env://VAR, awskms://, gcpkms://, azurekms://, hashivault://")
    keyless: bool = False
    password_env: str | None = "COSIGN_PASSWORD"
    tlog_upload: bool | None = None
    recursive: bool = False
    public_key: str | None = Field(default=None, description="for verification: path, env://VAR, a KMS URI or"
                                   " https://; default: the key's .pub next to it (or derived from the key)")
    identity: str | None = None
    identity_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None
    sbom: bool = True
    attest_scan: bool = Field(default=False, description="also attest each platform's Trivy result as cosign's"
                              " vuln predicate (needs [scan] enabled)")

    @field_validator("password_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        return _env_name(v)

    @field_validator("key", "public_key")
    @classmethod
    def _key_ref(cls, v: str | None, info: Any) -> str | None:
        if v is not None:
            parse_key_ref(v, public=info.field_name == "public_key")
        return v

    @model_validator(mode="after")
    def _one_mode(self) -> SignConfig:
        if self.keyless and self.key:
            raise ValueError("set either key or keyless = true, not both")
        if self.identity and self.identity_regexp:
            raise ValueError("set either identity or identity_regexp, not both")
        if self.issuer and self.issuer_regexp:
            raise ValueError("set either issuer or issuer_regexp, not both")
        if self.keyless and self.enabled:
            if self.tlog_upload is False:
                raise ValueError("keyless signatures need the transparency log (Fulcio certificates live 10"
                                 " minutes): drop tlog_upload = false or sign with a key")
            if not (self.identity or self.identity_regexp) or not (self.issuer or self.issuer_regexp):
                raise ValueError("keyless signatures are verified against the CI's identity: set identity (or"
                                 " identity_regexp) and issuer, e.g. issuer ="
                                 " \"https://token.actions.githubusercontent.com\"")
        return self


class TagStageConfig(Section):
    enabled: bool = True


class VerifyConfig(Section):
    enabled: bool = True


# --------------------------------------------------------------------------- ECR lifecycle rules (the schema)
#
# The [lifecycle] rules are ECR lifecycle policy rules, with ECR's camelCase keys, and the
# same models validate a policy_file (an ECR JSON document). Every check happens at load, in
# ECR's own words (specs/lifecycle.md §1.1); pipeline/hygiene/lifecycle.py builds the policy
# from these models and evaluates it.

ECR_TAG_STATUSES = ("tagged", "untagged", "any")
ECR_COUNT_TYPES = ("imageCountMoreThan", "sinceImagePushed")
ECR_ARCHIVE_COUNT_TYPES = ("sinceImagePulled", "sinceImageTransitioned")
ECR_MAX_WILDCARDS = 4
ECR_RULE_KEYS = ("rulePriority", "description", "selection", "action")
ECR_SELECTION_KEYS = ("tagStatus", "tagPrefixList", "tagPatternList", "storageClass", "countType", "countUnit",
                      "countNumber")
ECR_ACTION_KEYS = ("type", "targetStorageClass")


class At(ValueError):
    """A validation error below the field being validated: ``where`` (``.countType``, ``[1].rulePriority``,
    ``registryId``) is appended to the field's location in the message, and ``{here}`` in the message
    becomes that field's location (so one rule can name another: ``lifecycle.rules[0]``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ecr_object(data: Any, allowed: Sequence[str], not_an_object: str) -> None:
    """An ECR JSON object: a mapping with only ``allowed`` keys."""
    if not isinstance(data, Mapping):
        raise At("", not_an_object)
    for key in data:
        if key not in allowed:
            raise At(f".{key}", f"unknown property (ECR accepts {', '.join(allowed)})")


def _string_list(value: Any, where: str) -> None:
    if not isinstance(value, list) or not value:
        raise At(where, "must be a non-empty list of strings")
    for i, s in enumerate(value):
        if not isinstance(s, str) or not s:
            raise At(f"{where}[{i}]", "must be a non-empty string")
    if len(set(value)) != len(value):
        raise At(where, "lists the same value twice")


class _Ecr(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EcrSelection(_Ecr):
    tagStatus: Literal["tagged", "untagged", "any"]
    tagPrefixList: tuple[str, ...] = ()
    tagPatternList: tuple[str, ...] = ()
    storageClass: Literal["standard"] = "standard"
    countType: Literal["imageCountMoreThan", "sinceImagePushed"]
    countUnit: Literal["days"] | None = None
    countNumber: int

    @model_validator(mode="before")
    @classmethod
    def _ecr(cls, sel: Any) -> Any:
        _ecr_object(sel, ECR_SELECTION_KEYS, "must be an object")
        status = sel.get("tagStatus")
        if status is None:
            raise At(".tagStatus", "required (tagged, untagged or any)")
        if status not in ECR_TAG_STATUSES:
            raise At(".tagStatus", f"{status!r} is not one of tagged, untagged, any")
        has_prefix, has_pattern = "tagPrefixList" in sel, "tagPatternList" in sel
        if status == "tagged":
            if has_prefix and has_pattern:
                raise At("", "tagPrefixList and tagPatternList cannot both be specified in one rule")
            if not has_prefix and not has_pattern:
                raise At("", "tagStatus tagged needs a tagPrefixList or a tagPatternList")
            if has_prefix:
                _string_list(sel["tagPrefixList"], ".tagPrefixList")
            else:
                _string_list(sel["tagPatternList"], ".tagPatternList")
                for i, p in enumerate(sel["tagPatternList"]):
                    if p.count("*") > ECR_MAX_WILDCARDS:
                        raise At(f".tagPatternList[{i}]", f"{p!r} has {p.count('*')} wildcards; at most"
                                 f" {ECR_MAX_WILDCARDS} '*' per pattern")
        else:
            for key in ("tagPrefixList", "tagPatternList"):
                if key in sel:
                    raise At(f".{key}", f"only allowed with tagStatus tagged (this rule is {status})")
        if "storageClass" in sel and sel["storageClass"] != "standard":
            raise At(".storageClass", f"{sel['storageClass']!r}: only standard is supported (the archive"
                     " storage class exists only in ECR)")
        count_type = sel.get("countType")
        if count_type is None:
            raise At(".countType", "required (imageCountMoreThan or sinceImagePushed)")
        if count_type in ECR_ARCHIVE_COUNT_TYPES:
            raise At(".countType", f"{count_type} needs ECR's pull/archive records; other registries"
                     " support imageCountMoreThan and sinceImagePushed")
        if count_type not in ECR_COUNT_TYPES:
            raise At(".countType", f"{count_type!r} is not one of imageCountMoreThan, sinceImagePushed")
        unit = sel.get("countUnit")
        if count_type == "sinceImagePushed":
            if unit is None:
                raise At(".countUnit", "required with countType sinceImagePushed (\"days\")")
            if unit != "days":
                raise At(".countUnit", f"{unit!r} is not a valid unit (only \"days\")")
        elif unit is not None:
            raise At(".countUnit", "not allowed with countType imageCountMoreThan (only with sinceImagePushed)")
        if "countNumber" not in sel:
            raise At(".countNumber", "required (a positive integer)")
        number = sel["countNumber"]
        if not _is_int(number) or number < 1:
            raise At(".countNumber", f"{number!r} is not a positive integer (0 is not accepted)")
        return sel


class EcrAction(_Ecr):
    type: Literal["expire"]

    @model_validator(mode="before")
    @classmethod
    def _ecr(cls, action: Any) -> Any:
        _ecr_object(action, ECR_ACTION_KEYS, "must be an object ({\"type\": \"expire\"})")
        kind = action.get("type")
        if kind is None:
            raise At(".type", "required (expire)")
        if kind == "transition":
            raise At(".type", "transition (to ECR's archive storage class) is not supported on other registries;"
                     " use expire")
        if kind != "expire":
            raise At(".type", f"{kind!r} is not a valid action (expire)")
        if "targetStorageClass" in action:
            raise At(".targetStorageClass", "only with action type transition")
        return action


class EcrRule(_Ecr):
    rulePriority: int
    description: str = ""
    selection: EcrSelection
    action: EcrAction | None = None

    @model_validator(mode="before")
    @classmethod
    def _ecr(cls, rule: Any) -> Any:
        _ecr_object(rule, ECR_RULE_KEYS, "a rule must be an object with rulePriority, selection and action")
        if "rulePriority" not in rule:
            raise At(".rulePriority", "required (a unique integer; rules apply lowest first)")
        priority = rule["rulePriority"]
        if not _is_int(priority) or priority < 1:
            raise At(".rulePriority", f"{priority!r} is not a positive integer")
        if not isinstance(rule.get("description", ""), str):
            raise At(".description", "must be a string")
        if rule.get("selection") is None:
            raise At(".selection", "required")
        return rule

    @model_validator(mode="after")
    def _action(self) -> EcrRule:
        if self.action is None:
            raise At(".action", "required ({\"type\": \"expire\"})")
        return self


def _rule_list(value: Any) -> Any:
    if not isinstance(value, list):
        raise At("", "must be a list of rules")
    return value


def _rule_set(rules: list[EcrRule]) -> list[EcrRule]:
    """ECR's checks across the rules of one policy."""
    seen: dict[int, int] = {}
    for i, r in enumerate(rules):
        if r.rulePriority in seen:
            raise At(f"[{i}].rulePriority", f"{r.rulePriority} is used by {{here}}[{seen[r.rulePriority]}] too;"
                     " priorities must be unique")
        seen[r.rulePriority] = i
    anys = [i for i, r in enumerate(rules) if r.selection.tagStatus == "any"]
    if len(anys) > 1:
        raise At(f"[{anys[1]}].selection.tagStatus", "only one rule may have tagStatus any")
    if anys:
        top = max(r.rulePriority for r in rules)
        if rules[anys[0]].rulePriority != top:
            raise At(f"[{anys[0]}].rulePriority", f"{rules[anys[0]].rulePriority}: a rule with tagStatus any must"
                     f" have the highest rulePriority (another rule has {top})")
    untagged = [i for i, r in enumerate(rules) if r.selection.tagStatus == "untagged"]
    if len(untagged) > 1:
        raise At(f"[{untagged[1]}].selection.tagStatus", "only one rule may select untagged images")
    filters: dict[tuple[str, frozenset[str]], int] = {}
    for i, r in enumerate(rules):
        sel = r.selection
        if sel.tagStatus != "tagged":
            continue
        key = ("prefix", frozenset(sel.tagPrefixList)) if sel.tagPrefixList else ("pattern",
                                                                                   frozenset(sel.tagPatternList))
        if key in filters:
            raise At(f"[{i}].selection", f"selects the same tags as {{here}}[{filters[key]}]; the set of rules must"
                     " contain a unique set of tag prefixes")
        filters[key] = i
    return rules


#: A list of ECR rules, validated one by one and then together, as ECR does.
EcrRules = Annotated[list[EcrRule], BeforeValidator(_rule_list), AfterValidator(_rule_set)]


class EcrPolicyDocument(_Ecr):
    """An ECR lifecycle policy document: ``{"rules": [...]}`` and nothing else."""

    rules: EcrRules

    @model_validator(mode="before")
    @classmethod
    def _ecr(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise At("", "an ECR lifecycle policy is an object {\"rules\": [...]}")
        for key in data:
            if key != "rules":
                raise At(str(key), "unknown property (an ECR lifecycle policy has only \"rules\")")
        if "rules" not in data:
            raise At("rules", "required")
        return data


def validate_ecr_rules(rules: Any, *, source: str, where: str = "rules") -> list[EcrRule]:
    """ECR rules given as data (TOML tables or JSON): the validated models, or ConfigError
    ``source: where[i].field: message``."""
    try:
        return _ecr_rules().validate_python(rules)
    except ValidationError as exc:
        raise ConfigError(_message(exc, source, prefix=where)) from None


def validate_ecr_document(data: Any, *, source: str) -> EcrPolicyDocument:
    """An ECR lifecycle policy document, already parsed from JSON."""
    try:
        return EcrPolicyDocument.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_message(exc, source)) from None


@functools.cache
def _ecr_rules() -> TypeAdapter[list[EcrRule]]:
    """Built when a lifecycle rule list is first checked (building it costs 35 ms of every start-up)."""
    return TypeAdapter(EcrRules)

AGE_SOURCES = ("release", "registry", "annotation", "created")


class LifecycleConfig(Section):
    """ECR lifecycle rules for ``pipeline prune`` / ``inventory`` (pipeline/hygiene/lifecycle.py evaluates them)."""

    enabled: bool = Field(default=False, description="let 'pipeline prune --apply' delete (previews always work)")
    rules: EcrRules = Field(default_factory=list, description="ECR rules, same keys as the ECR JSON")
    policy_file: str | None = Field(default=None, description="an ECR lifecycle policy JSON document instead of rules")
    keep_candidates: int = Field(default=10, ge=0, description="staging: keep the newest N candidate-only images"
                                 " (0: no built-in candidate rule)")
    age_sources: list[Literal["release", "registry", "annotation", "created"]] = Field(
        default_factory=lambda: list(AGE_SOURCES), description="where push times come from, first that knows wins")
    release_manifests: list[str] = Field(default_factory=lambda: ["dist/release.json", "dist/releases/*.json"],
                                         description="release manifests (globs) this tool wrote")
    registries: list[str] = Field(default_factory=list, description="registry names to walk (default: all)")
    repositories: list[str] = Field(default_factory=list, description="repositories under each registry's"
                                    " namespace (default: the image's; \"*\": every one in the catalog)")
    registry_api: dict[str, Literal["auto", "distribution", "ecr", "ghcr", "dockerhub", "harbor"]] = Field(
        default_factory=dict, description="registry name -> vendor API for push times and deletes (auto: from host)")

    @model_validator(mode="after")
    def _one_source(self) -> LifecycleConfig:
        if self.rules and self.policy_file:
            raise ValueError("set either rules or policy_file (an ECR JSON document), not both")
        if len(set(self.age_sources)) != len(self.age_sources):
            raise ValueError("age_sources lists a source twice")
        return self


AWS_PRINCIPAL = re.compile(r"^(\d{12}|arn:aws(-cn|-us-gov)?:iam::\d{12}:(root|(role|user)/[\w+=,.@/-]+))$")
AWS_ORG_ID = re.compile(r"^o-[a-z0-9]{10,32}$")
ECR_TAG_FILTER = re.compile(r"^[A-Za-z0-9._*-]{1,128}$")


class EcrConfig(Section):
    """Repository settings ``pipeline ecr ensure`` applies to every ECR registry's repositories,
    and the principals of the repository policy ``pipeline ecr policy`` writes."""

    scan_on_push: bool = True
    tag_immutability: bool = Field(default=False, description="IMMUTABLE tags; floating tags (latest, 1, 1.2)"
                                   " then need mutable_tags, or ECR refuses to move them")
    mutable_tags: list[str] = Field(default_factory=list, description="wildcard filters (e.g. \"latest\") that stay"
                                    " mutable when tag_immutability is on (ECR exclusion filters, at most 5)")
    encryption: Literal["AES256", "KMS"] = "AES256"
    kms_key: str | None = Field(default=None, description="KMS key ARN or alias (encryption = \"KMS\"); default:"
                                " the AWS managed key")
    repositories: list[str] = Field(default_factory=list, description="more repositories to ensure; the image's"
                                    " (and the staging one, when staging is on ECR) always are")
    lifecycle_policy: bool = Field(default=True, description="put the [lifecycle] rules as each repository's"
                                   " lifecycle policy")
    resource_tags: dict[str, str] = Field(default_factory=dict, description="AWS tags for repositories it creates")
    pull_principals: list[str] = Field(default_factory=list, description="account ids or IAM ARNs that may pull")
    push_principals: list[str] = Field(default_factory=list, description="account ids or IAM ARNs that may push")
    pull_organizations: list[str] = Field(default_factory=list, description="AWS Organizations ids (o-…) whose"
                                          " accounts may pull")

    @field_validator("mutable_tags")
    @classmethod
    def _filters(cls, v: list[str]) -> list[str]:
        for f in v:
            if not ECR_TAG_FILTER.match(f):
                raise ValueError(f"'{f}' is not an ECR tag filter (letters, digits, . _ - and * wildcards)")
        if len(v) > 5:
            raise ValueError("ECR takes at most 5 mutable tag filters")
        return v

    @field_validator("pull_principals", "push_principals")
    @classmethod
    def _principals(cls, v: list[str]) -> list[str]:
        for p in v:
            if not AWS_PRINCIPAL.match(p):
                raise ValueError(f"'{p}' is not an AWS account id (12 digits) or an IAM ARN"
                                 " (arn:aws:iam::<account>:root | role/NAME | user/NAME)")
        return v

    @field_validator("pull_organizations")
    @classmethod
    def _orgs(cls, v: list[str]) -> list[str]:
        for o in v:
            if not AWS_ORG_ID.match(o):
                raise ValueError(f"'{o}' is not an AWS Organizations id (o-xxxxxxxxxx)")
        return v

    @field_validator("repositories")
    @classmethod
    def _repos(cls, v: list[str]) -> list[str]:
        for r in v:
            if not IMAGE_NAME.match(r):
                raise ValueError(f"'{r}' is not a valid repository name")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EcrConfig:
        if self.kms_key and self.encryption != "KMS":
            raise ValueError("kms_key goes with encryption = \"KMS\"")
        if self.mutable_tags and not self.tag_immutability:
            raise ValueError("mutable_tags only matter with tag_immutability = true")
        return self


class CIConfig(Section):
    """What ``pipeline ci-init`` writes into the CI files it generates."""

    python: str = Field(default="3.12", description="Python version the CI jobs install nox with")
    release_tags: list[str] = Field(default_factory=lambda: ["v*"], description="git tag globs that release")
    default_branch: str | None = Field(default=None, description="the branch that releases (default:"
                                       " tags.default_branch, else main)")
    runners: dict[str, str] = Field(default_factory=dict, description="platform → runner label for split builds"
                                    " (GitHub runs-on, GitLab runner tag, Jenkins agent label)")

    @field_validator("python")
    @classmethod
    def _python(cls, v: str) -> str:
        if not re.match(r"^3\.\d{1,2}$", v):
            raise ValueError(f"'{v}' is not a Python version such as \"3.12\"")
        return v

    @field_validator("runners")
    @classmethod
    def _runners(cls, v: dict[str, str]) -> dict[str, str]:
        for platform, label in v.items():
            if not PLATFORM.match(platform):
                raise ValueError(f"'{platform}' is not a platform (os/arch[/variant])")
            if not label.strip() or any(c in label for c in "'\"\n${}"):
                raise ValueError(f"runner label '{label}' for {platform}: letters, digits, - _ . / and spaces only")
        return v

    @field_validator("release_tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for t in v:
            if not t or any(c in t for c in "'\"\n${} "):
                raise ValueError(f"'{t}' is not a tag glob such as \"v*\"")
        return v


class RetryConfig(Section):
    """The one retry policy of every network request (pipeline/retry.py)."""

    attempts: int = Field(default=10, ge=1, le=100, description="tries per request, the first included")
    initial_seconds: float = Field(default=0.5, gt=0, description="first backoff (exponential, with jitter)")
    max_seconds: float = Field(default=30.0, gt=0, description="the longest single backoff")
    max_retry_after_seconds: float = Field(default=120.0, gt=0, description="a longer Retry-After is cut to this")
    budget_seconds: float = Field(default=120.0, gt=0, description="the longest one request keeps retrying;"
                                  " past it the request fails naming the registry and its last error")


class ReportConfig(Section):
    dir: str = "dist"


class Config(Section):
    image: ImageConfig
    tags: TagsConfig = Field(default_factory=TagsConfig)
    registries: Annotated[list[RegistryConfig], Field(default_factory=list)]
    staging: StagingConfig = Field(default_factory=StagingConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    mirror: MirrorConfig = Field(default_factory=MirrorConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    rescan: RescanConfig = Field(default_factory=RescanConfig)
    copy_: CopyConfig = Field(default_factory=CopyConfig, alias="copy")
    sign: SignConfig = Field(default_factory=SignConfig)
    tag: TagStageConfig = Field(default_factory=TagStageConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    ecr: EcrConfig = Field(default_factory=EcrConfig)
    ci: CIConfig = Field(default_factory=CIConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _registries(self) -> Config:
        names = [r.name for r in self.registries]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise At(f"registries[{i}].name", f"the registry name '{name}' is used twice (also registries"
                         f"[{names.index(name)}]); give each [[registries]] entry its own name")
        if self.staging.registry is not None and self.staging.registry not in names:
            raise At("staging.registry", f"'{self.staging.registry}' is not the name of a [[registries]] entry"
                     f" ({', '.join(names) or 'none defined'})")
        if self.mirror.registry is not None and self.mirror.registry not in names:
            raise At("mirror.registry", f"'{self.mirror.registry}' is not the name of a [[registries]] entry"
                     f" ({', '.join(names) or 'none defined'})")
        if self.mirror.enabled and not names:
            raise At("mirror.enabled", "the mirror keeps its copies in a registry: add a [[registries]] entry")
        return self

    @property
    def staging_registry(self) -> RegistryConfig | None:
        if not self.registries:
            return None
        name = self.staging.registry or self.registries[0].name
        return next(r for r in self.registries if r.name == name)

    @property
    def mirror_registry(self) -> RegistryConfig | None:
        """Where the base-image mirror keeps its copies (``[mirror] registry``, default the staging registry)."""
        if self.mirror.registry is None:
            return self.staging_registry
        return self.registry(self.mirror.registry)

    def is_mirror_repository(self, registry: str, repository: str) -> bool:
        """A repository of the base-image mirror (``[mirror] prefix`` in its registry): never a release image,
        so prune, inventory and rescan leave it alone."""
        reg = self.mirror_registry if self.mirror.enabled or self.mirror.registry else None
        if reg is None or reg.name != registry:
            return False
        return repository.startswith(reg.repository(self.mirror.prefix) + "/")

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


def _message(exc: ValidationError, source: str, *, prefix: str = "") -> str:
    """``source: field.path: message`` for the first problem pydantic found (and how many more)."""
    errors = exc.errors()
    err = errors[0]
    loc = _loc(tuple(err["loc"]))
    if prefix:
        loc = prefix + (loc if loc.startswith("[") or not loc else "." + loc)
    msg = err["msg"]
    below = (err.get("ctx") or {}).get("error")
    if isinstance(below, At):
        msg = msg.replace("{here}", loc)
    if isinstance(below, At) and below.where:
        where = below.where
        loc = loc + where if where.startswith((".", "[")) or not loc else f"{loc}.{where}"
        loc = loc.lstrip(".")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see README's config reference)"
    elif err["type"] == "missing":
        msg = "required"
    msg = msg.removeprefix("Value error, ")
    more = len(errors) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {loc or '(top level)'}: {msg}{suffix}"


def _find_secrets(data: Any, loc: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str] | None:
    if isinstance(data, dict):
        for key, value in data.items():
            k = str(key).lower()
            if k in SECRET_KEYS and value not in (None, "", False) and not isinstance(value, dict):
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
                if loc[:2] == ("image", "build_args"):
                    return loc, (f"this looks like {what}; a build argument is kept in the image's history: pass it"
                                 f" as a build secret, [image.secrets] {loc[-1]} = {{ env = \"VAR\" }}")
                return loc, f"this looks like {what}; secrets do not belong in the config: put it in an environment" \
                            " variable or credential helper and name that (e.g. password_env)"
    return None


def _validate_tag_lines(cfg: Config) -> list[tuple[str, str]]:
    from pipeline.metadata.rules import TagRuleError, parse_flavor, parse_rules

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
        raise ConfigError(_message(exc, source)) from None
    problems = _validate_tag_lines(cfg)
    if problems:
        where, message = problems[0]
        raise ConfigError(f"{source}: {where}: {message}")
    _validate_lifecycle(cfg, source)
    return cfg


def _validate_lifecycle(cfg: Config, source: str) -> None:
    """[lifecycle] names only configured registries (the rules are checked by their models; the policy_file
    when prune or inventory reads it)."""
    names = [r.name for r in cfg.registries]
    for i, name in enumerate(cfg.lifecycle.registries):
        if name not in names:
            raise ConfigError(f"{source}: lifecycle.registries[{i}]: '{name}' is not the name of a [[registries]]"
                              f" entry ({', '.join(names) or 'none defined'})")
    for name in cfg.lifecycle.registry_api:
        if name not in names:
            raise ConfigError(f"{source}: lifecycle.registry_api.{name}: not the name of a [[registries]] entry")


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
