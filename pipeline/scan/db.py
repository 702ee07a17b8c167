"""The vulnerability DB (and Trivy's Java DB) for a config: where it is cached, fetching it, mirroring it.

Trivy's DBs are OCI artifacts (a ``db.tar.gz`` layer). The project's own registry client
fetches them, trying each ``scan.db_repository`` (``java_db_repository``) in order, every
request under the one retry policy, and unpacks them into Trivy's cache layout
(``<cache>/db/trivy.db`` + ``metadata.json``, ``<cache>/java-db/trivy-java.db`` + ``metadata.json``);
Trivy then scans with ``--skip-db-update`` and sends nothing to the network. A cached DB is
used as Trivy would: without a download while ``NextUpdate`` (or an hour after
``DownloadedAt``) has not passed (specs/trivy.md §6.2).

``prepare(config, env, access)`` gives a usable DB or raises the exit-3 "no vulnerability
DB: …" error; ``prepare_java`` fetches the Java DB when a scan needs it; ``mirror(config,
env, dest)`` copies the DB artifact into a registry of the user's (the fix for public-registry
rate limits and for machines without internet), falling back to packing the cached DB when no
source repository answers.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline.times import parse_time
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
JAVA_LAYER_MEDIA_TYPE = "application/vnd.aquasec.trivy.javadb.layer.v1.tar+gzip"


@dataclass(frozen=True)
class DBKind:
    """One of Trivy's two databases: where it lives in the cache and how its artifact looks."""

    what: str                      # for messages
    subdir: str                    # under the cache dir
    db_file: str
    layer_media_type: str
    schema_version: int
    defaults: tuple[str, ...]


VULN_DB = DBKind("vulnerability DB", "db", "trivy.db", LAYER_MEDIA_TYPE, trivy.DB_SCHEMA_VERSION,
                 trivy.DEFAULT_DB_REPOSITORIES)
JAVA_DB = DBKind("Java DB", "java-db", "trivy-java.db", JAVA_LAYER_MEDIA_TYPE, trivy.JAVA_DB_SCHEMA_VERSION,
                 trivy.DEFAULT_JAVA_DB_REPOSITORIES)


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


def prepare(config: Config, env: Mapping[str, str], access: Access, *,
            now: datetime | None = None) -> trivy.DBInfo:
    """A usable vulnerability DB in the cache (fetched when stale, from the first repository that works),
    else the stale cached one with a warning, else NoDatabaseError."""
    cache = cache_dir(config, env)
    logger = log.get(stage="scan")
    if config.scan.skip_db_update:
        info = trivy.read_db(cache)
        if info is None:
            raise trivy.NoDatabaseError(trivy.no_db_message(cache, [], True))
        return info
    if fresh(Path(cache) / VULN_DB.subdir / "metadata.json", now or _utcnow()):
        info = trivy.read_db(cache)
        if info is not None:
            return info
    tried: list[tuple[str, str]] = []
    for repo in repositories(config):
        try:
            fetch(config, env, access, VULN_DB, repo, cache, now=now)
        except (RegistryError, InfraError, DBArtifactError) as exc:
            tried.append((repo, str(exc)))
            logger.warning("db.download_failed", repository=repo, error=str(exc))
            continue
        info = trivy.read_db(cache, repo)
        if info is not None:
            logger.info("db.ready", repository=repo, updated_at=info.updated_at)
            return info
        tried.append((repo, "the artifact held no usable DB"))
    info = trivy.read_db(cache)
    if info is None:
        raise trivy.NoDatabaseError(trivy.no_db_message(cache, tried, False))
    logger.warning("db.stale_used", updated_at=info.updated_at, cache_dir=cache,
                   note="no DB repository answered; scanning with the cached DB")
    return info


def java_repositories(config: Config) -> tuple[str, ...]:
    return tuple(config.scan.java_db_repository) or trivy.DEFAULT_JAVA_DB_REPOSITORIES


