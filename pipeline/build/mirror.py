"""The base-image mirror: every FROM of the Dockerfile comes from a registry of ours, by the digest the lock pins.

For each base image (:mod:`pipeline.build.froms` finds them; ``[mirror] images`` adds more):

1. the digest: from the FROM itself (``image@sha256:…``), else from the lock
   (:mod:`pipeline.build.lock`), else the upstream is asked (a HEAD, which Docker Hub does not count);
2. the mirror (``[mirror] registry``, default the staging registry, repository
   ``<prefix>/<upstream host>/<repository>``) is asked for that digest; only when it lacks it is the whole
   index copied from the upstream, by digest (so the digest is preserved), with the project's client under
   the one retry policy, credentials from a ``[[registries]]`` entry of that host or the docker config;
3. for a build, the platforms it needs are fetched from the mirror into a local OCI layout
   (``.pipeline/bases/<digest>``), handed to BuildKit as ``--build-context NAME=oci-layout://DIR@DIGEST``:
   BuildKit asks no registry for it.

So a base that is locked and mirrored costs the upstream nothing, and a rate-limited or dead upstream
stops nothing that was mirrored once. ``pipeline mirror`` runs the same sync without a build;
``--check`` asks the upstream (HEADs only) whether a locked tag moved; ``--update`` moves the lock.
"""

from __future__ import annotations

import contextlib
import json
import platform as host_platform
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline import log
from pipeline.build import froms
from pipeline.build import lock as lockfile
from pipeline.config import Config
from pipeline.context import Context
from pipeline.errors import ConfigError, InfraError
from pipeline.refs import Ref, parse
from pipeline.stage import exclusive
from pipeline.tools.oci import index_platforms

if TYPE_CHECKING:
    from pipeline.access.registries import Access
    from pipeline.tools.oci import Layout
    from pipeline.tools.registry import Registry, RegistryError

BASES_DIR = Path(".pipeline/bases")
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
_MACHINE = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm/v7",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


# --------------------------------------------------------------------------- what the build needs


@dataclass(frozen=True)
class Wanted:
    reference: str                 # docker's full form: the lock's key
    ref: Ref
    context: str                   # the name BuildKit looks the named context up by
    platforms: tuple[str, ...]     # what the build pulls it for (empty: not built FROM, [mirror] images)
    where: str                     # "Dockerfile.example:6" or "mirror.images[0]"


def build_platform() -> str:
    """What ``$BUILDPLATFORM`` means for a builder on this machine."""
    return "linux/" + _MACHINE.get(host_platform.machine().lower(), host_platform.machine().lower())


def read_stages(cfg: Config, config_path: Path | str, platforms: tuple[str, ...] = ()) -> froms.Stages:
    """The Dockerfile's stages for ``platforms`` (default: every one of image.platforms)."""
    path = Path(cfg.image.dockerfile)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{config_path}: image.dockerfile: cannot read {path}: {exc.strerror}") from None
    try:
        return froms.read(text, cfg.image.build_args, platforms or tuple(cfg.image.platforms), build_platform(),
                          cfg.image.target)
    except froms.DockerfileError as exc:
        raise ConfigError(f"{path}: {exc} (the mirror reads every FROM; fix the Dockerfile or set"
                          " mirror.enabled = false)") from None


def wanted(cfg: Config, config_path: Path | str, platforms: tuple[str, ...] = ()) -> list[Wanted]:
    """Every base image, once, with the platforms each is pulled for (a split build: its own platform)."""
    found: dict[str, Wanted] = {}
    for base in read_stages(cfg, config_path, platforms).bases:
        key = froms.full_name(base.ref)
        old = found.get(key)
        union = tuple(dict.fromkeys((old.platforms if old else ()) + base.platforms))
        found[key] = Wanted(key, base.ref, froms.context_name(base.ref), union,
                            old.where if old else f"{cfg.image.dockerfile}:{base.line}")
    for i, image in enumerate(cfg.mirror.images):
        ref = parse(image)
        key = froms.full_name(ref)
        if key not in found:
            found[key] = Wanted(key, ref, froms.context_name(ref), (), f"mirror.images[{i}]")
    return list(found.values())


