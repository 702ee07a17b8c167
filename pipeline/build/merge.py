"""Index helpers of the build: one OCI index over per-platform manifests (split builds), and a
single-platform push wrapped as an index, so every release is an index of the same shape."""

from __future__ import annotations

import json
from typing import Any

from pipeline.errors import InfraError
from pipeline.metadata.tags import TagsOutput
from pipeline.tools.registry import INDEX_TYPES, OCI_INDEX, Registry, index_platforms


def platform_manifest(client: Registry, repo: str, digest: str, platform: str) -> str:
    """The image manifest digest for ``platform`` (a single-platform push may be an index)."""
    body, media, _ = client.manifest_get(repo, digest)
    if media not in INDEX_TYPES:
        return digest
    platforms = index_platforms(json.loads(body))
    if platform in platforms:
        return platforms[platform]
    if len(platforms) == 1:
        return next(iter(platforms.values()))
    raise InfraError(f"build: {repo}@{digest} has no {platform} image ({', '.join(platforms)})")


def _descriptor(client: Registry, repo: str, digest: str) -> dict[str, Any]:
    body, media, _ = client.manifest_get(repo, digest)
    manifest = json.loads(body)
    config = json.loads(client.blob_get(repo, manifest["config"]["digest"]))
    platform = {"architecture": config.get("architecture", ""), "os": config.get("os", "")}
    if config.get("variant"):
        platform["variant"] = config["variant"]
    return {"mediaType": media, "digest": digest, "size": len(body), "platform": platform}


def merge_index(client: Registry, repo: str, tag: str, digests: dict[str, str], order: list[str],
                tags: TagsOutput) -> str:
    """Put one OCI index over per-platform manifests (configured platform order) under ``tag``."""
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                             "manifests": [_descriptor(client, repo, digests[p]) for p in order]}
    ann = {k.split(":", 1)[1]: v for k, v in tags.result.annotations.items() if k.startswith("index:")}
    if ann:
        index["annotations"] = ann
    body = json.dumps(index, separators=(",", ":")).encode()
    return client.manifest_put(repo, tag, body, OCI_INDEX)


def ensure_index(client: Registry, repo: str, tag: str, digest: str) -> str:
    """A single-platform push may be a plain manifest: wrap it so every release is an index."""
    body, media, _ = client.manifest_get(repo, digest)
    if media in INDEX_TYPES:
        return digest
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [_descriptor(client, repo, digest)]}
    return client.manifest_put(repo, tag, json.dumps(index, separators=(",", ":")).encode(), OCI_INDEX)
