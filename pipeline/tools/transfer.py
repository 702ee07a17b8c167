"""Moving images between a local OCI layout and registries, by digest, under the one retry policy.

* :func:`push`: a layout's image (index, platform manifests, configs, layers) into one registry
  repository. A manifest the registry already serves ends the walk there (a registry accepts a
  manifest only once everything below it is present); blobs are HEADed first, mounted from
  another repository of the same registry where one has them, else uploaded from the local file
  (``Registry.push_blob``: whole, or in resumable chunks). Blobs and platforms go concurrently
  within a bounded pool; manifests are put after their blobs, children before parents, by digest.
  Nothing is tagged here.
* :func:`pull`: the reverse, registry → layout (only what the layout lacks), each blob resumable.

Every request retries on its own (429 with Retry-After, 5xx, resets, broken bodies), so a
transfer survives a registry that fails a share of its requests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipeline import log
from pipeline.tools.oci import INDEX_TYPES, Descriptor, Layout, referenced_descriptors
from pipeline.tools.registry import UPLOAD_CHUNK, Registry

DEFAULT_CONCURRENCY = 4


@dataclass
class Stats:
    """What one transfer did (counted per destination)."""

    manifests_present: int = 0
    manifests_put: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_downloaded: int = 0
    bytes_downloaded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, n in counts.items():
                setattr(self, key, getattr(self, key) + n)

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_") and v}


@dataclass(frozen=True)
class _Tree:
    manifests: list[tuple[Descriptor, bytes]]     # children before parents
    blobs: list[Descriptor]                       # unique


def _tree(layout: Layout, digest: str, skip: set[str]) -> _Tree:
    """The manifests (post-order) and unique blobs below ``digest``, leaving out manifests in ``skip``."""
    manifests: list[tuple[Descriptor, bytes]] = []
    blobs: dict[str, Descriptor] = {}

    def visit(d: str) -> None:
        if d in skip:
            return
        body, media = layout.manifest(d)
        children, own = referenced_descriptors(json.loads(body))
        for child in children:
            visit(child.digest)
        for b in own:
            blobs.setdefault(b.digest, b)
        manifests.append((Descriptor(media, d, len(body)), body))

    visit(digest)
    return _Tree(manifests, list(blobs.values()))


def _children(layout: Layout, digest: str) -> list[Descriptor]:
    body, media = layout.manifest(digest)
    if media not in INDEX_TYPES:
        return []
    children, _ = referenced_descriptors(json.loads(body))
    return children


def push(layout: Layout, digest: str, dst: Registry, repo: str, *, concurrency: int = DEFAULT_CONCURRENCY,
         mount_from: Sequence[str] = (), stats: Stats | None = None, chunk_size: int = UPLOAD_CHUNK) -> Stats:
    """Upload the image ``digest`` of ``layout`` to ``dst``/``repo`` (see the module docstring)."""
    stats = stats if stats is not None else Stats()
    logger = log.get()
    if dst.manifest_head(repo, digest) is not None:
        stats.add(manifests_present=1)
        return stats
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix=f"push-{dst.name}") as pool:
        children = _children(layout, digest)
        present = {c.digest for c, there in zip(children, pool.map(
            lambda c: dst.manifest_head(repo, c.digest) is not None, children)) if there}
        stats.add(manifests_present=len(present))
        tree = _tree(layout, digest, present)

        def one_blob(blob: Descriptor) -> None:
            if dst.blob_exists(repo, blob.digest):
                stats.add(blobs_present=1)
                return
            for source in mount_from:
                if source != repo and dst.blob_mount(repo, blob.digest, source):
                    stats.add(blobs_mounted=1)
                    return
            size = layout.size(blob.digest)
            dst.push_blob(repo, blob.digest, size, lambda offset, length: layout.chunks(blob.digest, offset, length),
                          chunk_size=chunk_size)
            stats.add(blobs_uploaded=1, bytes_uploaded=size)
            logger.debug("blob.uploaded", registry=dst.name, repo=repo, digest=blob.digest, size=size)

        list(pool.map(one_blob, tree.blobs))
        for desc, body in tree.manifests:
            dst.manifest_put(repo, desc.digest, body, desc.media_type)
            stats.add(manifests_put=1)
    return stats


def pull(src: Registry, repo: str, digest: str, layout: Layout, *, concurrency: int = DEFAULT_CONCURRENCY,
         platforms: Iterable[str] | None = None, stats: Stats | None = None) -> Stats:
    """Fetch image ``digest`` from ``src``/``repo`` into ``layout``: manifests first, then the blobs it
    lacks, concurrently. With ``platforms``, an index brings only those platforms' manifests (and
    its other entries' manifests but not their blobs)."""
    stats = stats if stats is not None else Stats()
    wanted = set(platforms) if platforms is not None else None
    blobs: dict[str, Descriptor] = {}

    def fetch_manifest(d: str) -> bytes:
        if layout.has(d):
            return layout.read(d)
        body, _, _ = src.manifest_get(repo, d)
        layout.put(body, d)
        return body

    def visit(d: str, want_blobs: bool) -> None:
        manifest = json.loads(fetch_manifest(d))
        children, own = referenced_descriptors(manifest)
        by_digest = {m["digest"]: m for m in manifest.get("manifests") or []}
        for child in children:
            entry = by_digest.get(child.digest, {})
            name = _platform_of(entry)
            visit(child.digest, want_blobs and (wanted is None or name in wanted))
        if want_blobs:
            for b in own:
                if not layout.has(b.digest):
                    blobs.setdefault(b.digest, b)

    visit(digest, True)

    def one_blob(blob: Descriptor) -> None:
        src.pull_blob(repo, blob.digest, blob.size or None, layout.blob_path(blob.digest))
        stats.add(blobs_downloaded=1, bytes_downloaded=blob.size)

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix=f"pull-{src.name}") as pool:
        list(pool.map(one_blob, blobs.values()))
    return stats


def _platform_of(entry: dict[str, Any]) -> str | None:
    from pipeline.tools.oci import platform_name

    return platform_name(entry.get("platform"))
