"""Prune: the lifecycle policy over every configured registry, previewed by default, applied with ``--apply``.

Not a release stage (the release never deletes): ``pipeline prune`` walks the repositories of the
configured registries (:func:`targets`), gives every image a push time from the best source it has
(pipeline/hygiene/walker.py), evaluates the ECR rules (pipeline/hygiene/lifecycle.py) and prints one row per image:
digest, tags, age and its source, the rule that claimed it, keep or expire.

Which rules where:

* every repository gets the ``[lifecycle]`` rules (TOML or ``policy_file``);
* the **staging repository** also gets the built-in candidate rule first: the newest
  ``lifecycle.keep_candidates`` images whose tags are *all* candidate tags (``candidate-<sha7>-<key12>``,
  split builds' ``…-<platform>``) are kept, older candidate-only images expire. An image that also
  carries a release tag or ``buildcache`` is not a candidate-only image, so the rule never touches a
  release, even when staging and release share a repository (the default).

``--apply`` first checks that every registry involved can delete (a registry:2 without
``storage.delete.enabled``, a GHCR token without ``delete:packages``…): if one cannot, nothing is
deleted anywhere and the message names it. Then it deletes image by image and lists the tags
again to report what is really gone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import log
from pipeline.access.registries import Access
from pipeline.config import Config, RegistryConfig
from pipeline.errors import ConfigError, InfraError
from pipeline.hygiene import lifecycle
from pipeline.hygiene import walker as hygiene
from pipeline.tools import vendors

CONCURRENCY = 8


@dataclass(frozen=True)
class Target:
    registry: RegistryConfig
    repository: str
    staging: bool = False


def registries_for(config: Config, only: Sequence[str] = ()) -> list[RegistryConfig]:
    names = list(only) or list(config.lifecycle.registries) or [r.name for r in config.registries]
    for n in names:
        config.registry(n)  # ConfigError naming the known ones
    return [config.registry(n) for n in names]


def staging_repository(config: Config) -> tuple[str, str] | None:
    reg = config.staging_registry
    if reg is None:
        return None
    return reg.name, reg.repository(config.staging.repository or config.image.name)


def targets(config: Config, access: Access, only: Sequence[str] = ()) -> list[Target]:
    """Every (registry, repository) to walk: the image's repository (and staging's), or ``lifecycle.repositories``."""
    staging = staging_repository(config)
    out: list[Target] = []
    for reg in registries_for(config, only):
        repos: list[str] = []
        for name in config.lifecycle.repositories or [config.image.name]:
            if name == "*":
                prefix = f"{reg.namespace}/" if reg.namespace else ""
                repos += [r for r in access.client(reg).catalog() if r.startswith(prefix)
                          and not config.is_mirror_repository(reg.name, r)]   # base images are not ours to prune
            else:
                repos.append(reg.repository(name))
        if staging and staging[0] == reg.name:
            repos.append(staging[1])
        for repo in dict.fromkeys(repos):
            out.append(Target(reg, repo, staging == (reg.name, repo)))
    return out


def vendor_kind(config: Config, reg: RegistryConfig) -> str:
    kind = config.lifecycle.registry_api.get(reg.name, "auto")
    return vendors.host_kind(reg.host, reg.auth) if kind == "auto" else kind


def backend(config: Config, access: Access, reg: RegistryConfig) -> Any:
    kind = vendor_kind(config, reg)
    region = reg.ecr_region or access.env.get("AWS_REGION") or access.env.get("AWS_DEFAULT_REGION")
    return vendors.adapter(kind, name=reg.name, host=reg.host, oci=access.client(reg),
                           credentials=None if kind == "ecr" else access.credentials(reg), policy=access.policy,
                           region=region, registry_id=reg.ecr_account, env=access.env,
                           scheme="http" if reg.allow_http else "https")


def policy_for(config: Config, target: Target, base: lifecycle.Policy) -> lifecycle.Policy:
    if target.staging and config.lifecycle.keep_candidates > 0:
        return base.with_builtin([lifecycle.candidate_rule(config.staging.tag_prefix,
                                                           config.lifecycle.keep_candidates)])
    return base


@dataclass
class PruneReport:
    now: datetime
    applied: bool
    plans: list[hygiene.RepoPlan]
    age_sources: tuple[str, ...]
    release_files: list[str] = field(default_factory=list)
    deleted: list[hygiene.Deleted] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[hygiene.Deleted]:
        return [d for d in self.deleted if d.outcome in ("failed", "skipped")]

    def summary(self) -> dict[str, int]:
        rows = [r for p in self.plans for r in p.rows]
        return {"repositories": len(self.plans), "tags": sum(p.tag_count for p in self.plans), "images": len(rows),
                "keep": sum(1 for r in rows if r.verdict == "keep"),
                "expire": sum(1 for r in rows if r.verdict == "expire"),
                "manifests_to_delete": sum(len(p.deletions()) for p in self.plans),
                "deleted": sum(1 for d in self.deleted if d.outcome == "deleted"),
                "already_gone": sum(1 for d in self.deleted if d.outcome == "gone"),
                "failed": len(self.failed)}

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "now": self.now.isoformat(), "age_sources": list(self.age_sources),
                "release_manifests": self.release_files, "summary": self.summary(),
                "repositories": [p.to_dict(self.now) for p in self.plans],
                "deleted": [d.to_dict() for d in self.deleted], "leftovers": self.leftovers, "hints": self.hints}

    def text(self) -> str:
        from io import StringIO

        from rich.console import Console
        from rich.table import Table

        buf = StringIO()
        console = Console(file=buf, width=160, no_color=True, highlight=False)
        for p in self.plans:
            table = Table(title=f"{p.registry}: {p.repository} ({p.vendor}; {p.tag_count} tags)", title_justify="left")
            for col in ("verdict", "digest", "tags", "kind", "age", "age source", "rule", "why"):
                table.add_column(col, overflow="fold")
            for r in p.rows:
                age = r.age_days(self.now)
                tags = ", ".join(r.tags[:3]) + (f" +{len(r.tags) - 3}" if len(r.tags) > 3 else "")
                extra = f" +{len(r.attachments)} sig/att" if r.attachments else ""
                table.add_row(r.verdict.upper() if r.verdict == "expire" else r.verdict, r.digest[7:19], tags or "-",
                              r.kind + extra, "-" if age is None else f"{age:.1f}d",
                              r.age_source + (" (approx.)" if r.approximate else ""), r.rule or "-", r.reason)
            console.print(table)
            for note in p.notes:
                console.print(f"  note: {note}")
        s = self.summary()
        mode = "applied" if self.applied else "preview (dry run; --apply deletes)"
        repos = f"{s['repositories']} repositor{'y' if s['repositories'] == 1 else 'ies'}"
        console.print(f"{mode}: {s['images']} images in {repos} ({s['tags']} tags):"
                      f" keep {s['keep']}, expire {s['expire']}; {s['manifests_to_delete']} manifests to delete")
        console.print(f"push times from: {', '.join(self.age_sources)} (first that knows; "
                      f"{len(self.release_files)} release manifest(s))")
        if self.applied:
            console.print(f"deleted {s['deleted']}, already gone {s['already_gone']}, failed {s['failed']}")
            for d in self.failed:
                console.print(f"  {d.outcome}: {d.registry} {d.repository}@{d.digest[:19]} {d.what}: {d.error}")
            for left in self.leftovers:
                console.print(f"  still listed: {left}")
        for hint in self.hints:
            console.print(f"hint: {hint}")
        return buf.getvalue().rstrip()


def collect(config: Config, access: Access, backends: dict[str, Any], *, now: datetime, only: Sequence[str] = (),
            detail: bool = False, repository: str | None = None,
            ) -> tuple[list[tuple[Target, hygiene.Snapshot]], hygiene.ReleaseFacts]:
    """Walk every target (or only ``repository``) into snapshots; fills ``backends`` (registry name -> vendor
    adapter; the caller closes them)."""
    facts = hygiene.load_release_facts(config.lifecycle.release_manifests)
    out: list[tuple[Target, hygiene.Snapshot]] = []
    for t in targets(config, access, only):
        if repository is not None and t.repository != repository:
            continue
        if t.registry.name not in backends:
            backends[t.registry.name] = backend(config, access, t.registry)
        walker = hygiene.Walker(access.client(t.registry), registry=t.registry.name,
                                vendor=backends[t.registry.name], facts=facts, age_sources=config.lifecycle.age_sources,
                                now=now, concurrency=CONCURRENCY, detail=detail)
        out.append((t, walker.walk(t.repository)))
    return out, facts


def run(config: Config, env: Mapping[str, str], *, now: datetime, apply: bool = False, only: Sequence[str] = (),
        source: str = "config", repository: str | None = None, chosen: str | None = None) -> PruneReport:
    """Preview (default) or apply the lifecycle policy. Raises InfraError when a registry cannot delete.

    ``repository`` limits it to that repository of the ``only`` registry; ``chosen`` (with it) deletes that one
    image instead of what the rules expire (the inventory page's delete), under the same protection."""
    if apply and not config.lifecycle.enabled:
        raise ConfigError(f"{source}: lifecycle.enabled: false, so prune only previews; set [lifecycle] enabled ="
                          " true to let 'prune --apply' delete")
    base = lifecycle.policy(config.lifecycle, source)
    logger = log.get("prune")
    backends: dict[str, Any] = {}
    with Access(config, env) as access:
        try:
            walked, facts = collect(config, access, backends, now=now, only=only, repository=repository)
            if repository is not None and not walked:
                raise ConfigError(f"{', '.join(only) or 'no registry'}: {repository} is not a repository prune looks"
                                  " at (the image's, staging's or a [lifecycle] one)")
            if chosen is not None and not any(chosen in snap.images for _, snap in walked):
                raise ConfigError(f"{repository}: no image {chosen} (already deleted?)")
            plans = [hygiene.plan(snap, policy_for(config, t, base), now, chosen=chosen) for t, snap in walked]
            report = PruneReport(now, apply, plans, tuple(config.lifecycle.age_sources), facts.files)
            for p in plans:
                logger.info("prune.planned", registry=p.registry, repo=p.repository, images=len(p.rows),
                            expire=len(p.expired), deletions=len(p.deletions()))
            if not apply:
                return report
            problems = hygiene.preflight(plans, backends)
            if problems:
                raise InfraError("prune --apply: nothing was deleted: " + "; ".join(problems) +
                                 " (prune the others with --registry NAME)")
            report.deleted = hygiene.apply(plans, backends)
            touched = {d.registry for d in report.deleted if d.outcome == "deleted"}
            report.leftovers = hygiene.leftovers(plans, report.deleted,
                                                 {t.registry.name: access.client(t.registry) for t, _ in walked})
            for reg in registries_for(config, only):
                if reg.name in touched:
                    serve = Path(".pipeline/registry") / reg.name / "config.yml" if reg.serve else None
                    hint = hygiene.gc_hint(reg.name, vendor_kind(config, reg), serve)
                    if hint:
                        report.hints.append(hint)
            return report
        finally:
            for b in backends.values():
                b.close()


def ecr_policy(config: Config, source: str = "config") -> tuple[str, int]:
    """``pipeline prune --emit-ecr-policy``: the [lifecycle] rules as an ECR lifecycle policy document
    (JSON text) and how many rules it has. The built-in candidate rule cannot be expressed in ECR."""
    policy = lifecycle.policy(config.lifecycle, source)
    if config.lifecycle.keep_candidates:
        log.get().warning("policy.builtin_left_out", rule="staging candidates",
                          note="ECR cannot select images whose tags are all candidate tags; the document"
                               " holds the [lifecycle] rules only")
    return policy.ecr_json(), len(policy.to_ecr()["rules"])
