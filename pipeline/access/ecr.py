"""ECR repository set-up (``pipeline ecr ensure``) and access policies (``pipeline ecr policy``).

The pure parts build what ECR is asked for from ``[ecr]`` and ``[lifecycle]``: the
``CreateRepository`` request, the lifecycle policy document (validated by
:mod:`pipeline.hygiene.lifecycle`, the same rules ``pipeline prune`` evaluates), and the repository
policy that lets other accounts pull (and, if configured, push). :func:`ensure` compares
each repository with that and makes only the missing changes, through
:class:`pipeline.tools.ecr.EcrClient` (boto3).

Encryption cannot change after a repository exists: a difference is reported, not "fixed".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline import log
from pipeline.access.registries import ecr_region
from pipeline.config import Config, EcrConfig, RegistryConfig
from pipeline.errors import ConfigError, UsageError
from pipeline.hygiene import lifecycle
from pipeline.retry import RetryPolicy
from pipeline.tools.ecr import EcrClient

PULL_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
PUSH_ACTIONS = ("ecr:CompleteLayerUpload", "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart")


# --------------------------------------------------------------------------- pure: what we want


@dataclass(frozen=True)
class RepositorySettings:
    scan_on_push: bool
    mutability: str                              # MUTABLE | IMMUTABLE | IMMUTABLE_WITH_EXCLUSION
    exclusions: tuple[str, ...]                  # wildcard filters that stay mutable
    encryption: str                              # AES256 | KMS
    kms_key: str | None
    resource_tags: tuple[tuple[str, str], ...] = ()

    @property
    def exclusion_filters(self) -> list[dict[str, str]]:
        return [{"filterType": "WILDCARD", "filter": f} for f in self.exclusions]


def settings(ecr: EcrConfig) -> RepositorySettings:
    if not ecr.tag_immutability:
        mutability = "MUTABLE"
    else:
        mutability = "IMMUTABLE_WITH_EXCLUSION" if ecr.mutable_tags else "IMMUTABLE"
    return RepositorySettings(ecr.scan_on_push, mutability, tuple(ecr.mutable_tags), ecr.encryption, ecr.kms_key,
                              tuple(sorted(ecr.resource_tags.items())))


def create_request(name: str, want: RepositorySettings, registry_id: str | None) -> dict[str, Any]:
    """``CreateRepository`` parameters for ``name``."""
    req: dict[str, Any] = {"repositoryName": name, "imageTagMutability": want.mutability,
                           "imageScanningConfiguration": {"scanOnPush": want.scan_on_push},
                           "encryptionConfiguration": {"encryptionType": want.encryption}}
    if want.exclusions:
        req["imageTagMutabilityExclusionFilters"] = want.exclusion_filters
    if want.kms_key:
        req["encryptionConfiguration"]["kmsKey"] = want.kms_key
    if want.resource_tags:
        req["tags"] = [{"Key": k, "Value": v} for k, v in want.resource_tags]
    if registry_id:
        req["registryId"] = registry_id
    return req


def drift(current: Mapping[str, Any], want: RepositorySettings) -> dict[str, list[str]]:
    """What differs in an existing repository: ``{"fix": [...], "report": [...]}``.

    ``fix`` names settings :func:`ensure` changes (``scan_on_push``, ``mutability``);
    ``report`` lists differences ECR cannot change in place (encryption).
    """
    fix: list[str] = []
    report: list[str] = []
    scan = bool((current.get("imageScanningConfiguration") or {}).get("scanOnPush"))
    if scan != want.scan_on_push:
        fix.append("scan_on_push")
    mutability = current.get("imageTagMutability") or "MUTABLE"
    filters = sorted(f.get("filter", "") for f in current.get("imageTagMutabilityExclusionFilters") or [])
    if mutability != want.mutability or (want.exclusions and filters != sorted(want.exclusions)):
        fix.append("mutability")
    enc = current.get("encryptionConfiguration") or {}
    have_type = enc.get("encryptionType") or "AES256"
    if have_type != want.encryption:
        report.append(f"encryption is {have_type}, config says {want.encryption} (ECR cannot change it; recreate the"
                      " repository to change it)")
    elif want.kms_key and enc.get("kmsKey") and not _same_kms_key(enc["kmsKey"], want.kms_key):
        report.append(f"KMS key is {enc['kmsKey']}, config says {want.kms_key} (ECR cannot change it)")
    return {"fix": fix, "report": report}


def _same_kms_key(have: str, want: str) -> bool:
    # ECR answers the key ARN; config may name an ARN, a key id or an alias
    return have == want or have.endswith("/" + want.split("/")[-1]) or want.startswith("alias/")


def ecr_registries(cfg: Config, names: list[str] | None = None) -> list[RegistryConfig]:
    """The ECR entries of ``cfg`` (``auth = "ecr"`` or an ECR host), or the named ones."""
    if names:
        regs = [cfg.registry(n) for n in names]
        for r in regs:
            if not r.is_ecr:
                raise ConfigError(f"registry '{r.name}' ({r.url}) is not ECR (auth = \"ecr\" or an"
                                  " <account>.dkr.ecr.<region>.amazonaws.com url)")
        return regs
    regs = [r for r in cfg.registries if r.is_ecr]
    if not regs:
        raise ConfigError("no ECR registry in the config (a [[registries]] entry with auth = \"ecr\" or an"
                          " <account>.dkr.ecr.<region>.amazonaws.com url)")
    return regs


def repositories(cfg: Config, reg: RegistryConfig) -> list[str]:
    """Repositories to set up in ``reg``: the image's, the staging one when staging is ``reg``, and ``[ecr]``'s."""
    repos = [reg.repository(cfg.image.name)]
    staging = cfg.staging_registry
    if staging is not None and staging.name == reg.name:
        repos.append(reg.repository(cfg.staging.repository or cfg.image.name))
    repos += [reg.repository(r) for r in cfg.ecr.repositories]
    return list(dict.fromkeys(repos))


def lifecycle_document(cfg: Config, source: str = "config") -> dict[str, Any] | None:
    """The ECR lifecycle policy from ``[lifecycle]`` (rules or policy_file), or ``None`` without rules."""
    if not cfg.ecr.lifecycle_policy or not (cfg.lifecycle.rules or cfg.lifecycle.policy_file):
        return None
    document: dict[str, Any] = lifecycle.policy(cfg.lifecycle, source).to_ecr()
    return document if document.get("rules") else None


def principal_arn(principal: str) -> str:
    """An account id becomes its root ARN (the whole account, as IAM grants it); ARNs stay."""
    return f"arn:aws:iam::{principal}:root" if principal.isdigit() else principal


def repository_policy(ecr: EcrConfig) -> dict[str, Any] | None:
    """The repository policy (IAM JSON) for ``[ecr]``'s principals, or ``None`` when none are configured.

    Pull: ``BatchGetImage``, ``GetDownloadUrlForLayer``, ``BatchCheckLayerAvailability`` (what
    ``docker pull`` needs; ``GetAuthorizationToken`` is granted by the puller's own IAM policy,
    it is not a repository action). Push adds the four upload actions.
    """
    statements: list[dict[str, Any]] = []
    pull = sorted({principal_arn(p) for p in ecr.pull_principals})
    push = sorted({principal_arn(p) for p in ecr.push_principals})
    if pull:
        statements.append({"Sid": "CrossAccountPull", "Effect": "Allow", "Principal": {"AWS": pull},
                           "Action": list(PULL_ACTIONS)})
    if ecr.pull_organizations:
        statements.append({"Sid": "OrganizationPull", "Effect": "Allow", "Principal": "*",
                           "Action": list(PULL_ACTIONS),
                           "Condition": {"StringEquals": {"aws:PrincipalOrgID": sorted(ecr.pull_organizations)}}})
    if push:
        statements.append({"Sid": "CrossAccountPush", "Effect": "Allow", "Principal": {"AWS": push},
                           "Action": list(PULL_ACTIONS + PUSH_ACTIONS)})
    if not statements:
        return None
    return {"Version": "2012-10-17", "Statement": statements}


def same_document(a: Any, b: Any) -> bool:
    """Equal as JSON, ignoring key order and the order of list items where order means nothing."""
    return _canonical(a) == _canonical(b)


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        if all(isinstance(v, str) for v in items):
            return sorted(items)
        return items
    return value


# --------------------------------------------------------------------------- the run


@dataclass
class RepositoryResult:
    registry: str
    repository: str
    created: bool = False
    changed: list[str] = field(default_factory=list)      # settings changed on an existing repository
    lifecycle: str = "none"                               # put | unchanged | none
    policy: str = "none"                                  # set | unchanged | none
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "repository": self.repository, "created": self.created,
                "changed": list(self.changed), "lifecycle_policy": self.lifecycle, "repository_policy": self.policy,
                "warnings": list(self.warnings)}

    def sentence(self) -> str:
        if self.created:
            what = ["created"]
        else:
            what = ["updated " + ", ".join(self.changed) if self.changed else "as configured"]
        if self.lifecycle != "none":
            what.append(f"lifecycle policy {self.lifecycle}")
        if self.policy != "none":
            what.append(f"repository policy {self.policy}")
        return f"{self.registry}: {self.repository}: " + "; ".join(what)



def put_if_different(have: Any, want: Any, put: Callable[[], object]) -> bool:
    """Put ``want`` unless the registry already holds the same document; True when it was put."""
    if have is not None and same_document(have, want):
        return False
    put()
    return True


def ensure(cfg: Config, env: Mapping[str, str], *, registries: list[str] | None = None, source: str = "config",
           client_factory: Callable[[str, Mapping[str, str]], Any] | None = None) -> list[RepositoryResult]:
    """Create missing repositories with ``[ecr]``'s settings, align what ECR can change, put the policies."""
    regs = ecr_registries(cfg, registries)
    want = settings(cfg.ecr)
    lifecycle = lifecycle_document(cfg, source)
    policy = repository_policy(cfg.ecr)
    retry_policy = RetryPolicy.from_config(cfg.retry)
    make = client_factory or (lambda region, e: EcrClient(region, e, policy=retry_policy))
    results: list[RepositoryResult] = []
    logger = log.get()
    for reg in regs:
        client = make(ecr_region(reg, env), env)
        account = reg.ecr_account
        for repo in repositories(cfg, reg):
            res = RepositoryResult(reg.name, repo)
            current = client.describe_repository(repo, account)
            if current is None:
                client.create_repository(create_request(repo, want, account))
                res.created = True
                logger.info("ecr.repository_created", registry=reg.name, repository=repo,
                            mutability=want.mutability, scan_on_push=want.scan_on_push, encryption=want.encryption)
            else:
                d = drift(current, want)
                if "scan_on_push" in d["fix"]:
                    client.put_scanning(repo, account, want.scan_on_push)
                if "mutability" in d["fix"]:
                    client.put_mutability(repo, account, want.mutability, want.exclusion_filters)
                res.changed = d["fix"]
                res.warnings += d["report"]
                for w in d["report"]:
                    logger.warning("ecr.repository_differs", registry=reg.name, repository=repo, detail=w)
                if d["fix"]:
                    logger.info("ecr.repository_updated", registry=reg.name, repository=repo, changed=d["fix"])
            if lifecycle is not None:
                res.lifecycle = "put" if put_if_different(
                    None if res.created else client.lifecycle_policy(repo, account), lifecycle,
                    lambda: client.put_lifecycle_policy(repo, account, lifecycle)) else "unchanged"
                if res.lifecycle == "put":
                    logger.info("ecr.lifecycle_put", registry=reg.name, repository=repo,
                                rules=len(lifecycle["rules"]))
            if policy is not None:
                res.policy = "set" if put_if_different(
                    None if res.created else client.repository_policy(repo, account), policy,
                    lambda: client.set_repository_policy(repo, account, policy)) else "unchanged"
                if res.policy == "set":
                    logger.info("ecr.policy_set", registry=reg.name, repository=repo)
            if want.mutability != "MUTABLE" and not want.exclusions:
                res.warnings.append("tags are immutable: moving tags (latest, 1, 1.2) will be refused; list them in"
                                    " [ecr].mutable_tags")
            results.append(res)
    return results


