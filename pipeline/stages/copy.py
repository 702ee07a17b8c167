"""Copy stage: staging → every release registry by digest, registry-to-registry.

Index, platform manifests, configs and layers go over the OCI distribution API:
HEAD first (present content is skipped), cross-repository mount inside one
registry, children before parents, nothing tagged. Registries run in parallel
with bounded concurrency, and each destination's digest is checked equal to the
source. ``copy.failure_policy`` decides what a failed registry means.
"""

from __future__ import annotations

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
from pipeline.tools.registry import copy_manifest_tree


@dataclass(frozen=True)
class RegistryCopy:
    registry: str
    repository: str
    digest: str
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CopyOutput:
    digest: str
    copied: dict[str, RegistryCopy]
    failed: dict[str, str]


class Copy:
    name: ClassVar[str] = "copy"
    description: ClassVar[str] = "Copy the index by digest from staging to every release registry."
    tools: ClassVar[tuple[str, ...]] = ()

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.config.copy_.enabled:
            return "copy.enabled = false"
        return no_tags_reason(ctx)

    def describe(self, ctx: Context) -> str:
        staging = ctx.config.staging_registry
        targets = ", ".join(r.name for r in ctx.config.release_registries)
        return (f"copy the candidate by digest from {staging.name if staging else '?'} to {targets} "
                f"({ctx.config.copy_.failure_policy}); blobs and manifests already there are skipped")

    def run(self, ctx: Context) -> CopyOutput:
        build: BuildOutput = ctx.outputs["build"]
        cfg = ctx.config
        logger = log.get(stage=self.name)
        with Access(cfg, ctx.env) as access:
            source_reg = cfg.registry(build.registry)
            src = access.client(source_reg)

            def one(reg: RegistryConfig) -> RegistryCopy:
                dst = access.client(reg)
                repo = reg.repository(cfg.image.name)
                stats: dict[str, int] = {}
                copy_manifest_tree(src, build.repository, dst, repo, build.digest, stats)
                found = dst.manifest_head(repo, build.digest)
                if found is None or found.digest != build.digest:
                    raise InfraError(f"registry {reg.name}: {repo}@{build.digest} is not there after the copy")
                logger.info("image.copied", registry=reg.name, repository=repo, digest=build.digest, **stats)
                return RegistryCopy(reg.name, repo, build.digest, stats)

            copied: dict[str, RegistryCopy] = {}
            failed: dict[str, str] = {}
            with ThreadPoolExecutor(max_workers=cfg.copy_.concurrency) as pool:
                futures = {reg.name: pool.submit(one, reg) for reg in cfg.release_registries}
                for name, future in futures.items():
                    try:
                        copied[name] = future.result()
                    except PipelineError as exc:
                        failed[name] = str(exc)
                        logger.error("image.copy_failed", registry=name, error=str(exc))
        if failed and cfg.copy_.failure_policy == "all-or-nothing":
            names = ", ".join(failed)
            first = next(iter(failed.values()))
            raise InfraError(f"copy failed for {names} (no registry gets release tags: "
                             f"copy.failure_policy = all-or-nothing): {first}")
        return CopyOutput(build.digest, copied, failed)
