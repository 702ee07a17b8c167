"""Tag stage, last: put the index under every release tag in every registry.

It refuses to run unless every enabled earlier gate (build, scan, staging, copy, sign)
produced its output in this run: a release tag never lands on an unchecked
image. Tags already on the digest are skipped (idempotent re-run). A tag that a newer release
shares (``latest``, ``6``, ``6.1`` when 6.2.0 or 6.1.1 is out) stays with that release, also when
both run at once: :mod:`pipeline.metadata.claims` says who claims what, :class:`Tagger` settles it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipeline import log
from pipeline.access.registries import Access
from pipeline.build.build import BuildOutput
from pipeline.config import RegistryConfig
from pipeline.context import Context
from pipeline.errors import InfraError, PolicyError
from pipeline.metadata.tags import TagsOutput, claims_of
from pipeline.stage import no_tags_reason
from pipeline.stages.copy import CopyOutput
from pipeline.tools.registry import Registry, RegistryError

#: (stage, config section whose ``enabled`` can turn it off; None: always on)
GATES = (("build", "build"), ("scan", "scan"), ("staging", None), ("copy", "copy_"), ("sign", "sign"))


@dataclass(frozen=True)
class TagOutput:
    digest: str
    written: dict[str, list[str]]      # registry -> tags put in this run
    present: dict[str, list[str]]      # registry -> tags that already pointed at the digest
    failed: dict[str, str]             # registries left out (best-effort copy failures)
    yielded: dict[str, dict[str, str]] = field(default_factory=dict)  # registry -> shared tag -> newer holder


def unmet_gates(ctx: Context) -> list[str]:
    """Enabled gates that have not passed in this run (so tagging must not happen)."""
    missing = []
    for stage, section in GATES:
        if _enabled(ctx, section) and stage not in ctx.outputs:
            why = "skipped with --skip" if stage in ctx.options.skip else "did not pass"
            missing.append(f"{stage} ({why})")
    return missing


def _enabled(ctx: Context, section: str | None) -> bool:
    return section is None or bool(getattr(ctx.config, section).enabled)


class Tagger:
    """Puts release tags in the registries; a shared tag goes to the newest release that claims it."""

    def __init__(self, ctx: Context, access: Access, logger: Any) -> None:
        build: BuildOutput = ctx.outputs["build"]
        self.cfg, self.access, self.logger = ctx.config, access, logger
        self.digest, self.body, self.media = build.digest, build.index, build.media_type
        self.claims = claims_of(ctx)
        self.env = ctx.env
        self._verified: dict[tuple[str, str], bool] = {}
        self._heads: dict[tuple[str, str], str | None] = {}   # (registry, version tag) -> digest, per round

    def _where(self, reg_name: str) -> tuple[RegistryConfig, Registry, str]:
        reg = self.cfg.registry(reg_name)
        return reg, self.access.client(reg), reg.repository(self.cfg.image.name)

    def put(self, reg_name: str, tag: str, holder: tuple[str, str] | None = None) -> bool:
        """Put ``tag`` on our digest, or on ``holder`` (its main tag and digest); False when it was there."""
        reg, client, repo = self._where(reg_name)
        digest = holder[1] if holder else self.digest
        head = client.manifest_head(repo, tag)
        if head is not None and head.digest == digest:
            return False
        body, media = (self.body, self.media) if holder is None else client.manifest_get(repo, digest)[:2]
        put = client.manifest_put(repo, tag, body, media)
        if put != digest:
            raise InfraError(f"registry {reg.name}: {repo}:{tag} points at {put}, not {digest}")
        ref = f"{reg.url}/{self.cfg.image.name}:{tag}"
        if holder is None:
            self.logger.info("tag.written", registry=reg.name, ref=ref, digest=digest)
        else:
            self.logger.info("tag.yielded", registry=reg.name, ref=ref, digest=digest, newer_release=holder[0])
        return True

    def holders(self, reg_name: str) -> dict[str, tuple[str, str]]:
        """Shared tag -> (version tag, digest) of the newest newer release in ``reg_name`` that claims it.

        A claimant counts only when its digest verifies with our key (with ``[sign] enabled``): a stray or
        half-released version tag never receives our shared tags. A registry whose tags cannot be listed
        (a token without list rights) keeps last-writer-wins, with a warning."""
        if not self.claims.active:
            return {}
        reg, client, repo = self._where(reg_name)
        try:
            listed = client.tags(repo)
        except RegistryError as exc:
            if exc.status not in (401, 403):
                raise
            self.logger.warning("tag.claims_unknown", registry=reg.name, error=str(exc)[:300],
                                note="these credentials may not list tags: shared tags are written as ours")
            return {}
        out: dict[str, tuple[str, str]] = {}
        for tag, ranked in self.claims.claimants(listed).items():
            for main in ranked:                 # the newest claimant that is a release of ours
                digest = self._holder_digest(reg, client, repo, main)
                if digest is not None:
                    out[tag] = (main, digest)
                    break
        return out

    def _holder_digest(self, reg: RegistryConfig, client: Registry, repo: str, main: str) -> str | None:
        key = (reg.name, main)
        if key not in self._heads:
            head = client.manifest_head(repo, main)
            self._heads[key] = head.digest if head is not None and \
                self._release_of_ours(reg, repo, main, head.digest) else None
        return self._heads[key]

    def _release_of_ours(self, reg: RegistryConfig, repo: str, main: str, digest: str) -> bool:
        if not self.cfg.sign.enabled:
            return True
        key = (reg.name, digest)
        if key not in self._verified:
            from pipeline.sign.verification import Target, verify

            report = verify(self.cfg, self.env, [Target(reg, repo, digest)], expected=digest)
            self._verified[key] = report.ok
            if not report.ok:
                self.logger.warning("tag.holder_unverified", registry=reg.name, ref=f"{reg.url}/{repo}:{main}",
                                    digest=digest, reason=report.failure_message()[:300],
                                    note="not a release of ours: it gets none of our shared tags")
        return self._verified[key]

    def settle(self, targets: Sequence[RegistryConfig], written: dict[str, list[str]],
               present: dict[str, list[str]], *, rounds: int = 6) -> dict[str, dict[str, str]]:
        """Put every shared tag where it belongs; returns registry -> tag -> newer release holding it.

        Round after round until one writes nothing (at most ``rounds``): a release that read the tag list
        before a newer one wrote its version tag may have put a shared tag back after that newer release
        did; the newer version tag is listed by then (it is written before any shared tag), so the next
        look sees it. Registries whose tag lists lag behind writes can still end a race wrong; the verify
        stage settles once more."""
        shared = self.claims.shared
        yielded: dict[str, dict[str, str]] = {r.name: {} for r in targets}
        if not shared or not targets:
            return yielded
        moved_to_us: dict[str, set[str]] = {r.name: set() for r in targets}
        with ThreadPoolExecutor(max_workers=self.cfg.copy_.concurrency) as pool:
            for _ in range(rounds if self.claims.active else 1):
                self._heads = {}
                holders = dict(zip((r.name for r in targets), pool.map(self.holders, (r.name for r in targets))))
                jobs = {(name, tag): pool.submit(self.put, name, tag, held.get(tag))
                        for name, held in holders.items() for tag in shared}
                moved = False
                for (name, tag), future in jobs.items():
                    moved |= future.result()
                    if tag in holders[name]:
                        yielded[name][tag] = holders[name][tag][0]
                        moved_to_us[name].discard(tag)
                    else:
                        yielded[name].pop(tag, None)
                        if future.result():
                            moved_to_us[name].add(tag)
                if not moved:
                    break
            else:
                if self.claims.active and rounds > 1:
                    self.logger.warning("tag.unsettled", rounds=rounds,
                                        note="shared tags still moved after the last round: another release is"
                                             " tagging at the same time; its verify stage settles them")
        for name in yielded:
            for tag in shared:
                if tag in yielded[name]:
                    continue
                (written if tag in moved_to_us[name] else present)[name].append(tag)
        return yielded


class Tag:
    name: ClassVar[str] = "tag"
    description: ClassVar[str] = "Write the release tags in every registry, last."
    tools: ClassVar[tuple[str, ...]] = ()

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.config.tag.enabled:
            return "tag.enabled = false"
        return no_tags_reason(ctx)

    def describe(self, ctx: Context) -> str:
        tags: TagsOutput | None = ctx.outputs.get("tags")
        names = ", ".join(tags.result.tags) if tags else "the release tags"
        gates = [s for s, section in GATES if _enabled(ctx, section)]
        return (f"put {names} on the digest in {', '.join(r.name for r in ctx.config.release_registries)}, "
                f"only after {', '.join(gates)} passed")

    def run(self, ctx: Context) -> TagOutput:
        unmet = unmet_gates(ctx)
        if unmet:
            raise PolicyError(f"refusing to write release tags: {', '.join(unmet)}; nothing was tagged")
        build: BuildOutput = ctx.outputs["build"]
        copy: CopyOutput | None = ctx.outputs.get("copy")
        cfg = ctx.config
        failed = dict(copy.failed) if copy else {}
        served = set(copy.copied) if copy else {r.name for r in cfg.release_registries}
        targets = [r for r in cfg.release_registries if r.name in served and r.name not in failed]
        logger = log.get(stage=self.name)
        written: dict[str, list[str]] = {r.name: [] for r in targets}
        present: dict[str, list[str]] = {r.name: [] for r in targets}
        with ctx.registry_access() as access:
            tagger = Tagger(ctx, access, logger)
            # this build's own tags (6.1.0, sha-…) first in every registry: a newer release's claims are
            # visible before a shared tag (6.1, latest) moves; then the shared tags, round after round,
            # because a release that decided on an older tag list may write after a newer one
            # (see metadata.claims)
            with ThreadPoolExecutor(max_workers=cfg.copy_.concurrency) as pool:
                firsts = {(r.name, tag): pool.submit(tagger.put, r.name, tag) for r in targets
                          for tag in tagger.claims.own}
                for (name, tag), future in firsts.items():
                    (written if future.result() else present)[name].append(tag)
            yielded = tagger.settle(targets, written, present)
        if failed:  # best-effort: tags went where the copy worked; the release still fails
            raise InfraError(f"tagged in {', '.join(written) or 'no registry'}; copy failed for "
                             f"{', '.join(failed)}: {next(iter(failed.values()))}")
        return TagOutput(build.digest, written, present, failed, yielded)
