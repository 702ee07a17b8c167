"""Index helpers of the build, all on local layouts: one OCI index over per-platform manifests (split
builds), and a single-platform build wrapped as an index, so every release is an index of the same shape."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from pipeline.metadata.tags import TagsOutput
from pipeline.tools.oci import Layout, platform_name


def _annotations(tags: TagsOutput, extra: Mapping[str, str]) -> dict[str, str]:
    """The ``index:`` annotations of the tag rules (and ``extra``: the base image's), for the index itself."""
    out = {k.split(":", 1)[1]: v for k, v in tags.result.annotations.items() if k.startswith("index:")}
    return {**out, **extra}


def wrap_index(layout: Layout, digest: str, tags: TagsOutput, extra: Mapping[str, str] | None = None) -> str:
    """An index over the one manifest ``digest`` (a single-platform build), made the layout's root."""
    return layout.put_index([layout.platform_entry(digest)], _annotations(tags, extra or {}))


def merge_layouts(dest: Path, parts: list[tuple[Layout, str]], tags: TagsOutput,
                  extra: Mapping[str, str] | None = None) -> tuple[Layout, str]:
    """One layout at ``dest`` whose root is an OCI index over the manifests of ``parts`` (in that order,
    the configured platform order); blobs are hard-linked (copied across file systems)."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged = Layout.create(tmp)
    for part, digest in parts:
        for kind, desc in part.walk(digest):
            _link(part.blob_path(desc.digest), merged.blob_path(desc.digest))
    index = merged.put_index([merged.platform_entry(digest) for _, digest in parts], _annotations(tags, extra or {}))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return Layout(dest), index


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


__all__ = ["merge_layouts", "platform_name", "wrap_index"]
