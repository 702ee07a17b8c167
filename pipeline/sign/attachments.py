"""What cosign left in a registry for one digest: listing, counting, the idempotency decision, copying along.

Two on-registry formats exist (specs/cosign.md §0):

* legacy (cosign v2): tag ``sha256-<hex>.sig`` — one manifest, one simple-signing layer per
  signature — and ``sha256-<hex>.att`` — one DSSE layer per attestation, annotated ``predicateType``;
* bundles (cosign v3): OCI 1.1 referrers (``GET /v2/<repo>/referrers/<digest>``, or the fallback
  index tagged ``sha256-<hex>`` on registries without that API), each annotated
  ``dev.sigstore.bundle.predicateType`` (``https://sigstore.dev/cosign/sign/v1`` for a signature).

**Idempotency** (design invariant 4: no second signature by the same key). cosign v2 itself skips
a signature whose payload and key match an existing layer, but it appends every attestation (the
SBOM has a fresh serial number and time each run), and cosign v3 appends a new referrer every time.
So the sign stage decides first, per digest and kind: :func:`decide` says ``sign`` when the listing
holds nothing of that kind (no cosign call needed), ``check`` when something is there (then
``cosign verify`` / ``verify-attestation`` with *our* key says whether one of them is ours: ``skip``
if so, ``sign`` if they all belong to other keys).

cosign does not bind the repository name (the payload's ``docker-reference`` is not checked,
specs/cosign.md §1.4/§6.1), so artifacts copied next to the same digest elsewhere by another tool
still verify, and the sign stage recognises such copies of our signatures as its own and adds none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.tools.cosign import PREDICATE_TYPES, SIGN_PREDICATE_TYPE
from pipeline.tools.registry import Registry, is_digest

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
BUNDLE_PREDICATE = "dev.sigstore.bundle.predicateType"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
SIGNATURE = "signature"  # the kind of a plain image signature (vs. an attestation's predicate type)
SUFFIXES = ("sig", "att", "sbom")


def _hex(digest: str) -> str:
    if not is_digest(digest):
        raise ValueError(f"{digest}: not a digest")
    return digest.replace(":", "-", 1)


def signature_tag(digest: str) -> str:
    """``sha256:abc…`` → ``sha256-abc….sig`` (specs/cosign.md §1.1)."""
    return f"{_hex(digest)}.sig"


def attestation_tag(digest: str) -> str:
    return f"{_hex(digest)}.att"


def referrers_tag(digest: str) -> str:
    """The OCI referrers fallback tag (no suffix) where registries lack the referrers API."""
    return _hex(digest)


def is_attachment_tag(tag: str) -> bool:
    """``sha256-<hex>``, ``.sig``, ``.att``, ``.sbom``: cosign's tags, never images (prune must keep them)."""
    base, _, suffix = tag.partition(".")
    return base.startswith("sha256-") and len(base) == 71 and suffix in ("", *SUFFIXES)


def predicate_type(kind: str) -> str:
    """``cyclonedx`` → ``https://cyclonedx.org/bom``; a URI stays itself; ``signature`` → v3's sign predicate."""
    if kind == SIGNATURE:
        return SIGN_PREDICATE_TYPE
    return PREDICATE_TYPES.get(kind, kind)


# --------------------------------------------------------------------------- parsing (pure)


@dataclass(frozen=True)
class Listing:
    """Signatures and attestations a registry holds for one digest (both formats)."""

    digest: str
    signatures: int = 0                                        # simple-signing layers in .sig
    attestations: Mapping[str, int] = field(default_factory=dict)  # predicate type -> DSSE layers in .att
    bundles: Mapping[str, int] = field(default_factory=dict)       # predicate type -> bundle referrers
    sig_manifest: str | None = None                           # digest of the .sig manifest (when present)
    att_manifest: str | None = None

    def count(self, kind: str) -> int:
        """How many artifacts of ``kind`` (``signature`` or a predicate type name/URI), either format."""
        uri = predicate_type(kind)
        legacy = self.signatures if kind == SIGNATURE else self.attestations.get(uri, 0)
        return legacy + self.bundles.get(uri, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "signatures": self.signatures, "attestations": dict(self.attestations),
                "bundles": dict(self.bundles)}


def parse_signature_manifest(body: bytes | str | Mapping[str, Any]) -> int:
    """Simple-signing layers of a ``.sig`` manifest (one per signature)."""
    m = _json(body)
    return sum(1 for layer in m.get("layers") or [] if layer.get("mediaType") == SIMPLE_SIGNING)


