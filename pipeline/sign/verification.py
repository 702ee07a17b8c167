"""Verification: tags resolve to the released digest, and cosign verifies its signature and SBOMs.

One engine for the verify stage (after tag, expected digest = the build's) and for
``pipeline verify REF`` (expected digest = ``--digest``, else what the registries agree on).
Per registry it checks, over the registry API and with cosign (both on-registry formats; the
project's registry client reads the artifacts into a local layout that cosign verifies with
``--local-image``, so no cosign request meets a failing registry):

1. ``tag``: each reference resolves, to the expected digest;
2. ``signature``: ``cosign verify`` of the digest's signatures (by digest: no second tag lookup)
   with the configured public key, or keyless identity and issuer (each platform manifest too
   with ``sign.recursive``);
3. ``attestation``: ``cosign verify-attestation --type cyclonedx`` per platform manifest
   (with ``sign.sbom``).

Every failed check names the registry, the reference and cosign's reason. A verification that
said no is a policy failure (exit 1); a registry or cosign that could not answer is exit 3.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import log
from pipeline.access.registries import Access
from pipeline.config import Config, RegistryConfig
from pipeline.sign import keys, layouts
from pipeline.sign.attachments import SIGNATURE
from pipeline.tools import cosign
from pipeline.tools.registry import INDEX_TYPES, Registry, index_platforms

SBOM_TYPE = "cyclonedx"


@dataclass(frozen=True)
class Target:
    """One reference to check: a tag (or a digest) in one registry's repository."""

    registry: RegistryConfig
    repository: str
    reference: str            # tag or sha256:… digest

    @property
    def ref(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry.host}/{self.repository}{sep}{self.reference}"


@dataclass(frozen=True)
class Check:
    registry: str
    ref: str
    check: str                # "tag" | "signature" | "attestation"
    ok: bool
    detail: str
    platform: str | None = None

    def line(self) -> str:
        what = self.check + (f" {self.platform}" if self.platform else "")
        return f"{self.registry}: {self.ref} {what}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Report:
    digest: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def failure_message(self) -> str:
        problems = self.problems
        if not problems:
            return "verification failed: nothing was checked"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"verification failed: {problems[0].line()}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "digest": self.digest, "checks": [c.to_dict() for c in self.checks],
                "problems": [c.line() for c in self.problems]}

    def text(self) -> str:
        lines = [f"{'ok  ' if c.ok else 'FAIL'} {c.registry:<10} {c.check:<11} {c.platform or '':<14}"
                 f" {c.ref}  {c.detail}" for c in self.checks]
        lines.append(("verified: " if self.ok else "") + (f"{self.digest}" if self.ok else self.failure_message()))
        return "\n".join(lines)


def platforms_of(client: Registry, repo: str, digest: str) -> dict[str, str]:
    """Platform → manifest digest of an index (attestation manifests left out); {} for a single manifest."""
    body, media, _ = client.manifest_get(repo, digest)
    if media not in INDEX_TYPES:
        return {}
    return index_platforms(json.loads(body))


def _consensus(found: Mapping[Target, str]) -> str | None:
    if not found:
        return None
    counts = Counter(found.values())
    best = max(counts.values())
    return next(d for d in found.values() if counts[d] == best)  # ties: the first registry's


