"""The base image a build starts from: left to BuildKit, or the offline base from a local layout.

With ``image.offline_base = true`` the Dockerfile's ``ARG BASE_IMAGE`` (or its build arg) is
probed first, with the credentials the docker config has for its registry and under a short
retry policy. Only a registry that is definitely unreachable (no such host, connection refused,
no route, after the retries) makes the build use the locally built busybox base; any answer
(401, 403, 404, 429, 5xx) means the registry is there, and the build uses the real base (and
fails clearly if it cannot have it). The offline base reaches BuildKit as a named build context
from a local OCI layout, so BuildKit asks no registry for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline import log
from pipeline.access.registries import Access
from pipeline.build.key import dockerfile_arg_default
from pipeline.context import Context
from pipeline.errors import ConfigError
from pipeline.refs import RefError, parse
from pipeline.retry import RetryPolicy

#: the probe's own policy: a few quick tries, so an offline machine is not held up for minutes
PROBE_POLICY = RetryPolicy(attempts=3, initial_seconds=0.2, max_seconds=1.0, budget_seconds=5.0)


@dataclass(frozen=True)
class BaseImage:
    name: str                  # what BASE_IMAGE is set to: the FROM reference
    context_arg: str | None    # ``NAME=oci-layout://DIR@sha256:…`` when it comes from a local layout
    layout: str | None = None
    digest: str | None = None
    replaces: str | None = None
    platforms: tuple[str, ...] = ()

    def publish(self, host: str) -> str:
        """Put the layout's image into the registry at ``host`` (the build's loopback registry, for builders
        that cannot read a layout); the reference to build FROM there."""
        from pipeline.setup.offline_base import ensure_offline_base

        return ensure_offline_base(host, platforms=self.platforms)


def probe(image: str, env: Mapping[str, str]) -> tuple[bool, str]:
    """(definitely unreachable?, why). Anything that answers is reachable, whatever it answers."""
    from pipeline.tools.registry import Registry, RegistryError, credentials_from_docker_config, loopback_host

    try:
        ref = parse(image)
    except RefError as exc:
        raise ConfigError(f"BASE_IMAGE: {exc}") from None
    insecure = loopback_host(ref.registry)
    try:
        creds = credentials_from_docker_config(ref.registry, env)
        with Registry(ref.registry, policy=PROBE_POLICY, timeout=10.0, insecure=insecure, credentials=creds) as reg:
            found = reg.manifest_head(ref.repository, ref.reference)
    except RegistryError as exc:
        return bool(exc.unreachable), str(exc)
    return False, "found" if found else "not found (the build will say so)"


def resolve(ctx: Context, access: Access, dockerfile_text: str, args: dict[str, str]) -> BaseImage | None:
    """The offline base when ``image.offline_base`` is on and BASE_IMAGE's registry cannot be reached.
    Where the mirror holds BASE_IMAGE, the mirror wins; where the mirror found its registry unreachable,
    that answer stands (no second probe)."""
    if not ctx.config.image.offline_base:
        return None
    base = args.get("BASE_IMAGE") or dockerfile_arg_default(dockerfile_text, "BASE_IMAGE")
    if not base:
        raise ConfigError(f"{ctx.config_path}: image.offline_base: {ctx.config.image.dockerfile} has no"
                          " 'ARG BASE_IMAGE=<image>' to replace")
    mirrored = ctx.outputs.get("mirror")
    if mirrored is not None and mirrored.find(base) is not None:
        return None
    lacking = mirrored.lacks(base) if mirrored is not None else None
    unreachable, why = (True, lacking) if lacking else probe(base, ctx.env)
    if not unreachable:
        return None
    from pipeline.setup.offline_base import offline_base

    made = offline_base(tuple(ctx.config.image.platforms))
    log.get(stage="build").warning(
        "base.replaced", base=base, reason=why[:200], offline_base=made.name, layout=str(made.layout),
        note=f"the registry of the base image {base} cannot be reached from here; building FROM a locally built"
             " busybox base")
    return BaseImage(made.name, made.build_context, str(made.layout), made.digest, base,
                     tuple(ctx.config.image.platforms))