def parse_attestation_manifest(body: bytes | str | Mapping[str, Any]) -> dict[str, int]:
    """DSSE layers of an ``.att`` manifest by their ``predicateType`` annotation."""
    m = _json(body)
    out: dict[str, int] = {}
    for layer in m.get("layers") or []:
        if layer.get("mediaType") != DSSE:
            continue
        pt = (layer.get("annotations") or {}).get("predicateType", "")
        out[pt] = out.get(pt, 0) + 1
    return out


#: reads a manifest by digest (None when it is not there): how a referrers entry that does not describe
#: itself is looked up
Lookup = Callable[[str], "Mapping[str, Any] | None"]


def bundle_entries(body: bytes | str | Mapping[str, Any], lookup: Lookup | None = None) -> list[dict[str, Any]]:
    """The Sigstore bundles of a referrers list (API answer or fallback index), each entry carrying the
    bundle's annotations. An entry should describe itself (``artifactType`` and annotations copied from
    its manifest, as the OCI spec asks and our writer does); cosign 3.1.1 writes its fallback index with
    the empty config's media type as ``artifactType`` and no annotations, so with ``lookup`` such an
    entry is judged by its manifest (without, it is passed over)."""
    out = []
    for entry in _json(body).get("manifests") or []:
        annotations = dict(entry.get("annotations") or {})
        kind = str(entry.get("artifactType") or "")
        if not (kind.startswith(BUNDLE_PREFIX) and BUNDLE_PREDICATE in annotations):
            # only what may be a bundle that does not say so is looked up: another tool's referrer that
            # describes itself (an SBOM, a Notation signature) costs no request
            unsure = kind in ("", EMPTY_CONFIG) or kind.startswith(BUNDLE_PREFIX)
            manifest = (lookup(str(entry["digest"])) if unsure and lookup is not None and entry.get("digest")
                        else None)
            if manifest is None or not _is_bundle_manifest(manifest):
                continue
            annotations = dict(manifest.get("annotations") or {})
        out.append({**entry, "annotations": annotations})
    return out


def _is_bundle_manifest(m: Mapping[str, Any]) -> bool:
    return (str(m.get("artifactType", "")).startswith(BUNDLE_PREFIX)
            or any(str(layer.get("mediaType", "")).startswith(BUNDLE_PREFIX) for layer in m.get("layers") or []))


def parse_referrers(body: bytes | str | Mapping[str, Any], lookup: Lookup | None = None) -> dict[str, int]:
    """Sigstore bundles in a referrers list by predicate type (see :func:`bundle_entries`)."""
    out: dict[str, int] = {}
    for entry in bundle_entries(body, lookup):
        pt = entry["annotations"].get(BUNDLE_PREDICATE, "")
        out[pt] = out.get(pt, 0) + 1
    return out


def manifest_lookup(client: Registry, repo: str) -> Lookup:
    """A :data:`Lookup` through ``client`` (every request retried by it)."""
    def lookup(digest: str) -> Mapping[str, Any] | None:
        found = client.manifest_find(repo, digest)
        return _json(found[0]) if found else None
    return lookup


def _json(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    data = json.loads(body)
    return data if isinstance(data, dict) else {}


def decide(listing: Listing, kind: str, ours: bool | None = None) -> str:
    """``sign`` | ``check`` | ``skip`` for one digest and kind.

    Nothing of that kind there → ``sign``. Something there and we do not know whose → ``check``
    (verify with our key, then call again with ``ours``). One of them verifies with our key →
    ``skip``: a re-release adds no second signature or attestation by the same key.
    """
    if listing.count(kind) == 0:
        return "sign"
    if ours is None:
        return "check"
    return "skip" if ours else "sign"


# --------------------------------------------------------------------------- registry reads and copies


def _get(client: Registry, repo: str, tag: str) -> tuple[bytes, str] | None:
    found = client.manifest_find(repo, tag)
    return (found[0], found[2]) if found else None


def referrers_list(client: Registry, repo: str, digest: str) -> bytes | None:
    """The referrers of ``digest``: the API's answer, else the fallback index (None when neither is there)."""
    api = client.referrers(repo, digest)
    if api is not None:
        return api
    fallback = _get(client, repo, referrers_tag(digest))
    return fallback[0] if fallback is not None else None


def listing(client: Registry, repo: str, digest: str) -> Listing:
    """Read what cosign stored for ``digest`` in ``repo`` (legacy tags, referrers API, fallback tag)."""
    sig = _get(client, repo, signature_tag(digest))
    att = _get(client, repo, attestation_tag(digest))
    found = referrers_list(client, repo, digest)
    bundles = parse_referrers(found, manifest_lookup(client, repo)) if found is not None else {}
    return Listing(digest,
                   signatures=parse_signature_manifest(sig[0]) if sig else 0,
                   attestations=parse_attestation_manifest(att[0]) if att else {},
                   bundles=bundles,
                   sig_manifest=sig[1] if sig else None,
                   att_manifest=att[1] if att else None)