def policy_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


__all__ = ["PULL_ACTIONS", "PUSH_ACTIONS", "RepositoryResult", "RepositorySettings", "create_request", "drift",
           "ecr_registries", "ensure", "lifecycle_document", "policy_json", "principal_arn", "repositories",
           "repository_policy", "same_document", "settings"]


def policy(cfg: Config, env: Mapping[str, str], *, registries: list[str] | None = None,
           apply: bool = False) -> tuple[dict[str, Any], list[str]]:
    """``pipeline ecr policy``: the repository policy for [ecr]'s principals, set on every ECR
    repository with ``apply``; the document and ``registry:repository`` where it was set."""
    document = repository_policy(cfg.ecr)
    if document is None:
        raise UsageError("pipeline ecr policy: [ecr] names no principals (pull_principals, push_principals or"
                         " pull_organizations)")
    applied: list[str] = []
    if apply:
        for reg in ecr_registries(cfg, registries):
            client = EcrClient(ecr_region(reg, env), env, policy=RetryPolicy.from_config(cfg.retry))
            for repo in repositories(cfg, reg):
                client.set_repository_policy(repo, reg.ecr_account, document)
                applied.append(f"{reg.name}:{repo}")
                log.get().info("ecr.policy_set", registry=reg.name, repository=repo)
    return document, applied
