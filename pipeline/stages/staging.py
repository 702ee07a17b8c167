"""Staging stage: the scanned candidate goes from the local layout to staging, by digest, with its tag.

It runs right after the scan gate (a failing gate leaves staging without a byte of the candidate)
and before the copy to the release registries, which then mount from staging inside its registry.
Staging keeps candidates for re-runs (a later build with the same inputs fetches it instead of
building) and for split builds (each ``pipeline build --platform`` uploads its platform here, the
merge job reads them back). ``pipeline build`` ends with this stage.

The project's registry client carries every byte: content the repository has is skipped (HEAD),
blobs and platforms go up concurrently within ``copy.concurrency``, manifests after their blobs,
and the image is read back by digest before the candidate tag is written. The ``buildcache`` tag
(``build.cache = "inline"``) and a registry cache the build exported go up too, best effort: the
build cache never fails a release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pipeline import log
from pipeline.build.build import BuildOutput
from pipeline.context import Context
from pipeline.errors import InfraError, PipelineError
from pipeline.stage import exclusive
from pipeline.tools import transfer
from pipeline.tools.oci import Layout
from pipeline.tools.registry import Registry


@dataclass(frozen=True)
class RegistryCopy:
    """The image, served by ``registry`` (a config name) under ``repository``."""

    registry: str
    repository: str
    digest: str
    stats: dict[str, int] = field(default_factory=dict)


def upload(client: Registry, layout: Layout, digest: str, registry: str, repository: str, *, concurrency: int,
           mounts: Sequence[str] = ()) -> RegistryCopy:
    """The image ``digest`` of ``layout`` into ``repository``, then read back: the registry must serve
    exactly these bytes under the digest (the manifest is fetched by digest and hashed). Two releases on
    one machine upload one image to one repository one after the other: the second finds it there."""
    with exclusive("upload", client.host, repository, digest):
        stats = transfer.push(layout, digest, client, repository, concurrency=concurrency, mount_from=mounts)
    try:
        client.manifest_get(repository, digest)
    except PipelineError as exc:
        raise InfraError(f"registry {registry}: {repository}@{digest} is not served after the upload ({exc})"
                         ) from None
    log.get().info("image.copied", registry=registry, repository=repository, digest=digest, **stats.to_dict())
    return RegistryCopy(registry, repository, digest, stats.to_dict())


class Staging:
    name: ClassVar[str] = "staging"
    description: ClassVar[str] = ("Upload the scanned candidate by digest from the local layout to staging,"
                                  " with its candidate tag.")
    tools: ClassVar[tuple[str, ...]] = ()

    def skip_reason(self, ctx: Context) -> str | None:
        return None   # every build that passed the gate is kept as a candidate

    def describe(self, ctx: Context) -> str:
        reg = ctx.config.staging_registry
        repo = reg.repository(ctx.config.staging.repository or ctx.config.image.name) if reg else "?"
        cache = {"inline": " and buildcache", "registry": ", the exported build cache under buildcache"}.get(
            ctx.config.build.cache, "")
        return (f"upload the candidate by digest from the local layout to {reg.name if reg else '?'} ({repo}),"
                f" {ctx.config.copy_.concurrency} transfers, after the gate; tag candidate-<key>{cache}")

    def run(self, ctx: Context) -> RegistryCopy:
        build: BuildOutput = ctx.outputs["build"]
        cfg = ctx.config
        reg = cfg.registry(build.registry)
        layout = Layout(build.layout)
        with ctx.registry_access() as access:
            client = access.client(reg)
            try:
                staged = upload(client, layout, build.digest, reg.name, build.repository,
                                concurrency=cfg.copy_.concurrency)
                body, media = layout.manifest(build.digest)
                client.manifest_put(build.repository, build.candidate_tag, body, media)
            except PipelineError as exc:
                raise InfraError(f"upload to staging ({reg.name}) failed, so no registry gets release tags: {exc}"
                                 ) from None
            self._cache(ctx, client, build, body, media)
        return staged

    def _cache(self, ctx: Context, client: Registry, build: BuildOutput, body: bytes, media: str) -> None:
        """``buildcache`` for the next build's cache import; never a reason to fail."""
        cfg = ctx.config
        logger = log.get(stage=self.name)
        try:
            if cfg.build.cache == "inline" and not ctx.options.platform:
                client.manifest_put(build.repository, "buildcache", body, media)
            elif cfg.build.cache == "registry":
                from pipeline.build.local import CACHE_DIR

                cache = Layout(CACHE_DIR / build.repository.replace("/", "_"))
                if cache.exists():
                    root = cache.root()
                    transfer.push(cache, root.digest, client, build.repository, concurrency=cfg.copy_.concurrency)
                    cbody, cmedia = cache.manifest(root.digest)
                    client.manifest_put(build.repository, "buildcache", cbody, cmedia)
        except (PipelineError, OSError, ValueError) as exc:
            logger.warning("cache.export_failed", error=str(exc)[:300],
                           note="the build cache was not uploaded; the release goes on")
