"""Copy stage: the image goes from the local layout to every release registry, by digest.

After the scan gate and the staging upload, before anything is signed or tagged. The project's
own registry client carries every byte (BuildKit wrote only the local layout): per destination,
the index, platform manifests, configs and layers are HEADed first (present content is skipped),
mounted across repositories inside one registry (from staging first, when it is the same
registry), else uploaded from the local files, blobs and platforms concurrently within
``copy.concurrency``, manifests after their blobs, nothing tagged. Registries run in parallel;
repositories in one registry one after the other, so that the later ones mount what the first
received. Every request retries on its own under the one policy. Each destination is then read
back by digest (:func:`pipeline.stages.staging.upload`), so "copied" means the registry serves
exactly that image. ``copy.failure_policy`` decides what a failed release registry means.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

from pipeline import log
from pipeline.build.build import BuildOutput
from pipeline.config import RegistryConfig
from pipeline.context import Context
from pipeline.errors import InfraError, PipelineError
from pipeline.stage import no_tags_reason
from pipeline.stages.staging import RegistryCopy, upload
from pipeline.tools.oci import Layout


@dataclass(frozen=True)
class CopyOutput:
    digest: str
    copied: dict[str, RegistryCopy]               # release registries that now serve the image
    failed: dict[str, str]


def skip_reason(ctx: Context) -> str | None:
    """Why this run uploads to no release registry (a split platform build, copy off, no release tags)."""
    if ctx.options.platform:
        return f"a split build of {ctx.options.platform} goes to staging only"
    if not ctx.config.copy_.enabled:
        return "copy.enabled = false"
    return no_tags_reason(ctx)


class Copy:
    name: ClassVar[str] = "copy"
    description: ClassVar[str] = ("Upload the image by digest from the local layout to every release registry, in"
                                  " parallel, with the project's registry client.")
    tools: ClassVar[tuple[str, ...]] = ()

    def skip_reason(self, ctx: Context) -> str | None:
        return skip_reason(ctx)

    def describe(self, ctx: Context) -> str:
        return (f"upload the image by digest from the local layout to "
                f"{', '.join(r.name for r in ctx.config.release_registries)}, registries in parallel,"
                f" {ctx.config.copy_.concurrency} transfers each ({ctx.config.copy_.failure_policy}); blobs and"
                " manifests already there are skipped, blobs in staging or another repository of the registry"
                " mounted")

    def run(self, ctx: Context) -> CopyOutput:
        build: BuildOutput = ctx.outputs["build"]
        cfg = ctx.config
        logger = log.get(stage=self.name)
        layout = Layout(build.layout)
        staging_host = cfg.registry(build.registry).host
        by_host: dict[str, list[tuple[RegistryConfig, str]]] = {}
        for reg in cfg.release_registries:
            by_host.setdefault(reg.host, []).append((reg, reg.repository(cfg.image.name)))
        done: dict[str, RegistryCopy] = {}
        errors: dict[str, str] = {}

        with ctx.registry_access() as access:
            def one_registry(group: list[tuple[RegistryConfig, str]]) -> None:
                # repositories of this registry that hold the image by now (staging's, when it is this one)
                mounts = [build.repository] if group[0][0].host == staging_host else []
                for reg, repository in group:
                    try:
                        done[reg.name] = upload(access.client(reg), layout, build.digest, reg.name, repository,
                                                concurrency=cfg.copy_.concurrency, mounts=mounts)
                        mounts.append(repository)
                    except PipelineError as exc:
                        errors[reg.name] = str(exc)
                        logger.error("image.copy_failed", registry=reg.name, repository=repository, error=str(exc))

            with ThreadPoolExecutor(max_workers=max(1, len(by_host)), thread_name_prefix="copy") as pool:
                list(pool.map(one_registry, by_host.values()))

        if errors and cfg.copy_.failure_policy == "all-or-nothing":
            failed = [r.name for r in cfg.release_registries if r.name in errors]
            raise InfraError(f"copy failed for {', '.join(failed)} (no registry gets release tags: "
                             f"copy.failure_policy = all-or-nothing): {errors[failed[0]]}")
        order = [r.name for r in cfg.release_registries]
        return CopyOutput(build.digest, {n: done[n] for n in order if n in done},
                          {n: errors[n] for n in order if n in errors})
