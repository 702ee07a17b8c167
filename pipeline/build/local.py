"""Running buildx so that BuildKit writes only to a local target, and keeping the local layouts.

Where the builder can export an OCI layout (the ``docker`` driver on the containerd image store,
``docker-container``, ``remote``, ``kubernetes``), buildx writes the image straight into a layout
directory (``--output type=oci,dest=DIR,tar=false``). Where it can only push (the ``docker``
driver on the classic store), it pushes one platform to a registry this tool runs on loopback
(``.pipeline/registry/build``), and the image is fetched from there into the layout by the
project's registry client. Either way no remote registry receives a byte from BuildKit.

Build cache is an optimisation: a build whose cache import fails is run again without it, with
a warning; cache exports are local (``inline``, or ``type=local`` with ``ignore-error=true``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import log
from pipeline.access.registries import Access
from pipeline.context import Context
from pipeline.errors import ConfigError, InfraError, ToolError
from pipeline.metadata.tags import TagsOutput
from pipeline.tools import buildx, transfer
from pipeline.tools.oci import INDEX_TYPES, Layout, LayoutError

if TYPE_CHECKING:
    from pipeline.build.base import BaseImage
    from pipeline.build.mirror import BaseCopy, MirrorOutput

CACHE_DIR = Path(".pipeline/buildcache")


# --------------------------------------------------------------------------- layouts on disk


def complete_layout(path: Path) -> Layout | None:
    """The layout at ``path`` when it holds a whole image (its root and every blob below), else None."""
    layout = Layout(path)
    if not layout.exists():
        return None
    try:
        root = layout.root()
        return layout if not layout.missing(root.digest) else None
    except (LayoutError, OSError, ValueError, KeyError):
        return None


def finish_layout(built: Layout, dest: Path) -> Layout:
    """Move a finished layout into its place (a rename: a killed process leaves no half layout there)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(built.path, dest)
    return Layout(dest)


def touch(layout: Layout) -> None:
    """Mark a layout as in use (its mtime): :func:`prune_layouts` keeps it then."""
    try:
        os.utime(layout.path)
    except OSError:
        pass


def prune_layouts(root: Path, *, keep: int, current: Path) -> None:
    """Remove all but the ``keep`` newest layouts (never ``current``, nor one used in the last hour: another
    release may be uploading it) and leftovers of killed builds older than an hour."""
    if not root.is_dir():
        return
    entries = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    recent = time.time() - 3600
    kept = 0
    for p in entries:
        if p.resolve() == current.resolve():
            continue
        if p.stat().st_mtime >= recent:
            kept += 1
            continue
        leftover = p.name.startswith(".") or p.name.endswith((".building", ".partial"))
        if leftover:
            shutil.rmtree(p, ignore_errors=True)
            continue
        kept += 1
        if kept >= keep:
            shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------- the builder


class BuildCancelled(ToolError):
    """The build was stopped on purpose (:meth:`Builder.cancel`): staging already has this image."""


