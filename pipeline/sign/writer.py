"""Writing cosign's artifacts with the project's registry client, in the format cosign itself writes.

cosign makes only the signature (offline, :mod:`pipeline.tools.cosign`); this module builds the
payloads it signs and puts the result into the registry, every request retried on its own under
the one policy. The layouts are cosign's own, byte for byte where cosign is deterministic
(specs/cosign-offline.md §2–§5), so cosign 2 and 3 verify them and other tools find them:

* **legacy (cosign v2)**: a manifest tagged ``sha256-<hex>.sig`` with one simple-signing layer
  per signature (annotation ``dev.cosignproject.cosign/signature``), and ``sha256-<hex>.att`` with
  one DSSE-envelope layer per attestation (annotation ``predicateType``); each config the
  zero-time image config cosign derives from the layers. A new artifact is appended to the
  manifest already there (read, append, put: the same race cosign has).
* **bundles (cosign v3)**: a referrer manifest per artifact (empty config, one Sigstore bundle
  layer, annotations ``dev.sigstore.bundle.content`` / ``.predicateType`` /
  ``org.opencontainers.image.created``, ``subject`` = the signed manifest), put by digest; where
  the registry has no referrers API, an entry in the fallback index tagged ``sha256-<hex>``.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

from pipeline.sign.attachments import (BUNDLE_PREDICATE, DSSE, SIMPLE_SIGNING, attestation_tag, referrers_tag,
                                       signature_tag)
from pipeline.tools.oci import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, Descriptor, digest_of
from pipeline.tools.registry import Registry

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY_JSON = b"{}"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
ZERO_TIME = "0001-01-01T00:00:00Z"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
INTOTO_PAYLOAD = "application/vnd.in-toto+json"


def _compact(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------- what cosign signs (pure)


def simple_signing_payload(docker_reference: str, digest: str) -> bytes:
    """The payload of a legacy signature, as cosign v2 writes it (Go's field order, ``optional: null``)."""
    return _compact({"critical": {"identity": {"docker-reference": docker_reference},
                                  "image": {"docker-manifest-digest": digest},
                                  "type": "cosign container image signature"},
                     "optional": None})


def sign_statement(digest: str) -> bytes:
    """The in-toto statement cosign v3 signs for an image signature (specs/cosign.md §2.1)."""
    algorithm, _, hexpart = digest.partition(":")
    return _compact({"_type": STATEMENT_V1, "subject": [{"digest": {algorithm: hexpart}, "annotations": {}}],
                     "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}})


def legacy_config(diff_ids: list[str]) -> bytes:
    """The config of a ``.sig``/``.att`` manifest: cosign's empty image plus one zero-time history entry
    and one diff id per layer (deterministic)."""
    return _compact({"architecture": "", "created": ZERO_TIME, "history": [{"created": ZERO_TIME}] * len(diff_ids),
                     "os": "", "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}})


def envelope_predicate_type(envelope: bytes) -> str:
    """The predicate type inside a DSSE envelope's statement (cosign annotates the layer with it)."""
    doc = json.loads(envelope)
    payload = doc.get("payload", "")
    statement = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    return str(statement.get("predicateType", ""))


def bundle_predicate_type(bundle: bytes) -> str:
    doc = json.loads(bundle)
    payload = (doc.get("dsseEnvelope") or {}).get("payload", "")
    if not payload:
        raise ValueError("the bundle holds no DSSE envelope")
    statement = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    return str(statement.get("predicateType", ""))


# --------------------------------------------------------------------------- legacy (.sig / .att)


def _get(client: Registry, repo: str, reference: str) -> dict[str, Any] | None:
    found = client.manifest_find(repo, reference)
    data = json.loads(found[0]) if found else None
    return data if isinstance(data, dict) else None


def _append_layer(client: Registry, repo: str, tag: str, blob: bytes, media_type: str,
                  annotations: dict[str, str]) -> str:
    """Append one layer to the legacy manifest ``tag`` (created when absent); its digest. An identical
    layer already there (a retry after a lost answer) is not added twice."""
    current = _get(client, repo, tag)
    layers: list[dict[str, Any]] = list((current or {}).get("layers") or [])
    layer = client.put_bytes(repo, blob)
    entry = {"mediaType": media_type, "size": layer.size, "digest": layer.digest, "annotations": annotations}
    if any(x.get("digest") == layer.digest and (x.get("annotations") or {}) == annotations for x in layers):
        body, _, digest = client.manifest_get(repo, tag)
        return digest
    layers.append(entry)
    config = legacy_config([x["digest"] for x in layers])
    cdesc = client.put_bytes(repo, config)
    manifest = _compact({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                         "config": {"mediaType": CONFIG_TYPE, "size": cdesc.size, "digest": cdesc.digest},
                         "layers": layers})
    return client.manifest_put(repo, tag, manifest, OCI_MANIFEST)


def write_legacy_signature(client: Registry, repo: str, digest: str, payload: bytes, signature_b64: str,
                           extra: dict[str, str] | None = None) -> str:
    """Add a signature (a simple-signing payload and cosign's signature of it) to ``sha256-<hex>.sig``."""
    annotations = {SIGNATURE_ANNOTATION: signature_b64, **(extra or {})}
    return _append_layer(client, repo, signature_tag(digest), payload, SIMPLE_SIGNING, annotations)


def write_legacy_attestation(client: Registry, repo: str, digest: str, envelope: bytes) -> str:
    """Add a DSSE envelope (from ``cosign attest --no-upload``) to ``sha256-<hex>.att``."""
    annotations = {SIGNATURE_ANNOTATION: "", "predicateType": envelope_predicate_type(envelope)}
    return _append_layer(client, repo, attestation_tag(digest), envelope, DSSE, annotations)


# --------------------------------------------------------------------------- bundles (referrers)


def referrer_manifest(subject: Descriptor, bundle: Descriptor, predicate_type: str, created: str) -> bytes:
    """The referrer manifest cosign v3 writes for one bundle, in its key order (specs/cosign-offline.md §4.1)."""
    return _compact({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_EMPTY, "size": len(EMPTY_JSON), "digest": digest_of(EMPTY_JSON),
                   "artifactType": BUNDLE_V03},
        "layers": [{"mediaType": BUNDLE_V03, "size": bundle.size, "digest": bundle.digest}],
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope", BUNDLE_PREDICATE: predicate_type,
                        "org.opencontainers.image.created": created},
        "subject": {"mediaType": subject.media_type, "size": subject.size, "digest": subject.digest},
        "artifactType": BUNDLE_V03})


def write_bundle(client: Registry, repo: str, subject: Descriptor, bundle: bytes, *,
                 created: datetime | None = None) -> str:
    """Put one Sigstore bundle as a referrer of ``subject``; list it in the fallback index where the
    registry has no referrers API. Returns the referrer manifest's digest."""
    predicate = bundle_predicate_type(bundle)
    client.put_bytes(repo, EMPTY_JSON)
    layer = client.put_bytes(repo, bundle)
    when = (created or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = referrer_manifest(subject, Descriptor(BUNDLE_V03, layer.digest, layer.size), predicate, when)
    digest = client.manifest_put(repo, digest_of(manifest), manifest, OCI_MANIFEST)
    if client.referrers(repo, subject.digest) is not None:
        return digest     # the registry keeps the referrers list itself
    tag = referrers_tag(subject.digest)
    index = _get(client, repo, tag) or {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    entries: list[dict[str, Any]] = list(index.get("manifests") or [])
    if not any(e.get("digest") == digest for e in entries):
        entries.append({"mediaType": OCI_MANIFEST, "size": len(manifest), "digest": digest, "artifactType": BUNDLE_V03,
                        "annotations": json.loads(manifest)["annotations"]})
        entries.sort(key=lambda e: str(e.get("digest")))
        body = _compact({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        client.manifest_put(repo, tag, body, OCI_INDEX)
    return digest
