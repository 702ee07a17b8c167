"""Build stage: buildx builds every platform into a local OCI layout; nothing leaves the machine here.

BuildKit writes only to a local target (``--output type=oci,dest=DIR,tar=false``), the image
then lives in ``.pipeline/images/<key>`` and every later stage reads it from there: the scan
gate scans it before any byte is uploaded, and the staging and copy stages upload it with the
project's own registry client. A builder that can only push (the docker driver on the classic image store)
pushes to a registry the tool runs on loopback for the build, and the image is fetched from
there into the layout. See :mod:`pipeline.build.local`.

Modes:
- ``auto`` (the default): ``single`` where the builder can build several platforms in one call
  (the docker driver on the containerd image store, docker-container, remote, kubernetes),
  else the release builds each platform in turn and merges them (the classic image store).
- ``single``: all platforms in one buildx call (builder must support it).
- ``split``: one platform per call (``pipeline build --platform P --digest-out DIR`` on
  any machine: it builds, scans and uploads that platform to staging), then
  ``release --from-digests DIR`` fetches the platform manifests from staging and merges them
  into one index. Without ``--from-digests`` the release builds each platform in turn here and
  merges the same way, so both paths give the same index shape.

A build-input key (context content, Dockerfile, build args, platforms, target, labels,
annotations) names the layout and the staging candidate tag, so a re-release of unchanged
inputs reuses the local layout, or fetches the candidate from staging: staging is asked while
buildx already builds (a new release waits for nothing), and the build is stopped when it has it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline import log
from pipeline.build import base as base_images
from pipeline.build import local, mirror
from pipeline.build.key import NOT_LABEL_INPUTS, build_key, context_digest
from pipeline.build.merge import merge_layouts
from pipeline.config import RegistryConfig
from pipeline.context import Context
from pipeline.errors import ConfigError, InfraError, PipelineError
from pipeline.metadata.tags import TagsOutput
from pipeline.refs import platform_key
from pipeline.stage import exclusive
from pipeline.tools import transfer
from pipeline.tools.oci import INDEX_TYPES, OCI_INDEX, Descriptor, Layout

if TYPE_CHECKING:
    from pipeline.access.registries import Access

IMAGES_DIR = Path(".pipeline/images")
KEEP_LAYOUTS = 6           # newest local layouts kept (re-runs reuse them; older ones are removed)


@dataclass(frozen=True)
class BuildOutput:
    registry: str                 # staging registry name
    repository: str               # repository in the staging registry
    digest: str                   # the index digest (one platform's manifest in a split build): the image
    platforms: dict[str, str]     # platform -> manifest digest
    key: str
    candidate_tag: str
    reused: bool                  # no build ran (the local layout or the staging candidate had it)
    base_image: str | None = None
    index: bytes = field(default=b"", repr=False)
    media_type: str = OCI_INDEX
    layout: str = ""              # the local OCI layout holding the image
    source: str = "build"         # build | local (a layout of an earlier run) | staging (fetched) | merge

    @property
    def ref(self) -> str:
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class PlatformDigest:
    """What a split build writes to ``--digest-out``: one file per platform."""

    platform: str
    digest: str
    registry: str
    repository: str
    key: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


# --------------------------------------------------------------------------- inputs


def staging_target(ctx: Context) -> tuple[RegistryConfig, str]:
    reg = ctx.config.staging_registry
    if reg is None:
        raise ConfigError(f"{ctx.config_path}: registries: at least one [[registries]] entry is needed to build"
                          " (the staging registry)")
    return reg, reg.repository(ctx.config.staging.repository or ctx.config.image.name)


def candidate_tag(ctx: Context, key: str, platform: str | None = None) -> str:
    short = ctx.ci.sha[:7] if ctx.ci.sha else "local"
    tag = f"{ctx.config.staging.tag_prefix}{short}-{key[:12]}"
    return f"{tag}-{platform_key(platform)}" if platform else tag


def read_digests(ctx: Context, folder: Path, key: str) -> dict[str, PlatformDigest]:
    """The per-platform digest files a split build wrote (``--from-digests``), checked against ``key``."""
    if not folder.is_dir():
        raise ConfigError(f"--from-digests {folder}: not a directory")
    found: dict[str, PlatformDigest] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            item = PlatformDigest(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"--from-digests: {path}: not a digest file written by 'pipeline build"
                              f" --digest-out' ({exc})") from None
        if item.key != key:
            raise ConfigError(f"--from-digests: {path}: built from other inputs (key {item.key[:12]}, expected"
                              f" {key[:12]}): rebuild that platform from this commit and config")
        found[item.platform] = item
    missing = [p for p in ctx.config.image.platforms if p not in found]
    if missing:
        raise ConfigError(f"--from-digests {folder}: no digest for {', '.join(missing)}"
                          " (run 'pipeline build --platform P --digest-out DIR' for each)")
    return found


def write_digest(ctx: Context, folder: Path) -> Path:
    """The digest file of a split build (``--digest-out``), written once the platform is in staging."""
    build: BuildOutput = ctx.outputs["build"]
    platform = ctx.options.platform or ""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{platform_key(platform)}.json"
    path.write_text(PlatformDigest(platform, build.digest, build.registry, build.repository, build.key).to_json())
    return path


# --------------------------------------------------------------------------- the stage


class Build:
    name: ClassVar[str] = "build"
    description: ClassVar[str] = "Build every platform with buildx into a local OCI layout (nothing is uploaded)."
    tools: ClassVar[tuple[str, ...]] = ("docker", "buildx")

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.config.build.enabled:
            return "build.enabled = false"
        return None

    def describe(self, ctx: Context) -> str:
        cfg = ctx.config
        reg, repo = staging_target(ctx)
        mode = cfg.build.mode
        if ctx.options.from_digests:
            how = f"fetch the per-platform digests in {ctx.options.from_digests} from {reg.name} and merge them"
        elif ctx.options.platform:
            how = f"one buildx call for {ctx.options.platform}"
        else:
            how = {"single": "one buildx call", "split": "one buildx call per platform",
                   "auto": "one buildx call (one per platform, merged, where the builder cannot build several)"}[mode]
            how = f"{how} for {', '.join(cfg.image.platforms)}"
        return (f"{how} from {cfg.image.dockerfile} into a local OCI layout ({IMAGES_DIR}/<key>); reused when that"
                f" layout, or the candidate in {reg.url}/{repo.split('/', 1)[-1]} ({cfg.staging.tag_prefix}<key>),"
                " has the same build inputs")

    # -- inputs

    def _inputs(self, ctx: Context, access: Access) -> tuple[dict[str, Any], dict[str, str],
                                                             base_images.BaseImage | None]:
        cfg = ctx.config
        dockerfile = Path(cfg.image.dockerfile)
        try:
            text = dockerfile.read_text()
        except OSError as exc:
            raise ConfigError(f"{ctx.config_path}: image.dockerfile: cannot read {dockerfile}: {exc.strerror}") from None
        if not Path(cfg.image.context).is_dir():
            raise ConfigError(f"{ctx.config_path}: image.context: {cfg.image.context} is not a directory")
        args = dict(cfg.image.build_args)
        base = base_images.resolve(ctx, access, text, args)
        if base is not None:
            args["BASE_IMAGE"] = base.name
        if ctx.env.get("SOURCE_DATE_EPOCH"):
            args.setdefault("SOURCE_DATE_EPOCH", ctx.env["SOURCE_DATE_EPOCH"])
        tags: TagsOutput = ctx.outputs["tags"]
        inputs = {
            "context": context_digest(Path(cfg.image.context)),
            "dockerfile": hashlib.sha256(text.encode()).hexdigest(),
            "build_args": args,
            "platforms": list(cfg.image.platforms),
            "target": cfg.image.target,
            "labels": {k: v for k, v in tags.result.labels.items() if k not in NOT_LABEL_INPUTS},
            "annotations": {k: v for k, v in tags.result.annotations.items() if not k.endswith(NOT_LABEL_INPUTS)},
            "provenance": cfg.build.provenance,
            "secrets": sorted(cfg.image.secrets),      # the ids only: BuildKit never caches on a secret's value
        }
        mirrored: mirror.MirrorOutput | None = ctx.outputs.get("mirror")
        if mirrored is not None:                       # the bases by digest: a moved lock is a new image
            inputs["bases"] = {b.reference: b.digest for b in mirrored.bases}
        return inputs, args, base

    # -- run

    def run(self, ctx: Context) -> BuildOutput:
        with ctx.registry_access() as access:
            return self._run(ctx, access)

    def _run(self, ctx: Context, access: Access) -> BuildOutput:
        cfg = ctx.config
        inputs, args, base = self._inputs(ctx, access)
        key = build_key(inputs)
        platform = ctx.options.platform
        if platform and platform not in cfg.image.platforms:
            raise ConfigError(f"--platform {platform}: not one of image.platforms ({', '.join(cfg.image.platforms)})")
        tag = candidate_tag(ctx, key, platform)
        layout_dir = IMAGES_DIR / (f"{key[:32]}-{platform_key(platform)}" if platform else key[:32])
        builder = local.Builder(ctx, access, args, base)
        # Two releases of the same inputs on this machine: the second waits here, then finds the layout.
        with exclusive("build", str(IMAGES_DIR.resolve()), layout_dir.name):
            if ctx.options.from_digests:
                return self._merge_split(ctx, access, key, tag, base, layout_dir)
            found = self._reuse_local(layout_dir)
            if found is not None:
                return self._output(ctx, found[0], found[1], key, tag, True, base, found[2])
            # staging may hold this image (a re-run on a new machine): asked while buildx already builds, and
            # the build is stopped when it does, so the lookup costs a new release nothing
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="candidate") as pool:
                lookup = pool.submit(self._staged_candidate, ctx, access, tag, platform, builder)
                built: tuple[Layout, str] | None = None
                failure: PipelineError | None = None
                try:
                    built = self._build(ctx, builder, key, layout_dir, platform)
                except local.BuildCancelled:
                    pass
                except PipelineError as exc:
                    failure = exc
                try:
                    candidate = lookup.result()
                except PipelineError as exc:
                    if built is None:
                        raise (failure or exc) from None   # the build's own error says more
                    candidate = None                       # built: the staging stage meets the registry next
                    log.get(stage=self.name).warning("candidate.lookup_failed", error=str(exc)[:300],
                                                     note="built from source; staging could not say whether it"
                                                          " holds this image")
            if candidate is not None:
                found = self._fetch_candidate(ctx, access, layout_dir, tag, platform, candidate)
                return self._output(ctx, found[0], found[1], key, tag, True, base, found[2])
            if failure is not None:
                raise failure
            if built is None:
                raise InfraError("build: stopped for a staging candidate that then was not there")
            layout, digest = built
        local.prune_layouts(IMAGES_DIR, keep=KEEP_LAYOUTS, current=layout.path)
        return self._output(ctx, layout, digest, key, tag, False, base, "build")

    def _build(self, ctx: Context, builder: local.Builder, key: str, layout_dir: Path,
               platform: str | None) -> tuple[Layout, str]:
        cfg = ctx.config
        platforms = (platform,) if platform else tuple(cfg.image.platforms)
        if platform or len(platforms) == 1 or builder.one_call(cfg.build.mode, platforms):
            return builder.build(platforms, layout_dir, manifest=bool(platform))
        parts = {p: builder.build((p,), IMAGES_DIR / f"{key[:32]}-{platform_key(p)}", manifest=True)
                 for p in platforms}
        return merge_layouts(layout_dir, [parts[p] for p in platforms], ctx.outputs["tags"],
                             mirror.index_annotations(ctx.outputs.get("mirror")))

    def _reuse_local(self, layout_dir: Path) -> tuple[Layout, str, str] | None:
        """The image of these inputs from an earlier run on this machine."""
        layout = local.complete_layout(layout_dir)
        if layout is None:
            return None
        digest = layout.root().digest
        local.touch(layout)
        log.get(stage=self.name).info("build.reused", layout=str(layout_dir), digest=digest,
                                      reason="a local layout has an image with the same build inputs")
        return layout, digest, "local"

    def _staged_candidate(self, ctx: Context, access: Access, tag: str, platform: str | None,
                          builder: local.Builder) -> Descriptor | None:
        """The candidate of these inputs in staging (then the running build is stopped), or None."""
        reg, repo = staging_target(ctx)
        existing = access.client(reg).manifest_head(repo, tag)
        if existing is None or (platform is None and existing.media_type not in INDEX_TYPES):
            return None
        builder.cancel()
        return existing

    def _fetch_candidate(self, ctx: Context, access: Access, layout_dir: Path, tag: str, platform: str | None,
                         existing: Descriptor) -> tuple[Layout, str, str]:
        """The staging candidate, fetched into the local layout of these inputs."""
        reg, repo = staging_target(ctx)
        client = access.client(reg)
        shutil.rmtree(layout_dir, ignore_errors=True)       # a build that finished first gives way to it
        layout = Layout.create(layout_dir.with_name(layout_dir.name + ".partial"))
        transfer.pull(client, repo, existing.digest, layout, concurrency=ctx.config.copy_.concurrency)
        layout.set_root(layout.descriptor(existing.digest))
        layout = local.finish_layout(layout, layout_dir)
        log.get(stage=self.name).info("build.reused", candidate=f"{reg.host}/{repo}:{tag}", digest=existing.digest,
                                      reason="staging has an image with the same build inputs (fetched into a"
                                             " local layout)")
        return layout, existing.digest, "staging"

    def _merge_split(self, ctx: Context, access: Access, key: str, tag: str, base: base_images.BaseImage | None,
                     layout_dir: Path) -> BuildOutput:
        """``release --from-digests``: fetch every platform's manifest tree from staging, merge into one index."""
        digests = read_digests(ctx, Path(ctx.options.from_digests or ""), key)
        reg, repo = staging_target(ctx)
        client = access.client(reg)
        parts = []
        for p in ctx.config.image.platforms:
            item = digests[p]
            part = Layout.create(IMAGES_DIR / f"{key[:32]}-{platform_key(p)}")
            transfer.pull(client, item.repository, item.digest, part, concurrency=ctx.config.copy_.concurrency)
            part.set_root(part.descriptor(item.digest))
            parts.append((part, item.digest))
        layout, digest = merge_layouts(layout_dir, parts, ctx.outputs["tags"],
                                       mirror.index_annotations(ctx.outputs.get("mirror")))
        return self._output(ctx, layout, digest, key, tag, False, base, "merge")

    def _output(self, ctx: Context, layout: Layout, digest: str, key: str, tag: str, reused: bool,
                base: base_images.BaseImage | None, source: str) -> BuildOutput:
        reg, repo = staging_target(ctx)
        body, media = layout.manifest(digest)
        platforms = layout.platforms(digest)
        log.get(stage=self.name).info("image.built" if source == "build" else "image.ready", digest=digest,
                                      platforms=",".join(platforms), layout=str(layout.path), source=source)
        return BuildOutput(reg.name, repo, digest, platforms, key, tag, reused, base.name if base else None, body,
                           media, str(layout.path), source)