class Builder:
    """buildx for one release: the builder checked once, each call writing a local layout."""

    def __init__(self, ctx: Context, access: Access, args: dict[str, str], base: BaseImage | None) -> None:
        self.ctx = ctx
        self.access = access
        self.args = args
        self.base = base
        self.mirrored: MirrorOutput | None = ctx.outputs.get("mirror")
        self._builder_facts: buildx.BuilderFacts | None = None
        self._lock = threading.Lock()
        self._running: subprocess.Popen[str] | None = None
        self.cancelled = False
        self.logger = log.get(stage="build")

    # -- the builder and what it can do

    def info(self, platforms: tuple[str, ...]) -> buildx.BuilderInfo:
        info = self._facts().info
        assert info is not None
        missing = buildx.unsupported_platforms(platforms, info.platforms)
        if missing:
            raise ToolError(f"build: builder {info.name} ({info.driver} driver) cannot build {', '.join(missing)};"
                            f" it supports {', '.join(info.platforms) or 'nothing listed'} (install"
                            " qemu-user-static for emulation, or use a builder with native nodes)", tool="buildx")
        if len(platforms) > 1:
            ok, why = buildx.multi_platform_reason(info.driver, self._facts().engine)
            if not ok:
                raise ToolError(f"build: builder {info.name} cannot build several platforms in one call ({why});"
                                " set build.mode = \"split\"", tool="buildx")
        return info

    def one_call(self, mode: str, platforms: tuple[str, ...]) -> bool:
        """Build ``platforms`` in one buildx call? ``single``: yes; ``split``: no; ``auto``: when the builder
        can (said once in the log when it cannot, so a slow per-platform build is never a mystery)."""
        if mode != "auto":
            return mode == "single"
        facts = self._facts()
        assert facts.info is not None
        ok, why = buildx.multi_platform_reason(facts.info.driver, facts.engine)
        if not ok:
            self.logger.info("build.per_platform", platforms=",".join(platforms), reason=why,
                             note="build.mode = \"auto\": one buildx call per platform, merged by digest")
        return ok

    def _facts(self) -> buildx.BuilderFacts:
        """The builder and the engine, inspected once per release (started early by the CLI when it could)."""
        if self._builder_facts is None:
            future = self.ctx.shared.get(buildx.BUILDER_FACTS) or buildx.start_inspection(
                self.ctx.shared, self.ctx.config.build.builder, self.ctx.env)
            self._builder_facts = future.result()
        if self._builder_facts.error is not None:
            raise self._builder_facts.error
        return self._builder_facts

    def exports_layouts(self, info: buildx.BuilderInfo) -> bool:
        """Can this builder write an OCI layout (else it can only push, to our loopback registry)?"""
        return buildx.exports_oci(info.driver, self._facts().engine)

    # -- cache

    def _cache(self, info: buildx.BuilderInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
        cfg = self.ctx.config
        reg = cfg.staging_registry
        if cfg.build.cache == "none" or reg is None:
            return (), ()
        repo = reg.repository(cfg.staging.repository or cfg.image.name)
        remote = (f"type=registry,ref={reg.host}/{repo}:buildcache",)
        if cfg.build.cache == "registry":
            if info.driver == "docker":
                self.logger.warning("cache.unsupported", requested="registry", driver="docker",
                                    note="registry cache export needs a docker-container, remote or kubernetes"
                                         " builder; using inline cache")
                return remote, ("type=inline",)
            local = CACHE_DIR / repo.replace("/", "_")
            sources = remote + ((f"type=local,src={local}",) if (local / "index.json").exists() else ())
            return sources, (f"type=local,dest={local},mode=max,ignore-error=true",)
        return remote, ("type=inline",)

    # -- one build

    def spec(self, platforms: tuple[str, ...], output: str, *, cache: bool = True,
             args: dict[str, str] | None = None, contexts: tuple[tuple[str, str], ...] = ()) -> buildx.BuildSpec:
        cfg = self.ctx.config
        tags: TagsOutput = self.ctx.outputs["tags"]
        info = self.info(platforms)
        cache_from, cache_to = self._cache(info) if cache else ((), ())
        annotations = tuple((k, v) for k, v in (*tags.result.annotations.items(), *self._base_annotations(platforms))
                            if not (len(platforms) == 1 and k.startswith("index")))
        return buildx.BuildSpec(
            context=cfg.image.context, dockerfile=cfg.image.dockerfile, platforms=platforms,
            build_args=tuple(sorted((args or self.args).items())), labels=tuple(tags.result.labels.items()),
            annotations=annotations, target=cfg.image.target, builder=cfg.build.builder, output=output,
            cache_from=cache_from, cache_to=cache_to, provenance=cfg.build.provenance,
            build_contexts=contexts, progress="plain" if self.ctx.env.get("CI") else "auto")

    def _base_annotations(self, platforms: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        """The mirror's base-image annotations, unless the offline base replaced the base."""
        from pipeline.build.mirror import annotations

        if self.base is not None and self.base.replaces:
            return ()
        return annotations(self.mirrored, platforms)

    def mirror_bases(self) -> tuple[BaseCopy, ...]:
        """The mirror's copies this build reads from local layouts (named build contexts)."""
        return tuple(b for b in (self.mirrored.bases if self.mirrored else ()) if b.layout)

    def build(self, platforms: tuple[str, ...], dest: Path, *, manifest: bool = False) -> tuple[Layout, str]:
        """Build ``platforms`` into the layout ``dest``; (layout, image digest): the index buildx wrote (a
        single manifest wrapped in one), or with ``manifest`` the one platform's manifest."""
        info = self.info(platforms)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", suffix=".building", dir=dest.parent))
        try:
            if self.exports_layouts(info):
                layout = self._build_to_layout(platforms, staging)
            else:
                layout = self._build_through_loopback(platforms, staging)
            digest = _image_digest(layout, platforms, manifest, self.ctx.outputs["tags"], self.mirrored)
            layout = finish_layout(layout, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.logger.info("build.finished", platforms=",".join(platforms), digest=digest, layout=str(dest))
        return layout, digest

    def cancel(self) -> None:
        """Stop the build (from another thread): the running buildx is killed, no further one starts, and
        :meth:`build` raises :class:`BuildCancelled`."""
        with self._lock:
            self.cancelled = True
            if self._running is not None and self._running.poll() is None:
                self._running.kill()

    def _started(self, process: subprocess.Popen[str]) -> None:
        with self._lock:
            self._running = process
            if self.cancelled:
                process.kill()

    def _run(self, spec: buildx.BuildSpec) -> dict[str, object]:
        """One buildx call; a failure that names the cache is retried once without the cache."""
        with self._secret_files() as secrets:
            return self._run_with(buildx.BuildSpec(**{**spec.__dict__, "secrets": secrets}))

    @contextlib.contextmanager
    def _secret_files(self) -> Iterator[tuple[tuple[str, str], ...]]:
        """``[image.secrets]`` as files for BuildKit while one buildx call runs: a 0600 file in a 0700
        directory for a secret from the environment (removed right after), the user's own file otherwise."""
        wanted = self.ctx.config.image.secrets
        if not wanted:
            yield ()
            return
        folder = Path(tempfile.mkdtemp(prefix="pipeline-secrets-"))
        try:
            out: list[tuple[str, str]] = []
            for secret_id, source in sorted(wanted.items()):
                if source.env is not None:
                    value = self.ctx.env.get(source.env)
                    if not value:
                        raise ConfigError(f"{self.ctx.config_path}: image.secrets.{secret_id}: ${source.env} is not"
                                          " set or empty (export it for the build, or remove the secret)")
                    log.register_secret(value)
                    path = folder / f"secret-{len(out)}"
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w", encoding="utf-8") as fh:
                        fh.write(value)
                    out.append((secret_id, str(path)))
                else:
                    path = Path(source.file or "").expanduser()
                    if not path.is_file() or not os.access(path, os.R_OK):
                        raise ConfigError(f"{self.ctx.config_path}: image.secrets.{secret_id}: cannot read"
                                          f" {source.file} ({'no such file' if not path.exists() else 'permission denied'})")
                    out.append((secret_id, str(path.resolve())))
            yield tuple(out)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _run_with(self, spec: buildx.BuildSpec) -> dict[str, object]:
        timeout = self.ctx.config.build.timeout_seconds
        env = self.access.tool_env()
        try:
            return self._buildx(spec, env, timeout)
        except ToolError as exc:
            if not spec.cache_from or not buildx.cache_failure(exc.stderr or str(exc)):
                raise
            self.logger.warning("cache.import_failed", error=str(exc)[:300],
                                note="the build cache could not be read; building again without it")
            plain = buildx.BuildSpec(**{**spec.__dict__, "cache_from": (), "cache_to": ()})
            return self._buildx(plain, env, timeout)

    def _buildx(self, spec: buildx.BuildSpec, env: dict[str, str], timeout: float) -> dict[str, object]:
        if self.cancelled:
            raise BuildCancelled("build: cancelled")
        try:
            return buildx.run_build(spec, env=env, on_line=self.ctx.progress, timeout=timeout, on_start=self._started)
        except ToolError:
            if self.cancelled:
                raise BuildCancelled("build: cancelled") from None
            raise

    def _build_to_layout(self, platforms: tuple[str, ...], staging: Path) -> Layout:
        out = staging / "layout"
        contexts = (self.base.context_arg,) if self.base is not None and self.base.context_arg else ()
        contexts += tuple(b.context_arg for b in self.mirror_bases())
        self.logger.info("build.started", platforms=",".join(platforms), output=str(out), to="local layout")
        self._run(self.spec(platforms, f"type=oci,dest={out},tar=false", contexts=_pairs(contexts)))
        layout = Layout(out)
        if not layout.exists():
            raise InfraError(f"build: buildx wrote no OCI layout to {out}")
        return layout

    def _build_through_loopback(self, platforms: tuple[str, ...], staging: Path) -> Layout:
        """The classic store: push one platform to our loopback registry, then fetch it into a layout."""
        from pipeline.setup import localregistry
        from pipeline.tools.registry import Registry

        if len(platforms) != 1:
            raise ToolError("build: this builder can only push one platform per call (the docker driver without"
                            " the containerd image store); set build.mode = \"split\"", tool="buildx")
        inst = localregistry.build_loopback()
        cfg = self.ctx.config
        repo = f"build/{cfg.image.name}"
        args = dict(self.args)
        if self.base is not None and self.base.context_arg:
            args["BASE_IMAGE"] = self.base.publish(inst.host)
        ref = f"{inst.host}/{repo}:build-{os.getpid()}-{int(time.time() * 1000)}"
        contexts = tuple((b.context, self._publish_base(b, inst.host)) for b in self.mirror_bases())
        self.logger.info("build.started", platforms=",".join(platforms), output=ref, to="loopback registry")
        meta = self._run(self.spec(platforms, f"type=image,name={ref},push=true,oci-mediatypes=true", args=args,
                                   contexts=contexts))
        digest = meta.get("containerimage.digest")
        if not isinstance(digest, str) or not digest:
            raise InfraError(f"build: buildx reported no image digest for {ref}")
        layout = Layout.create(staging / "layout")
        with Registry(inst.host, name="loopback", insecure=True) as loop:
            transfer.pull(loop, repo, digest, layout)
        layout.set_root(layout.descriptor(digest))
        return layout


    def _publish_base(self, base: BaseCopy, host: str) -> str:
        """A mirror base for a builder that reads no layout, put into the loopback registry by our client: an
        index of just the platforms this build uses (a ``--platform=$BUILDPLATFORM`` stage's included, their
        blobs are in the layout); the named context's value (``docker-image://…@digest``)."""
        import json

        from pipeline.tools.oci import INDEX_TYPES as INDEXES
        from pipeline.tools.registry import Registry

        layout = Layout(base.layout)
        digest = base.digest
        body, media = layout.manifest(digest)
        if media in INDEXES and base.needed:
            index = json.loads(body)
            wanted = {base.platforms[p] for p in base.needed}
            index["manifests"] = [m for m in index.get("manifests") or [] if m.get("digest") in wanted]
            digest = layout.put(json.dumps(index, separators=(",", ":")).encode())
        repo = "bases/" + re.sub(r"[^a-z0-9/]+", "-", base.reference.split("@", 1)[0].rsplit(":", 1)[0].lower())
        with Registry(host, name="loopback", insecure=True) as loop:
            transfer.push(layout, digest, loop, repo)
        return f"docker-image://{host}/{repo}@{digest}"


def _pairs(args: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(a.split("=", 1)) for a in args)  # type: ignore[misc]


def _image_digest(layout: Layout, platforms: tuple[str, ...], manifest: bool, tags: TagsOutput,
                  mirrored: MirrorOutput | None) -> str:
    """The image of a fresh build: the one platform's manifest (``manifest``), else an index."""
    from pipeline.build.merge import wrap_index
    from pipeline.build.mirror import index_annotations

    root = layout.root()
    if not manifest:
        if root.media_type in INDEX_TYPES:
            return root.digest
        return wrap_index(layout, root.digest, tags, index_annotations(mirrored))
    if root.media_type in INDEX_TYPES:
        found = layout.platforms(root.digest)
        digest = found.get(platforms[0]) or (next(iter(found.values())) if len(found) == 1 else None)
        if digest is None:
            raise InfraError(f"build: the layout has no {platforms[0]} image ({', '.join(found) or 'none'})")
        layout.set_root(layout.descriptor(digest))
        return digest
    return root.digest