def prepare_java(config: Config, env: Mapping[str, str], access: Access, *, now: datetime | None = None) -> None:
    """Trivy's Java DB in the cache, for an image with JARs (fetched like the vulnerability DB)."""
    cache = cache_dir(config, env)
    meta = Path(cache) / JAVA_DB.subdir / "metadata.json"
    if config.scan.skip_db_update or fresh(meta, now or _utcnow()):
        if (Path(cache) / JAVA_DB.subdir / JAVA_DB.db_file).is_file():
            return
        if config.scan.skip_db_update:
            raise trivy.NoDatabaseError(f"no Java DB: the image holds JARs, scan.skip_db_update = true and"
                                        f" {Path(cache) / JAVA_DB.subdir} holds none; prewarm the cache")
    tried: list[str] = []
    for repo in java_repositories(config):
        try:
            fetch(config, env, access, JAVA_DB, repo, cache, now=now)
            log.get(stage="scan").info("java_db.ready", repository=repo)
            return
        except (RegistryError, InfraError, DBArtifactError) as exc:
            tried.append(f"{repo}: {exc}")
            log.get(stage="scan").warning("java_db.download_failed", repository=repo, error=str(exc))
    if (Path(cache) / JAVA_DB.subdir / JAVA_DB.db_file).is_file():
        log.get(stage="scan").warning("java_db.stale_used", cache_dir=cache)
        return
    raise trivy.NoDatabaseError("no Java DB (the image holds JARs): " + "; ".join(tried) + "; configure"
                                " scan.java_db_repository with a mirror this machine can reach")


class DBArtifactError(InfraError):
    """A DB repository answered with something that is not Trivy's DB artifact."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def fresh(metadata: Path, now: datetime) -> bool:
    """Trivy's own rule: no download while NextUpdate is ahead or within an hour of the last download."""
    try:
        meta = json.loads(metadata.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    next_update, downloaded = parse_time(meta.get("NextUpdate")), parse_time(meta.get("DownloadedAt"))
    if downloaded is None:
        return False
    return (next_update is not None and now < next_update) or now < downloaded + timedelta(hours=1)


def fetch(config: Config, env: Mapping[str, str], access: Access, kind: DBKind, repository: str, cache: str, *,
          now: datetime | None = None) -> str:
    """Fetch one DB artifact with our client and unpack it into the cache; the artifact's digest."""
    try:
        ref = parse(repository)
    except RefError as exc:
        raise DBArtifactError(str(exc)) from None
    client, owned = _client(config, env, access, ref.registry)
    target = Path(cache) / kind.subdir
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        body, _, digest = client.manifest_get(ref.repository, ref.reference)
        manifest = json.loads(body)
        layers = [layer for layer in manifest.get("layers") or [] if layer.get("mediaType") == kind.layer_media_type]
        if not layers:
            raise DBArtifactError(f"not a Trivy {kind.what} artifact (no {kind.layer_media_type} layer)")
        layer = layers[0]
        with tempfile.TemporaryDirectory(prefix=f".{kind.subdir}-", dir=target.parent) as tmp:
            archive = Path(tmp) / "db.tar.gz"
            client.pull_blob(ref.repository, layer["digest"], int(layer.get("size") or 0) or None, archive)
            unpacked = Path(tmp) / "unpacked"
            _unpack(archive, unpacked, (kind.db_file, "metadata.json"), repository)
            meta = json.loads((unpacked / "metadata.json").read_text())
            if not isinstance(meta, dict) or meta.get("Version") != kind.schema_version:
                raise DBArtifactError(f"the {kind.what} has schema version"
                                      f" {meta.get('Version') if isinstance(meta, dict) else '?'}, this Trivy reads"
                                      f" {kind.schema_version}")
            meta["DownloadedAt"] = (now or _utcnow()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            (unpacked / "metadata.json").write_text(json.dumps(meta) + "\n")
            target.mkdir(parents=True, exist_ok=True)
            os.replace(unpacked / kind.db_file, target / kind.db_file)   # readers keep the old file open
            os.replace(unpacked / "metadata.json", target / "metadata.json")
    finally:
        if owned:
            client.close()
    log.get(stage="scan").info("db.fetched", what=kind.what, repository=repository, digest=digest)
    return digest


def _unpack(archive: Path, dest: Path, names: tuple[str, ...], repository: str) -> None:
    """Only the named regular files, by base name: nothing in an archive can write elsewhere."""
    dest.mkdir(parents=True)
    found: set[str] = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = Path(member.name).name
                if name not in names or not member.isfile():
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src, open(dest / name, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                found.add(name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DBArtifactError(f"the DB archive is unreadable ({exc})") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DBArtifactError(f"the DB archive lacks {', '.join(missing)}")


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


def push_layer(dst: Registry, repository: str, tag: str, layer: bytes, kind: DBKind = VULN_DB) -> str:
    """Put ``db.tar.gz`` in a registry as Trivy's DB (or Java DB) artifact (OCI manifest, Trivy's media types)."""
    config = b"{}"
    for blob in (config, layer):
        dst.put_bytes(repository, blob)
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": kind.layer_media_type, "digest": digest_of(layer), "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": "javadb.tar.gz" if kind is JAVA_DB
                                    else "db.tar.gz"}}],
    }
    return dst.manifest_put(repository, tag, json.dumps(manifest, separators=(",", ":")).encode(), OCI_MANIFEST)