def verify(config: Config, env: Mapping[str, str], targets: Sequence[Target], *, expected: str | None = None,
           platforms: Mapping[str, str] | None = None, workdir: Path | None = None,
           signatures: bool | None = None) -> Report:
    """Run every check; never raises for a verification that said no (see :class:`Report`)."""
    sign = config.sign
    with_cosign = sign.enabled if signatures is None else signatures
    report = Report(expected)
    logger = log.get(stage="verify")
    with Access(config, env) as access, keys.temporary_dir() as tmp:
        found: dict[Target, str] = {}
        for t in targets:
            head = access.client(t.registry).manifest_head(t.repository, t.reference)
            if head is None:
                report.checks.append(Check(t.registry.name, t.ref, "tag", False, "not found"))
            else:
                found[t] = head.digest
        digest = expected or _consensus(found)
        report.digest = digest
        for t, d in found.items():
            if d == digest:
                report.checks.append(Check(t.registry.name, t.ref, "tag", True, f"→ {d}"))
            else:
                whose = "the released digest" if expected else "the other registries'"
                report.checks.append(Check(t.registry.name, t.ref, "tag", False,
                                           f"points at {d}, not {whose} {digest}"))
        if not with_cosign or digest is None:
            return report
        major = cosign.installed_major()
        runner = cosign.Cosign(keys.passthrough_env(env, *keys.config_keys(sign)))   # no registry credentials
        base = keys.verifier(sign, env, major, Path(workdir or tmp), runner=runner)
        repos: dict[tuple[str, str], tuple[RegistryConfig, str]] = {}
        for t in targets:
            repos.setdefault((t.registry.name, t.repository), (t.registry, t.repository))

        def one(reg: RegistryConfig, repo: str) -> list[Check]:
            client = access.client(reg)
            if client.manifest_head(repo, digest) is None:
                return [Check(reg.name, f"{reg.host}/{repo}@{digest}", "signature", False,
                              "the digest is not in this registry")]
            plats = dict(platforms) if platforms is not None else platforms_of(client, repo, digest)
            out: list[Check] = []
            subjects: list[tuple[str | None, str]] = [(None, digest)]
            if sign.recursive:
                subjects += sorted(plats.items())
            checks = [(p, d, SIGNATURE) for p, d in subjects]
            if sign.sbom:
                checks += [(p, d, SBOM_TYPE) for p, d in sorted(plats.items())]
            for platform, d, kind in checks:
                ref = f"{reg.host}/{repo}@{d}"
                what = "signature" if kind == SIGNATURE else "SBOM attestation"
                found, r = layouts.check(client, repo, d, kind, runner, base, Path(tmp),
                                         f"verify the {what} of {reg.name}: {ref}")
                if kind == SIGNATURE:
                    out.append(Check(reg.name, ref, "signature", r.ok,
                                     f"{found.legacy_count + found.bundle_count} signature(s), ours verified"
                                     if r.ok else r.reason, platform))
                else:
                    out.append(Check(reg.name, ref, "attestation", r.ok,
                                     f"{found.legacy_count + found.bundle_count} {SBOM_TYPE} attestation(s), ours"
                                     " verified" if r.ok else r.reason, platform))
            return out

        with ThreadPoolExecutor(max_workers=max(1, min(len(repos), config.copy_.concurrency))) as pool:
            for checks in pool.map(lambda rr: one(*rr), repos.values()):
                report.checks.extend(checks)
    for c in report.problems:
        logger.warning("verification.failed", registry=c.registry, ref=c.ref, check=c.check, platform=c.platform,
                       reason=c.detail)
    return report


# --------------------------------------------------------------------------- what `pipeline verify REF` checks


def targets_for(config: Config, ref: str) -> tuple[list[Target], str | None]:
    """REF → targets and the digest REF names (if any).

    * a tag (``1.2.3``) or a digest (``sha256:…``, ``@sha256:…``): the configured image in every registry;
    * a full reference ``host[:port]/repo[:tag][@digest]``: that one (a configured registry's credentials
      when the host is one of them, else the docker config's).
    """
    from pipeline import refs

    text = ref.strip()
    text = text.removeprefix("@")
    if "/" not in text:
        if text.startswith("sha256:"):
            if not refs.DIGEST.match(text):
                raise ValueError(f"'{ref}' is not a sha256 digest")
            return [Target(r, r.repository(config.image.name), text) for r in config.release_registries], text
        if not refs.TAG.match(text):
            raise ValueError(f"'{ref}' is neither a tag, a digest nor an image reference")
        return [Target(r, r.repository(config.image.name), text) for r in config.release_registries], None
    parsed = refs.parse(text)
    reg = next((r for r in config.registries if r.host == parsed.registry), None)
    if reg is None:
        reg = RegistryConfig(name=parsed.registry.replace(":", "_"), url=parsed.registry, auth="docker")
    reference = parsed.tag or parsed.digest or "latest"
    return [Target(reg, parsed.repository, reference)], parsed.digest


def verify_ref(config: Config, env: Mapping[str, str], ref: str, digest: str | None = None) -> Report:
    """``pipeline verify REF [--digest D]``: the checks for REF in every registry it names."""
    from pipeline import refs
    from pipeline.errors import UsageError

    try:
        targets, named = targets_for(config, ref)
    except (ValueError, refs.RefError) as exc:
        raise UsageError(f"pipeline verify: {exc}") from None
    if digest and not refs.DIGEST.match(digest):
        raise UsageError(f"pipeline verify --digest: '{digest}' is not a sha256 digest")
    if not targets:
        raise UsageError("pipeline verify: the config names no registry to look in")
    return verify(config, env, targets, expected=digest or named)
