"""Synthetic images straight into a registry (no docker build): for prune/inventory tests and benchmarks.

Each image is a real OCI image manifest with a small random config (its ``created`` chosen by the
caller: that is how tests set an image's approximate age) and a layer shared per repository;
indexes reference real platform manifests; cosign-style ``sha256-<hex>.sig`` / ``.att`` tags point
at signature manifests shaped like cosign v2's (a simple-signing / DSSE layer, a config whose
``created`` is year 1). Uploads go through :class:`pipeline.tools.registry.Registry`.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.tools.registry import OCI_INDEX, OCI_MANIFEST, Registry, digest_of

CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"


def _json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Pushed:
    digest: str
    body: bytes
    media_type: str
    platforms: dict[str, str] = field(default_factory=dict)   # index: platform -> manifest digest


class ImageGen:
    """Pushes synthetic images into ``repo`` of ``client`` (thread-safe: blobs are uploaded once)."""

    def __init__(self, client: Registry, repo: str) -> None:
        self.client = client
        self.repo = repo
        self._blobs: set[str] = set()
        self._lock = threading.Lock()
        self.layer = self.blob(secrets.token_bytes(64))

    def blob(self, data: bytes) -> dict[str, object]:
        digest = digest_of(data)
        with self._lock:
            known = digest in self._blobs
        if not known:
            if not self.client.blob_exists(self.repo, digest):
                self.client.blob_upload(self.repo, digest, data, len(data))
            with self._lock:
                self._blobs.add(digest)
        return {"digest": digest, "size": len(data)}

    def manifest(self, *, created: datetime | str | None, platform: str = "linux/amd64", marker: str = "",
                 annotations: Mapping[str, str] | None = None) -> Pushed:
        os_, arch = platform.split("/")[:2]
        config: dict[str, object] = {"architecture": arch, "os": os_, "rootfs": {"type": "layers", "diff_ids": [
            self.layer["digest"]]}, "config": {"Labels": {"marker": marker or secrets.token_hex(8)}}}
        if created is not None:
            config["created"] = created if isinstance(created, str) else created.isoformat().replace("+00:00", "Z")
        cfg = self.blob(_json(config))
        m: dict[str, object] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                "config": {"mediaType": CONFIG, **cfg}, "layers": [{"mediaType": LAYER, **self.layer}]}
        if annotations:
            m["annotations"] = dict(annotations)
        body = _json(m)
        digest = self.client.manifest_put(self.repo, digest_of(body), body, OCI_MANIFEST)
        return Pushed(digest, body, OCI_MANIFEST, {platform: digest})

    def index(self, children: Sequence[Pushed], annotations: Mapping[str, str] | None = None) -> Pushed:
        entries = []
        platforms: dict[str, str] = {}
        for child in children:
            (platform, digest), = child.platforms.items()
            os_, arch = platform.split("/")[:2]
            entries.append({"mediaType": child.media_type, "digest": digest, "size": len(child.body),
                            "platform": {"architecture": arch, "os": os_}})
            platforms[platform] = digest
        m: dict[str, object] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        if annotations:
            m["annotations"] = dict(annotations)
        body = _json(m)
        digest = self.client.manifest_put(self.repo, digest_of(body), body, OCI_INDEX)
        return Pushed(digest, body, OCI_INDEX, platforms)

    def multi(self, *, created: datetime | str | None, platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
              marker: str = "") -> Pushed:
        marker = marker or secrets.token_hex(8)
        return self.index([self.manifest(created=created, platform=p, marker=marker) for p in platforms])

    def tag(self, image: Pushed, *tags: str) -> None:
        for t in tags:
            self.client.manifest_put(self.repo, t, image.body, image.media_type)

    def _attachment(self, subject: str, suffix: str, layer_media: str, payload: bytes,
                    annotations: Mapping[str, str]) -> Pushed:
        layer = self.blob(payload)
        config = self.blob(_json({"architecture": "", "os": "", "created": "0001-01-01T00:00:00Z",
                                  "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}, "config": {}}))
        m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": CONFIG, **config},
             "layers": [{"mediaType": layer_media, **layer, "annotations": dict(annotations)}]}
        body = _json(m)
        tag = subject.replace(":", "-", 1) + suffix
        digest = self.client.manifest_put(self.repo, tag, body, OCI_MANIFEST)
        return Pushed(digest, body, OCI_MANIFEST)

    def signature(self, subject: str) -> Pushed:
        """A cosign v2 style ``sha256-<hex>.sig`` (not a valid signature: the shape is what counts here)."""
        payload = _json({"critical": {"identity": {"docker-reference": self.repo},
                                      "image": {"docker-manifest-digest": subject},
                                      "type": "cosign container image signature"}, "optional": None})
        return self._attachment(subject, ".sig", SIMPLE_SIGNING, payload,
                                {"dev.cosignproject.cosign/signature":
                                 base64.b64encode(secrets.token_bytes(64)).decode()})

    def attestation(self, subject: str, predicate_type: str = "https://cyclonedx.org/bom") -> Pushed:
        statement = _json({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": predicate_type,
                           "subject": [{"digest": {"sha256": subject.split(":", 1)[1]}}], "predicate": {}})
        envelope = _json({"payloadType": "application/vnd.in-toto+json",
                          "payload": base64.b64encode(statement).decode(), "signatures": []})
        return self._attachment(subject, ".att", DSSE, envelope, {"predicateType": predicate_type})

    def bundle(self, subject: Pushed,
               predicate_type: str = "https://sigstore.dev/cosign/sign/v1") -> tuple[Pushed, Pushed]:
        """A cosign v3 style Sigstore bundle referrer (untagged, with ``subject``) and the OCI referrers
        fallback index tagged ``sha256-<hex>`` that lists it (registries without the referrers API)."""
        bundle_type = "application/vnd.dev.sigstore.bundle.v0.3+json"
        empty = self.blob(b"{}")
        layer = self.blob(_json({"mediaType": bundle_type, "nonce": secrets.token_hex(8)}))
        m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": bundle_type,
             "config": {"mediaType": "application/vnd.oci.empty.v1+json", **empty},
             "layers": [{"mediaType": bundle_type, **layer}],
             "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": len(subject.body)},
             "annotations": {"dev.sigstore.bundle.predicateType": predicate_type}}
        body = _json(m)
        ref = Pushed(self.client.manifest_put(self.repo, digest_of(body), body, OCI_MANIFEST), body, OCI_MANIFEST)
        idx = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": ref.digest, "size": len(body), "artifactType": bundle_type,
             "annotations": {"dev.sigstore.bundle.predicateType": predicate_type}}]}
        ibody = _json(idx)
        tag = subject.digest.replace(":", "-", 1)
        fallback = Pushed(self.client.manifest_put(self.repo, tag, ibody, OCI_INDEX), ibody, OCI_INDEX)
        return ref, fallback
