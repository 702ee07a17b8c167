"""Copy stage: the image goes from the local layout to staging and every release registry, by digest.

Right after the scan gate and before anything is signed or tagged. The project's own registry
client carries every byte (BuildKit wrote only the local layout): per destination, the index,
platform manifests, configs and layers are HEADed first (present content is skipped), mounted
across repositories inside one registry, else uploaded from the local files, blobs and
platforms concurrently within ``copy.concurrency``, manifests after their blobs, nothing tagged
but the staging candidate. Registries run in parallel; repositories in one registry one after
the other, so that the later ones mount what the first received. Every request retries on its
own under the one policy. Each destination is then read back (the manifest fetched by digest
and hashed), so "copied" means the registry serves exactly that image.

Staging keeps candidates for re-runs and split builds: it gets the image with its candidate
tag (and ``buildcache``, which the next build's cache import reads). ``pipeline build`` and
split per-platform builds upload to staging only. ``copy.failure_policy`` decides what a
failed release registry means.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

from pipeline import log
from pipeline.access.registries import Access
from pipeline.build.build import BuildOutput
from pipeline.config import RegistryConfig
from pipeline.context import Context
from pipeline.errors import InfraError, PipelineError
from pipeline.stage import no_tags_reason
from pipeline.tools import transfer
from pipeline.tools.oci import Layout
from pipeline.tools.registry import Registry


@dataclass(frozen=True)
class RegistryCopy:
    registry: str
    repository: str
    digest: str
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CopyOutput:
    digest: str
    copied: dict[str, RegistryCopy]               # release registries that now serve the image
    failed: dict[str, str]
    staged: RegistryCopy | None = None            # the staging candidate


@dataclass(frozen=True)
class Target:
    reg: RegistryConfig
    repository: str
    staging: bool


def staging_only_reason(ctx: Context) -> str | None:
    """Why this run uploads to staging only (``pipeline build``, a split platform, no release tags)."""
    if ctx.options.staging_only:
        return "pipeline build uploads the candidate to staging only"
    if ctx.options.platform:
        return f"a split build of {ctx.options.platform} goes to staging only"
    if not ctx.config.copy_.enabled:
        return "copy.enabled = false"
    return no_tags_reason(ctx)


def targets(ctx: Context, build: BuildOutput) -> list[Target]:
    """Staging first, then every release registry (when this run releases), one entry per repository."""
    out = [Target(ctx.config.registry(build.registry), build.repository, True)]
    if staging_only_reason(ctx) is None:
        out += [Target(reg, reg.repository(ctx.config.image.name), False) for reg in ctx.config.release_registries]
    return out


class Copy:
    name: ClassVar[str] = "copy"
    description: ClassVar[str] = ("Upload the image by digest from the local layout to staging and every release"
                                  " registry, in parallel, with the project's registry client.")
    tools: ClassVar[tuple[str, ...]] = ()

    def skip_reason(self, ctx: Context) -> str | None:
        return None   # the candidate always goes to staging; releases only when this run releases

    def describe(self, ctx: Context) -> str:
        staging = ctx.config.staging_registry
        only = staging_only_reason(ctx)
        where = f"{staging.name if staging else '?'} (candidate)"
        if only is None:
            where += ", " + ", ".join(r.name for r in ctx.config.release_registries)
        else:
            where += f" only ({only})"
        return (f"upload the image by digest from the local layout to {where}, registries in parallel,"
                f" {ctx.config.copy_.concurrency} transfers each ({ctx.config.copy_.failure_policy}); blobs and"
                " manifests already there are skipped, blobs in another repository of the registry mounted")

    def run(self, ctx: Context) -> CopyOutput:
        build: BuildOutput = ctx.outputs["build"]
        cfg = ctx.config
        logger = log.get(stage=self.name)
        layout = Layout(build.layout)
        all_targets = targets(ctx, build)
        uploads: dict[tuple[str, str], Target] = {}      # one upload per (registry host, repository)
        for t in all_targets:
            uploads.setdefault((t.reg.host, t.repository), t)
        by_host: dict[str, list[Target]] = {}
        for t in uploads.values():
            by_host.setdefault(t.reg.host, []).append(t)
        done: dict[tuple[str, str], RegistryCopy] = {}
        errors: dict[tuple[str, str], str] = {}

        with Access(cfg, ctx.env) as access:
            def upload(t: Target, mounts: Sequence[str]) -> RegistryCopy:
                client = access.client(t.reg)
                stats = transfer.push(layout, build.digest, client, t.repository, concurrency=cfg.copy_.concurrency,
                                      mount_from=mounts)
                _check_served(client, t, build.digest)
                if any(x.staging and (x.reg.host, x.repository) == (t.reg.host, t.repository) for x in all_targets):
                    self._stage(ctx, client, t, build, layout)
                logger.info("image.copied", registry=t.reg.name, repository=t.repository, digest=build.digest,
                            **stats.to_dict())
                return RegistryCopy(t.reg.name, t.repository, build.digest, stats.to_dict())

            def one_registry(group: list[Target]) -> None:
                mounts: list[str] = []          # repositories of this registry that hold the image by now
                for t in group:
                    key = (t.reg.host, t.repository)
                    try:
                        done[key] = upload(t, mounts)
                        mounts.append(t.repository)
                    except PipelineError as exc:
                        errors[key] = str(exc)
                        logger.error("image.copy_failed", registry=t.reg.name, repository=t.repository,
                                     error=str(exc))

            with ThreadPoolExecutor(max_workers=max(1, len(by_host)), thread_name_prefix="copy") as pool:
                list(pool.map(one_registry, by_host.values()))

        def result(t: Target) -> RegistryCopy | None:
            found = done.get((t.reg.host, t.repository))
            return None if found is None else RegistryCopy(t.reg.name, t.repository, found.digest, found.stats)

        staging_t, releases = all_targets[0], all_targets[1:]
        staged = result(staging_t)
        if staged is None:
            why = errors.get((staging_t.reg.host, staging_t.repository), "not uploaded")
            raise InfraError(f"copy to staging ({staging_t.reg.name}) failed, so no registry gets release tags: {why}")
        copied = {t.reg.name: r for t in releases if (r := result(t)) is not None}
        failed = {t.reg.name: errors[(t.reg.host, t.repository)] for t in releases
                  if (t.reg.host, t.repository) in errors}
        if failed and cfg.copy_.failure_policy == "all-or-nothing":
            names = ", ".join(failed)
            first = next(iter(failed.values()))
            raise InfraError(f"copy failed for {names} (no registry gets release tags: "
                             f"copy.failure_policy = all-or-nothing): {first}")
        return CopyOutput(build.digest, copied, failed, staged)

    def _stage(self, ctx: Context, client: Registry, t: Target, build: BuildOutput, layout: Layout) -> None:
        """The candidate tag (and the inline cache's ``buildcache``) on the staged image; a registry cache
        exported by the build goes up too (best effort: the cache never fails a release)."""
        body, media = layout.manifest(build.digest)
        client.manifest_put(t.repository, build.candidate_tag, body, media)
        cfg = ctx.config
        if cfg.build.cache == "inline" and not ctx.options.platform:
            try:
                client.manifest_put(t.repository, "buildcache", body, media)
            except PipelineError as exc:
                log.get(stage=self.name).warning("cache.export_failed", error=str(exc)[:300])
        if cfg.build.cache == "registry":
            from pipeline.build.local import CACHE_DIR

            cache = Layout(CACHE_DIR / t.repository.replace("/", "_"))
            try:
                if cache.exists():
                    root = cache.root()
                    transfer.push(cache, root.digest, client, t.repository, concurrency=cfg.copy_.concurrency)
                    cbody, cmedia = cache.manifest(root.digest)
                    client.manifest_put(t.repository, "buildcache", cbody, cmedia)
            except (PipelineError, OSError, ValueError) as exc:
                log.get(stage=self.name).warning("cache.export_failed", error=str(exc)[:300],
                                                 note="the build cache was not uploaded; the release goes on")


def _check_served(client: Registry, t: Target, digest: str) -> None:
    """Read the image back: the registry must serve exactly these bytes under the digest."""
    try:
        client.manifest_get(t.repository, digest)   # fetched by digest and hashed by the client
    except PipelineError as exc:
        raise InfraError(f"registry {t.reg.name}: {t.repository}@{digest} is not served after the upload ({exc})"
                         ) from None

