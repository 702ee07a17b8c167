"""Small real OCI layouts for unit tests: one index over one manifest per platform, random layers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.tools.oci import OCI_INDEX, OCI_MANIFEST, Descriptor, Layout

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def image_layout(path: Path, *, layer_size: int = 3000,
                 platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64")) -> tuple[Layout, str]:
    """A layout at ``path`` holding one index (its root) over one manifest per platform (incompressible layers)."""
    layout = Layout.create(path)
    entries = []
    for p in platforms:
        os_, arch = p.split("/")[:2]
        config = json.dumps({"os": os_, "architecture": arch, "rootfs": {"type": "layers"}}).encode()
        layer = os.urandom(layer_size)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": CONFIG_TYPE, "digest": layout.put(config), "size": len(config)},
                               "layers": [{"mediaType": LAYER_TYPE, "digest": layout.put(layer), "size": len(layer)}]
                               }).encode()
        entries.append({"mediaType": OCI_MANIFEST, "digest": layout.put(manifest), "size": len(manifest),
                        "platform": {"os": os_, "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    digest = layout.put(index)
    layout.set_root(Descriptor(OCI_INDEX, digest, len(index)))
    return layout, digest


def root_of(path: str | os.PathLike[str]) -> str:
    """The digest a (per-platform view) layout's index.json names."""
    return Layout(path).root().digest