def mirror_repository(cfg: Config, ref: Ref) -> str:
    """``<namespace>/<prefix>/<upstream host>/<repository>`` (a port's colon becomes ``-``)."""
    reg = cfg.mirror_registry
    assert reg is not None
    host = re.sub(r"[^a-z0-9.]+", "-", ref.registry.lower()).strip("-.")
    return reg.repository(f"{cfg.mirror.prefix}/{host}/{ref.repository}")


def lock_path(cfg: Config) -> Path:
    return Path(cfg.mirror.lock)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class BaseCopy:
    """One base image as the build gets it."""

    reference: str                 # docker.io/library/busybox:1.36
    context: str                   # busybox:1.36 (BuildKit's name for it)
    digest: str                    # what the lock pins (an index, or one manifest)
    media_type: str
    platforms: dict[str, str]      # every platform of the image → its manifest digest
    mirror: str                    # host/repository@digest of the copy
    upstream_asked: bool           # was the upstream asked anything in this run
    copied: bool                   # copied into the mirror in this run
    source: str                    # lock | upstream | pinned (the FROM names the digest)
    layout: str = ""               # the local OCI layout the build reads it from ("" without a build)
    needed: tuple[str, ...] = ()   # the platforms of it the build uses (their blobs are in the layout)

    @property
    def context_arg(self) -> str:
        return f"{self.context}=oci-layout://{Path(self.layout).resolve()}@{self.digest}"

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": self.digest, "platforms": self.platforms,
                "mirror": self.mirror, "upstream_asked": self.upstream_asked, "copied": self.copied,
                "source": self.source}


@dataclass(frozen=True)
class Moved:
    reference: str
    locked: str | None             # None: not in the lock yet
    upstream: str

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "locked": self.locked, "upstream": self.upstream}


@dataclass(frozen=True)
class MirrorOutput:
    bases: tuple[BaseCopy, ...]
    lock: str
    lock_written: bool
    unavailable: tuple[tuple[str, str], ...] = ()   # (reference, why): left to image.offline_base
    moved: tuple[Moved, ...] = ()                    # --check / --update: tags that point elsewhere now
    final: str | None = None                         # the reference the released image is built FROM
    registry: str = ""

    def find(self, image: str) -> BaseCopy | None:
        """The copy of ``image`` (as a FROM or BASE_IMAGE names it), if the mirror has it."""
        try:
            key = froms.full_name(parse(image))
        except ValueError:
            return None
        return next((b for b in self.bases if b.reference == key), None)

    def lacks(self, image: str) -> str | None:
        try:
            key = froms.full_name(parse(image))
        except ValueError:
            return None
        return next((why for ref, why in self.unavailable if ref == key), None)

    def to_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "lock": self.lock, "lock_written": self.lock_written,
                "bases": [b.to_dict() for b in self.bases],
                "unavailable": [{"reference": r, "reason": why} for r, why in self.unavailable],
                "moved": [m.to_dict() for m in self.moved]}


