"""The vulnerability DB for a config: where it is cached, where it comes from, and mirroring it.

``prepare(config, env, access)`` gives a usable DB or raises the exit-3
"no vulnerability DB: …" error; ``mirror(config, env, dest)`` copies Trivy's DB
artifact into a registry of the user's (the fix for public-registry rate limits
and for machines without internet) with the registry client, falling back to
packing the cached DB when no source repository answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline import log
from pipeline.access.registries import Access
from pipeline.config import Config, _default_insecure
from pipeline.errors import ConfigError, InfraError
from pipeline.refs import RefError, parse
from pipeline.retry import RetryPolicy
from pipeline.tools import trivy
from pipeline.tools.registry import (
    OCI_MANIFEST,
    Registry,
    RegistryError,
    copy_manifest_tree,
    credentials_from_docker_config,
    digest_of,
)

CONFIG_MEDIA_TYPE = "application/vnd.aquasec.trivy.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"


def cache_dir(config: Config, env: Mapping[str, str]) -> str:
    return config.scan.cache_dir or trivy.default_cache_dir(env)


def repositories(config: Config) -> tuple[str, ...]:
    return tuple(config.scan.db_repository) or trivy.DEFAULT_DB_REPOSITORIES


def insecure(config: Config, repository: str) -> bool:
    """Plain HTTP for a DB repository: the matching [[registries]] entry says so, else only for loopback."""
    host = repository.split("/", 1)[0]
    for reg in config.registries:
        if reg.host == host:
            return reg.allow_http
    return _default_insecure(host)


def prepare(config: Config, env: Mapping[str, str], access: Access) -> trivy.DBInfo:
    """A usable DB (downloaded when stale, from the first mirror that works), or NoDatabaseError."""
    return trivy.ensure_db(cache_dir(config, env), repositories(config),
                           insecure=lambda repo: insecure(config, repo), env=access.tool_env(),
                           skip_update=config.scan.skip_db_update, timeout_seconds=config.scan.timeout_seconds)


@dataclass(frozen=True)
class MirrorResult:
    destination: str
    digest: str
    source: str


def _client(config: Config, env: Mapping[str, str], access: Access, host: str) -> tuple[Registry, bool]:
    """(client, owned): a configured registry's shared client, or a new one the caller closes."""
    for reg in config.registries:
        if reg.host == host:
            return access.client(reg), False
    policy = RetryPolicy.from_config(config.retry)
    return Registry(host, insecure=_default_insecure(host), credentials=credentials_from_docker_config(host, env),
                    policy=policy), True


def mirror(config: Config, env: Mapping[str, str], dest: str) -> MirrorResult:
    """Copy the DB artifact to ``dest`` (``host/repo[:tag]``, tag default ``2``), by digest then tag."""
    try:
        dst_ref = parse(dest)
    except RefError as exc:
        raise ConfigError(f"--mirror-db {dest}: {exc}") from None
    if dst_ref.digest:
        raise ConfigError(f"--mirror-db {dest}: give a tag (e.g. :2), not a digest")
    tag = dst_ref.tag or "2"
    with Access(config, env) as access:
        dst, dst_owned = _client(config, env, access, dst_ref.registry)
        try:
            return _mirror(config, env, access, dst, dst_ref.registry, dst_ref.repository, tag)
        finally:
            if dst_owned:
                dst.close()


def _mirror(config: Config, env: Mapping[str, str], access: Access, dst: Registry, host: str, repo: str,
            tag: str) -> MirrorResult:
    logger = log.get(stage="scan")
    tried: list[str] = []
    where = f"{host}/{repo}:{tag}"
    for source in repositories(config):
        try:
            src_ref = parse(source)
        except RefError:
            continue
        if (src_ref.registry, src_ref.repository) == (host, repo):
            continue
        src, owned = _client(config, env, access, src_ref.registry)
        try:
            body, media, digest = src.manifest_get(src_ref.repository, src_ref.reference)
            copy_manifest_tree(src, src_ref.repository, dst, repo, digest)
            dst.manifest_put(repo, tag, body, media)
        except (RegistryError, InfraError) as exc:
            tried.append(f"{source}: {exc}")
            logger.warning("db.mirror_source_failed", source=source, error=str(exc))
            continue
        finally:
            if owned:
                src.close()
        logger.info("db.mirrored", source=source, destination=where, digest=digest)
        return MirrorResult(where, digest, source)
    cached = trivy.read_db(cache_dir(config, env))
    if cached is None:
        raise trivy.NoDatabaseError(
            "no vulnerability DB: nothing to mirror: " + ("; ".join(tried) or "no source repository")
            + f"; and {Path(cache_dir(config, env)) / 'db'} holds none (run 'pipeline scan --download-db'"
            " where a DB repository is reachable, or copy a Trivy cache there)")
    digest = push_layer(dst, repo, tag, trivy.db_layer(cached.cache_dir))
    logger.info("db.mirrored", source=f"cache {cached.cache_dir}", updated_at=cached.updated_at,
                destination=where, digest=digest)
    return MirrorResult(where, digest, f"cache:{cached.cache_dir}")


def push_layer(dst: Registry, repository: str, tag: str, layer: bytes) -> str:
    """Put ``db.tar.gz`` in a registry as Trivy's DB artifact (OCI manifest, Trivy's media types)."""
    config = b"{}"
    for blob in (config, layer):
        digest = digest_of(blob)
        if not dst.blob_exists(repository, digest):
            dst.blob_upload(repository, digest, blob, len(blob))
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": digest_of(layer), "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": "db.tar.gz"}}],
    }
    return dst.manifest_put(repository, tag, json.dumps(manifest, separators=(",", ":")).encode(), OCI_MANIFEST)
