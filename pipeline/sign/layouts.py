"""What cosign verifies, fetched by the project's registry client into cosign ``--local-image`` layouts.

cosign verifies a local OCI layout without asking any registry (specs/cosign-offline.md §7): the
client reads the signed manifest and its artifacts (every request retried on its own) and lays
them out the way ``cosign save`` does:

* legacy artifacts: ``index.json`` names the subject (``kind`` annotation
  ``dev.cosignproject.cosign/image``, or ``…/imageIndex`` for an index), the ``.sig`` manifest
  (``…/sigs``) or the ``.att`` manifest (``…/atts``); their blobs below;
* bundles (cosign v3): ``index.json`` names only the subject (``…/image``); the referrer
  manifests, the empty config and the bundles are plain blobs (cosign 3 scans the blobs for
  manifests whose ``subject`` is the image).

One layout per kind of artifact: a signature layout holds only signatures and an attestation
layout only attestations of that predicate type, so an SBOM bundle never passes for a
signature (cosign 3's ``verify`` counts any bundle) and a legacy ``.sig`` is verified even when
bundles exist (cosign 3 stops looking at ``.sig`` once it finds one).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.sign.attachments import (BUNDLE_PREDICATE, SIGNATURE, attestation_tag, bundle_entries, manifest_lookup,
                                       predicate_type, referrers_list, signature_tag)
from pipeline.tools import cosign
from pipeline.tools.oci import INDEX_TYPES, Descriptor, Layout, referenced_descriptors
from pipeline.tools.registry import Registry

KIND = "kind"
IMAGE = "dev.cosignproject.cosign/image"
IMAGE_INDEX = "dev.cosignproject.cosign/imageIndex"
SIGS = "dev.cosignproject.cosign/sigs"
ATTS = "dev.cosignproject.cosign/atts"


@dataclass(frozen=True)
class Layouts:
    """The layouts made for one subject and kind; ``None`` where the registry holds nothing of it."""

    legacy: Path | None
    bundles: Path | None
    legacy_count: int = 0
    bundle_count: int = 0

    @property
    def empty(self) -> bool:
        return self.legacy is None and self.bundles is None



def _copy_tree(client: Registry, repo: str, digest: str, body: bytes, layout: Layout) -> None:
    """A small manifest and its blobs (artifacts: configs, payloads, envelopes, bundles) into the layout."""
    layout.put(body, digest)
    children, blobs = referenced_descriptors(json.loads(body))
    for blob in blobs:
        if not layout.has(blob.digest):
            layout.put(client.blob_get(repo, blob.digest), blob.digest)
    for child in children:
        found = client.manifest_find(repo, child.digest)
        if found is not None:
            _copy_tree(client, repo, child.digest, found[0], layout)


def _subject_entry(subject: Descriptor, kind: str) -> dict[str, Any]:
    return {**subject.to_dict(), "annotations": {KIND: kind}}


def referrer_entries(client: Registry, repo: str, digest: str) -> list[dict[str, Any]]:
    """The Sigstore bundles referring to ``digest`` (API, else the fallback index), each with its
    predicate type (:func:`~pipeline.sign.attachments.bundle_entries`)."""
    found = referrers_list(client, repo, digest)
    return bundle_entries(found, manifest_lookup(client, repo)) if found is not None else []


def fetch(client: Registry, repo: str, subject: Descriptor, subject_body: bytes, kind: str, dest: Path) -> Layouts:
    """Layouts under ``dest`` for verifying ``kind`` (``signature`` or a predicate type) of ``subject``."""
    legacy_dir = bundles_dir = None
    legacy_count = bundle_count = 0
    tag = signature_tag(subject.digest) if kind == SIGNATURE else attestation_tag(subject.digest)
    found = client.manifest_find(repo, tag)
    if found is not None:
        body, _, digest = found
        layers = json.loads(body).get("layers") or []
        if kind != SIGNATURE:
            uri = predicate_type(kind)
            layers = [x for x in layers if (x.get("annotations") or {}).get("predicateType") in (uri, None, "")]
        if layers:
            layout = Layout.create(dest / "legacy")
            layout.put(subject_body, subject.digest)
            _copy_tree(client, repo, digest, body, layout)
            art_kind = SIGS if kind == SIGNATURE else ATTS
            subject_kind = IMAGE_INDEX if subject.media_type in INDEX_TYPES else IMAGE
            layout.write_index([_subject_entry(subject, subject_kind),
                                {"mediaType": json.loads(body).get("mediaType", ""), "digest": digest,
                                 "size": len(body), "annotations": {KIND: art_kind}}])
            legacy_dir, legacy_count = layout.path, len(layers)
    uri = predicate_type(kind)
    wanted = [e for e in referrer_entries(client, repo, subject.digest)
              if (e.get("annotations") or {}).get(BUNDLE_PREDICATE) == uri]
    if wanted:
        layout = Layout.create(dest / "bundles")
        layout.put(subject_body, subject.digest)
        for entry in wanted:
            got = client.manifest_find(repo, entry["digest"])
            if got is not None:
                _copy_tree(client, repo, entry["digest"], got[0], layout)
                bundle_count += 1
        layout.write_index([_subject_entry(subject, IMAGE)])
        bundles_dir = layout.path if bundle_count else None
    return Layouts(legacy_dir, bundles_dir, legacy_count, bundle_count)


def verify(runner: cosign.Cosign, verifying: cosign.Verifying, found: Layouts, kind: str,
           what: str) -> cosign.Verified:
    """cosign's verdict on the layouts of one subject: ours when any of them verifies."""
    if found.empty:
        return cosign.Verified(False, (), "no signatures found" if kind == SIGNATURE
                               else f"no {kind} attestations found")
    predicate = None if kind == SIGNATURE else kind
    reasons = []
    for path in (found.legacy, found.bundles):
        if path is None:
            continue
        if path == found.bundles and verifying.major < 3:
            reasons.append("only cosign 3 verifies Sigstore bundles (referrers); cosign 2 is installed")
            continue
        result = runner.verify_local(str(path), verifying, predicate_type=predicate, what=what)
        if result.ok:
            return result
        reasons.append(result.reason)
    return cosign.Verified(False, (), "; ".join(r for r in reasons if r))


def check(client: Registry, repo: str, digest: str, kind: str, runner: cosign.Cosign, verifying: cosign.Verifying,
          workdir: Path, what: str) -> tuple[Layouts, cosign.Verified]:
    """``kind`` of ``repo@digest`` judged by cosign: fetched by our client into a fresh layout under
    ``workdir``, so cosign itself sends no request to any registry. The layout is removed before this
    returns: of the :class:`Layouts` only the counts are left to read."""
    body, media, _ = client.manifest_get(repo, digest)
    with tempfile.TemporaryDirectory(prefix="verify-", dir=workdir) as where:
        found = fetch(client, repo, Descriptor(media, digest, len(body)), body, kind, Path(where))
        return found, verify(runner, verifying, found, kind, what)