def annotations(output: MirrorOutput | None, platforms: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The OCI base-image annotations (``…base.name``/``…base.digest``) of the released image: the index
    names the base's index, each platform manifest the base's manifest of that platform."""
    base = output.find(output.final) if output is not None and output.final else None
    if base is None:
        return ()
    out = [(f"index:{BASE_NAME}", base.reference), (f"index:{BASE_DIGEST}", base.digest)]
    for p in platforms:
        out += [(f"manifest[{p}]:{BASE_NAME}", base.reference),
                (f"manifest[{p}]:{BASE_DIGEST}", platform_digest(base.platforms, p) or base.digest)]
    return tuple(out)


def index_annotations(output: MirrorOutput | None) -> dict[str, str]:
    """The index's own base-image annotations (for indexes made here: merges, wrapped single platforms)."""
    return {k.split(":", 1)[1]: v for k, v in annotations(output, ()) if k.startswith("index:")}


def platform_digest(available: dict[str, str], wanted_platform: str) -> str | None:
    """The entry for ``linux/arm64`` is ``linux/arm64`` or ``linux/arm64/v8`` (docker's default variant)."""
    if wanted_platform in available:
        return available[wanted_platform]
    same = [p for p in available if p.split("/")[:2] == wanted_platform.split("/")[:2]]
    return available[same[0]] if len(same) == 1 or (same and wanted_platform.count("/") == 1) else None


# --------------------------------------------------------------------------- the engine


class RateLimited(InfraError):
    pass


@dataclass
class _Sync:
    ctx: Context
    access: Access
    build: bool                     # fetch the local layouts (a build), else only the mirror and the lock
    update: bool = False            # resolve every tag again and move the lock
    check: bool = False             # only ask the upstream whether the locked tags moved
    lenient: bool = False           # an upstream that cannot be had is noted, not fatal (image.offline_base)
    needed: dict[str, tuple[str, ...]] = field(default_factory=dict)   # a split build: reference → its platforms
    _upstreams: dict[str, Registry] = field(default_factory=dict)
    _asked: dict[str, bool] = field(default_factory=dict)              # upstream host → it answered once

    @property
    def cfg(self) -> Config:
        return self.ctx.config

    def close(self) -> None:
        for client in self._upstreams.values():
            client.close()

    def quick(self, want: Wanted) -> contextlib.AbstractContextManager[None]:
        """The upstream's first request under the probe's short policy where an unreachable upstream is no
        failure (image.offline_base): an offline machine is told in seconds, not after minutes of retries."""
        from pipeline.build.base import PROBE_POLICY

        client = self.upstream(want.ref)

        @contextlib.contextmanager
        def swapped() -> Iterator[None]:
            full, client.policy = client.policy, PROBE_POLICY
            try:
                yield
            finally:
                client.policy = full

        return swapped() if self.lenient and not self._asked.get(want.ref.registry) else contextlib.nullcontext()

    def upstream(self, ref: Ref) -> Registry:
        from pipeline.tools.registry import DOCKER_HUB_HOSTS, Registry, credentials_from_docker_config, loopback_host

        host = ref.registry
        for reg in self.cfg.registries:            # a configured registry of that host: its credentials
            same = reg.host == host or (reg.host in DOCKER_HUB_HOSTS and host in DOCKER_HUB_HOSTS)
            if same:
                return self.access.client(reg)
        if host not in self._upstreams:
            creds = credentials_from_docker_config(host, self.ctx.env)
            self._upstreams[host] = Registry(host, name=host, insecure=loopback_host(host), credentials=creds,
                                             policy=self.access.policy)
        return self._upstreams[host]

    def _failed(self, want: Wanted, exc: RegistryError, doing: str) -> InfraError:
        """The upstream's error, said so a user knows what to do."""
        quota = getattr(self._upstreams.get(want.ref.registry), "rate_limit", None)
        if exc.status == 429:
            left = f" ({quota.describe()})" if quota is not None else ""
            return RateLimited(f"mirror: {want.ref.registry} refused to {doing} {want.reference}: pull rate limit"
                               f" reached{left}. Log in to {want.ref.registry} (docker login, or a [[registries]]"
                               " entry with credentials) for a higher limit; once the mirror holds the base and"
                               f" {self.cfg.mirror.lock} pins it, builds ask {want.ref.registry} nothing"
                               f" [{exc.detail[:160]}]")
        return InfraError(f"mirror: cannot {doing} {want.reference} ({want.where}): {exc}")

    def resolve(self, want: Wanted) -> str:
        """The digest the upstream's tag points at now: a HEAD (Docker Hub counts GETs, not HEADs)."""
        client = self.upstream(want.ref)
        head = client.manifest_head(want.ref.repository, want.ref.reference)
        if head is None:
            raise ConfigError(f"mirror: {want.reference} ({want.where}): no such image at {want.ref.registry}")
        return head.digest

    def run(self, wanted_list: list[Wanted], final: str | None) -> MirrorOutput:
        from pipeline.tools.registry import RegistryError

        reg = self.cfg.mirror_registry
        assert reg is not None
        mirror = self.access.client(reg)
        lock = lockfile.read(lock_path(self.cfg))
        bases: list[BaseCopy] = []
        unavailable: list[tuple[str, str]] = []
        moved: list[Moved] = []
        logger = log.get(stage="mirror")
        for want in wanted_list:
            pin = lock.get(want.reference)
            repo = mirror_repository(self.cfg, want.ref)
            asked = False
            try:
                if want.ref.digest:
                    if self.check:
                        continue               # pinned in the Dockerfile itself: nothing can move
                    digest, source = want.ref.digest, "pinned"
                elif self.update or self.check or pin is None:
                    digest = self._ask(want)
                    asked = True
                    if pin is None or pin.digest != digest:
                        moved.append(Moved(want.reference, pin.digest if pin else None, digest))
                    if self.check:
                        continue
                    source = "upstream"
                else:
                    digest, source = pin.digest, "lock"
                copied = False
                if mirror.manifest_head(repo, digest) is None:
                    asked = True
                    copied = self._copy(want, repo, digest, mirror)
                body, media, _ = mirror.manifest_get(repo, digest)
            except RegistryError as exc:
                if exc.registry == mirror.name:
                    raise InfraError(f"mirror: the mirror registry {reg.name} ({reg.url}) failed: {exc}") from None
                error = self._failed(want, exc, "serve")
                # only "nothing answered" hands over to the offline base: a registry that answers (5xx, 429, a
                # reset) is there, and a base built FROM busybox instead would be a different image
                if self.lenient and exc.unreachable:
                    unavailable.append((want.reference, str(exc)))
                    logger.warning("base.unavailable", image=want.reference, error=str(exc)[:300],
                                   note="the mirror lacks it and its registry cannot be reached; image.offline_base"
                                        " decides what the build uses")
                    continue
                raise error from None
            parsed = json.loads(body)
            platforms = index_platforms(parsed) if "manifests" in parsed else {}
            lock.pins[want.reference] = lockfile.Pin(digest, media, platforms)
            copy = BaseCopy(want.reference, want.context, digest, media, platforms,
                            f"{reg.host}/{repo}@{digest}", asked, copied, source)
            platforms = self.needed.get(want.reference, want.platforms) if self.needed else want.platforms
            if self.build and platforms:
                copy = self._local(copy, want, repo, mirror, platforms)
            if want.ref.tag and copied:
                mirror.manifest_put(repo, want.ref.tag, body, media)
            logger.info("base.ready", image=want.reference, digest=digest, source=source, copied=copied,
                        upstream_asked=asked, mirror=copy.mirror)
            bases.append(copy)
        written = False
        if not self.check:
            keep = {w.reference for w in wanted_list}     # pins of bases no FROM uses any more go
            lock.pins = {k: v for k, v in lock.pins.items() if k in keep}
            written = lock.write()
            if written:
                logger.info("lock.written", lock=str(lock.path), images=len(lock.pins),
                            note="commit it: every machine then builds FROM these digests")
        for client in self._upstreams.values():
            if client.rate_limit is not None:
                logger.info("upstream.rate_limit", registry=client.name, remaining=client.rate_limit.remaining,
                            limit=client.rate_limit.limit)
        return MirrorOutput(tuple(bases), str(lock.path), written, tuple(unavailable), tuple(moved), final, reg.name)

    def _ask(self, want: Wanted) -> str:
        with self.quick(want):
            digest = self.resolve(want)
        self._asked[want.ref.registry] = True
        return digest

    def _copy(self, want: Wanted, repo: str, digest: str, mirror: Registry) -> bool:
        from pipeline.tools.registry import copy_manifest_tree

        source = self.upstream(want.ref)
        stats: dict[str, int] = {}
        if not self._asked.get(want.ref.registry):
            with self.quick(want):          # the locked digest, asked for quickly before a copy of many requests
                if source.manifest_head(want.ref.repository, digest) is None:
                    raise ConfigError(f"mirror: {want.reference} ({want.where}): {want.ref.registry} has no"
                                      f" {digest} any more (pinned by {self.cfg.mirror.lock}); run 'pipeline mirror"
                                      " --update' to pin what the tag points at now")
            self._asked[want.ref.registry] = True
        with exclusive("mirror", mirror.host, repo, digest):
            copy_manifest_tree(source, want.ref.repository, mirror, repo, digest, stats)
        log.get(stage="mirror").info("base.mirrored", image=want.reference, digest=digest,
                                     mirror=f"{mirror.host}/{repo}", **stats)
        return True

    def _local(self, copy: BaseCopy, want: Wanted, repo: str, mirror: Registry,
               platforms: tuple[str, ...]) -> BaseCopy:
        """The platforms the build needs, from the mirror into ``.pipeline/bases/<digest>``."""
        from pipeline.tools import transfer
        from pipeline.tools.oci import Layout

        names: list[str] = []
        for p in platforms:
            if not copy.platforms:
                break              # one manifest, no index: BuildKit takes it for whatever platform
            match = platform_digest(copy.platforms, p)
            if match is None:
                raise ConfigError(f"{want.where}: the base image {want.reference} ({copy.digest[:19]}) has no {p}"
                                  f" image (it has {', '.join(copy.platforms)}); pick a base that has every one of"
                                  " image.platforms")
            names += [n for n, d in copy.platforms.items() if d == match]
        dest = BASES_DIR / copy.digest.split(":", 1)[1][:32]
        with exclusive("bases", str(dest.resolve())):
            layout = Layout(dest) if Layout(dest).exists() else Layout.create(dest)
            if not _complete(layout, copy, names):
                transfer.pull(mirror, repo, copy.digest, layout, platforms=names or None,
                              concurrency=self.cfg.copy_.concurrency)
                layout.set_root(layout.descriptor(copy.digest))
        return BaseCopy(**{**copy.__dict__, "layout": str(dest), "needed": tuple(names)})


def _complete(layout: Layout, copy: BaseCopy, names: list[str]) -> bool:
    try:
        if not layout.has(copy.digest):
            return False
        needed = [copy.platforms[n] for n in names] or [copy.digest]
        return all(layout.has(d) and not layout.missing(d) for d in needed)
    except (OSError, ValueError, KeyError):
        return False


@contextlib.contextmanager
def _session(ctx: Context, access: Access, **kw: Any) -> Iterator[_Sync]:
    sync = _Sync(ctx, access, **kw)
    try:
        yield sync
    finally:
        sync.close()


def sync(ctx: Context, access: Access, *, build: bool, update: bool = False, check: bool = False) -> MirrorOutput:
    """Bring the mirror and the lock up to date for this config (see the module docstring)."""
    cfg = ctx.config
    # every platform decides which bases there are (the same on each split runner and at the merge: they
    # are build inputs); a split build fetches only what its own platform needs
    final = read_stages(cfg, ctx.config_path).final_base(cfg.image.target)
    wanted_list = wanted(cfg, ctx.config_path)
    needed = {w.reference: w.platforms for w in wanted(cfg, ctx.config_path, (ctx.options.platform,))} \
        if ctx.options.platform else {}
    with _session(ctx, access, build=build, update=update, check=check, needed=needed,
                  lenient=cfg.image.offline_base and not (update or check)) as s:
        return s.run(wanted_list, froms.full_name(final.ref) if final else None)


# --------------------------------------------------------------------------- the stage


class Mirror:
    name: ClassVar[str] = "mirror"
    description: ClassVar[str] = ("Base images from the mirror, pinned by the lock file (the upstream is asked only"
                                  " for what the mirror lacks).")
    tools: ClassVar[tuple[str, ...]] = ()

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.config.mirror.enabled:
            return "mirror.enabled = false (BuildKit pulls the base images from their registries)"
        if not ctx.config.build.enabled:
            return "build.enabled = false"
        return None

    def describe(self, ctx: Context) -> str:
        cfg = ctx.config
        reg = cfg.mirror_registry
        assert reg is not None
        lock = lockfile.read(lock_path(cfg))
        parts = []
        for w in wanted(cfg, ctx.config_path):
            pin = lock.get(w.reference)
            if w.ref.digest:
                parts.append(f"{w.context} (pinned in the FROM)")
            elif pin is not None:
                parts.append(f"{w.context} @ {pin.digest[:19]} (locked)")
            else:
                parts.append(f"{w.context} (not locked: resolved at {w.ref.registry}, then locked)")
        what = "; ".join(parts) or "no base images (FROM scratch)"
        return (f"{what}; copies in {reg.url}/{reg.repository(cfg.mirror.prefix)}/…, the upstream asked only for"
                f" what {cfg.mirror.lock} does not pin or the mirror lacks")

    def run(self, ctx: Context) -> MirrorOutput:
        with ctx.registry_access() as access:
            # merging split builds needs no layouts, but the same digests (they are build inputs)
            return sync(ctx, access, build=not ctx.options.from_digests)


__all__ = ["BASES_DIR", "BaseCopy", "Mirror", "MirrorOutput", "Moved", "annotations", "build_platform", "index_annotations",
           "mirror_repository", "sync", "wanted"]
