"""Build stage: buildx builds every platform and pushes the candidate to staging by digest.

Modes:
- ``single``: all platforms in one buildx call (builder must support it).
- ``split``: one platform per call (``pipeline build --platform P --digest-out DIR`` on
  any machine), then ``release --from-digests DIR`` merges the digests into one
  index in staging. Without ``--from-digests`` the release builds each platform
  in turn here and merges the same way, so both paths give the same index shape.

A build-input key (context content, Dockerfile, build args, platforms, target,
labels, annotations) names the candidate tag, so a re-release of unchanged
inputs finds its image in staging and skips the build.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pipeline import log
from pipeline.access.registries import Access
from pipeline.build.key import NOT_LABEL_INPUTS, build_key, context_digest, dockerfile_arg_default
from pipeline.build.merge import ensure_index, merge_index, platform_manifest
from pipeline.config import RegistryConfig
from pipeline.context import Context
from pipeline.errors import ConfigError, InfraError, ToolError
from pipeline.metadata.tags import TagsOutput
from pipeline.refs import platform_key
from pipeline.tools import buildx
from pipeline.tools.registry import INDEX_TYPES, OCI_INDEX, Registry, RegistryError, index_platforms


@dataclass(frozen=True)
class BuildOutput:
    registry: str                 # staging registry name
    repository: str               # repository in the staging registry
    digest: str                   # the index digest: the image from here on
    platforms: dict[str, str]     # platform -> manifest digest
    key: str
    candidate_tag: str
    reused: bool
    base_image: str | None = None
    index: bytes = field(default=b"", repr=False)
    media_type: str = OCI_INDEX

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


def base_image_reachable(image: str) -> tuple[bool, str]:
    """Can the public base image be resolved? (quick, anonymous, no retries)."""
    from pipeline.refs import RefError, parse
    from pipeline.retry import RetryPolicy

    try:
        ref = parse(image)
    except RefError as exc:
        return False, str(exc)
    try:
        with Registry(ref.registry, policy=RetryPolicy(attempts=1), timeout=8.0) as reg:
            found = reg.manifest_head(ref.repository, ref.reference)
    except (RegistryError, OSError) as exc:
        return False, str(exc)
    return (found is not None), ("found" if found else "not found")


# --------------------------------------------------------------------------- the stage


class Build:
    name: ClassVar[str] = "build"
    description: ClassVar[str] = "Build every platform with buildx and push the candidate to staging by digest."
    tools: ClassVar[tuple[str, ...]] = ("docker", "buildx")

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.config.build.enabled:
            return "build.enabled = false"
        return None

    def describe(self, ctx: Context) -> str:
        cfg = ctx.config
        reg, repo = staging_target(ctx)
        mode = cfg.build.mode
        how = ("merge the per-platform digests in " + ctx.options.from_digests) if ctx.options.from_digests else (
            f"{'one buildx call' if mode == 'single' else 'one buildx call per platform'} for "
            f"{', '.join(cfg.image.platforms)}")
        return (f"{how} from {cfg.image.dockerfile}, push the candidate to {reg.url}/{repo.split('/', 1)[-1]}"
                f" ({cfg.staging.tag_prefix}<key>); skipped when staging already has the same build inputs")

    # -- helpers shared by the modes

    def _inputs(self, ctx: Context, access: Access) -> tuple[dict[str, Any], dict[str, str], str | None]:
        cfg = ctx.config
        dockerfile = Path(cfg.image.dockerfile)
        try:
            text = dockerfile.read_text()
        except OSError as exc:
            raise ConfigError(f"{ctx.config_path}: image.dockerfile: cannot read {dockerfile}: {exc.strerror}") from None
        if not Path(cfg.image.context).is_dir():
            raise ConfigError(f"{ctx.config_path}: image.context: {cfg.image.context} is not a directory")
        args = dict(cfg.image.build_args)
        base = self._base_image(ctx, access, text, args)
        if base:
            args["BASE_IMAGE"] = base
        if ctx.env.get("SOURCE_DATE_EPOCH"):
            args.setdefault("SOURCE_DATE_EPOCH", ctx.env["SOURCE_DATE_EPOCH"])
        tags: TagsOutput = ctx.outputs["tags"]
        labels = {k: v for k, v in tags.result.labels.items()}
        inputs = {
            "context": context_digest(Path(cfg.image.context)),
            "dockerfile": hashlib.sha256(text.encode()).hexdigest(),
            "build_args": args,
            "platforms": list(cfg.image.platforms),
            "target": cfg.image.target,
            "labels": {k: v for k, v in labels.items() if k not in NOT_LABEL_INPUTS},
            "annotations": {k: v for k, v in tags.result.annotations.items()
                            if not k.endswith(NOT_LABEL_INPUTS)},
            "provenance": cfg.build.provenance,
        }
        return inputs, args, base

    def _base_image(self, ctx: Context, access: Access, dockerfile_text: str, args: dict[str, str]) -> str | None:
        if not ctx.config.image.offline_base:
            return None
        base = args.get("BASE_IMAGE") or dockerfile_arg_default(dockerfile_text, "BASE_IMAGE")
        if not base:
            raise ConfigError(f"{ctx.config_path}: image.offline_base: {ctx.config.image.dockerfile} has no"
                              " 'ARG BASE_IMAGE=<image>' to replace")
        ok, why = base_image_reachable(base)
        if ok:
            return None
        from pipeline.setup.offline_base import ensure_offline_base

        reg, _ = staging_target(ctx)
        access.tool_docker_config()
        ref = ensure_offline_base(reg.host, platforms=tuple(ctx.config.image.platforms))
        log.get(stage=self.name).warning(
            "base.replaced", base=base, reason=why[:200], offline_base=ref,
            note=f"the public base image {base} cannot be pulled here; building FROM a locally built busybox base")
        return ref

    def _spec(self, ctx: Context, platforms: tuple[str, ...], ref: str, args: dict[str, str],
              builder: buildx.BuilderInfo, staging_repo_ref: str) -> buildx.BuildSpec:
        cfg = ctx.config
        tags: TagsOutput = ctx.outputs["tags"]
        cache_from: tuple[str, ...] = ()
        cache_to: tuple[str, ...] = ()
        if cfg.build.cache == "inline":
            cache_to = ("type=inline",)
            cache_from = (f"type=registry,ref={staging_repo_ref}:buildcache",)
        elif cfg.build.cache == "registry":
            if builder.driver == "docker":
                log.get(stage=self.name).warning(
                    "cache.unsupported", requested="registry", driver="docker",
                    note="registry cache export needs a docker-container, remote or kubernetes builder;"
                         " using inline cache")
                cache_to = ("type=inline",)
            else:
                cache_to = (f"type=registry,ref={staging_repo_ref}:buildcache,mode=max",)
            cache_from = (f"type=registry,ref={staging_repo_ref}:buildcache",)
        extra_tags = (f"{staging_repo_ref}:buildcache",) if cfg.build.cache != "none" and len(platforms) == len(
            cfg.image.platforms) else ()
        annotations = tuple((k, v) for k, v in tags.result.annotations.items()
                            if not (len(platforms) == 1 and k.startswith("index")))
        return buildx.BuildSpec(
            context=cfg.image.context, dockerfile=cfg.image.dockerfile, platforms=platforms,
            tags=(ref, *extra_tags), build_args=tuple(sorted(args.items())),
            labels=tuple(tags.result.labels.items()), annotations=annotations, target=cfg.image.target,
            builder=cfg.build.builder, push=True, cache_from=cache_from, cache_to=cache_to,
            provenance=cfg.build.provenance, progress="plain" if ctx.env.get("CI") else "auto")

    def _check_builder(self, ctx: Context, access: Access, platforms: tuple[str, ...]) -> buildx.BuilderInfo:
        info = buildx.inspect_builder(ctx.config.build.builder, access.tool_env())
        missing = buildx.unsupported_platforms(platforms, info.platforms)
        if missing:
            raise ToolError(f"build: builder {info.name} ({info.driver} driver) cannot build {', '.join(missing)};"
                            f" it supports {', '.join(info.platforms) or 'nothing listed'} (install"
                            " qemu-user-static for emulation, or use a builder with native nodes)", tool="buildx")
        if len(platforms) > 1:
            from pipeline.tools.docker import engine_info

            ok, why = buildx.multi_platform_reason(info.driver, engine_info() if info.driver == "docker" else None)
            if not ok:
                raise ToolError(f"build: builder {info.name} cannot build several platforms in one call ({why});"
                                " set build.mode = \"split\"", tool="buildx")
        return info

    def _buildx(self, ctx: Context, access: Access, platforms: tuple[str, ...], tag: str,
                args: dict[str, str]) -> str:
        reg, repo = staging_target(ctx)
        builder = self._check_builder(ctx, access, platforms)
        repo_ref = f"{reg.host}/{repo}"
        spec = self._spec(ctx, platforms, f"{repo_ref}:{tag}", args, builder, repo_ref)
        logger = log.get(stage=self.name)
        logger.info("build.started", platforms=",".join(platforms), candidate=f"{repo_ref}:{tag}")
        meta = buildx.run_build(spec, env=access.tool_env(), on_line=ctx.progress,
                                timeout=ctx.config.build.timeout_seconds)
        digest = meta.get("containerimage.digest")
        if not digest:
            raise InfraError(f"build: buildx reported no image digest for {repo_ref}:{tag}")
        logger.info("image.pushed", registry=reg.name, ref=f"{repo_ref}@{digest}")
        return str(digest)

    # -- run

    def run(self, ctx: Context) -> BuildOutput:
        with Access(ctx.config, ctx.env) as access:
            return self._run(ctx, access)

    def _run(self, ctx: Context, access: Access) -> BuildOutput:
        cfg = ctx.config
        reg, repo = staging_target(ctx)
        client = access.client(reg)
        inputs, args, base = self._inputs(ctx, access)
        key = build_key(inputs)
        short = ctx.ci.sha[:7] if ctx.ci.sha else "local"
        tag = f"{cfg.staging.tag_prefix}{short}-{key[:12]}"
        logger = log.get(stage=self.name)
        if ctx.options.platform:  # one platform of a split build
            return self._one_platform(ctx, access, client, key, tag, args, base)
        existing = client.manifest_head(repo, tag)
        if existing is not None and existing.media_type in INDEX_TYPES and not ctx.options.from_digests:
            logger.info("build.reused", candidate=f"{reg.host}/{repo}:{tag}", digest=existing.digest,
                        reason="staging has an image with the same build inputs")
            return self._output(client, reg, repo, existing.digest, key, tag, True, base)
        if ctx.options.from_digests:
            digests = self._read_digests(ctx, Path(ctx.options.from_digests), key)
            digest = merge_index(client, repo, tag, digests, cfg.image.platforms, ctx.outputs["tags"])
        elif cfg.build.mode == "single":
            digest = self._buildx(ctx, access, tuple(cfg.image.platforms), tag, args)
            digest = ensure_index(client, repo, tag, digest)
        else:
            digests = {}
            for platform in cfg.image.platforms:
                ptag = f"{tag}-{platform_key(platform)}"
                digests[platform] = platform_manifest(client, repo, self._buildx(ctx, access, (platform,), ptag, args),
                                                      platform)
            digest = merge_index(client, repo, tag, digests, cfg.image.platforms, ctx.outputs["tags"])
        return self._output(client, reg, repo, digest, key, tag, False, base)

    def _one_platform(self, ctx: Context, access: Access, client: Registry, key: str, tag: str,
                      args: dict[str, str], base: str | None) -> BuildOutput:
        platform = ctx.options.platform or ""
        if platform not in ctx.config.image.platforms:
            raise ConfigError(f"--platform {platform}: not one of image.platforms ({', '.join(ctx.config.image.platforms)})")
        reg, repo = staging_target(ctx)
        ptag = f"{tag}-{platform_key(platform)}"
        existing = client.manifest_head(repo, ptag)
        if existing is not None:
            digest = platform_manifest(client, repo, existing.digest, platform)
            reused = True
        else:
            digest = platform_manifest(client, repo, self._buildx(ctx, access, (platform,), ptag, args), platform)
            reused = False
        if ctx.options.digest_out:
            out = Path(ctx.options.digest_out)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{platform_key(platform)}.json").write_text(
                PlatformDigest(platform, digest, reg.name, repo, key).to_json())
        return BuildOutput(reg.name, repo, digest, {platform: digest}, key, ptag, reused, base)

    def _read_digests(self, ctx: Context, folder: Path, key: str) -> dict[str, str]:
        if not folder.is_dir():
            raise ConfigError(f"--from-digests {folder}: not a directory")
        found: dict[str, str] = {}
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                item = PlatformDigest(**data)
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigError(f"--from-digests: {path}: not a digest file written by 'pipeline build"
                                  f" --digest-out' ({exc})") from None
            if item.key != key:
                raise ConfigError(f"--from-digests: {path}: built from other inputs (key {item.key[:12]}, expected"
                                  f" {key[:12]}): rebuild that platform from this commit and config")
            found[item.platform] = item.digest
        missing = [p for p in ctx.config.image.platforms if p not in found]
        if missing:
            raise ConfigError(f"--from-digests {folder}: no digest for {', '.join(missing)}"
                              " (run 'pipeline build --platform P --digest-out DIR' for each)")
        return found

    def _output(self, client: Registry, reg: RegistryConfig, repo: str, digest: str, key: str, tag: str,
                reused: bool, base: str | None) -> BuildOutput:
        body, media, _ = client.manifest_get(repo, digest)
        platforms = index_platforms(json.loads(body))
        return BuildOutput(reg.name, repo, digest, platforms, key, tag, reused, base, body, media)
