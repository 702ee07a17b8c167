"""cosign's artifacts on a registry: tag names, counting both formats, the idempotency decision.

Listings are recorded from a real registry (cosign 2.5.0, .sig/.att tags); the v3 referrers
index is written from specs/cosign.md §2.2–2.3 (see tests/data/cosign/README.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.sign import attachments as a
from pipeline.tools.registry import NotFound, Registry

DATA = Path(__file__).resolve().parents[1] / "data" / "cosign"
DIGEST = "sha256:8887234bb15d6c25326ec220832d371a35a269bc61e54099c614336600530e1b"
PLATFORM = "sha256:1fd37097b965196dcc8886091580f065e506f258e37a8c375f5a41f65f9646d7"


def rec(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_tag_names():
    hexpart = DIGEST.split(":")[1]
    assert a.signature_tag(DIGEST) == f"sha256-{hexpart}.sig"
    assert a.attestation_tag(DIGEST) == f"sha256-{hexpart}.att"
    assert a.referrers_tag(DIGEST) == f"sha256-{hexpart}"
    with pytest.raises(ValueError):
        a.signature_tag("latest")


def test_recorded_tag_listing_tells_attachments_from_images():
    tags = json.loads(rec("tags_list.json"))["tags"]
    assert [t for t in tags if a.is_attachment_tag(t)] == [a.signature_tag(DIGEST), a.attestation_tag(PLATFORM)]
    assert not a.is_attachment_tag("v1") and not a.is_attachment_tag("sha256-abc.sig")
    assert a.is_attachment_tag(a.referrers_tag(DIGEST)) and not a.is_attachment_tag(a.referrers_tag(DIGEST) + ".x")


def test_recorded_legacy_manifests_are_counted():
    assert a.parse_signature_manifest(rec("sig_manifest_1_layer.json")) == 1
    assert a.parse_attestation_manifest(rec("att_manifest_2_cyclonedx.json")) == {"https://cyclonedx.org/bom": 2}
    assert a.parse_signature_manifest(rec("att_manifest_2_cyclonedx.json")) == 0   # DSSE layers are not signatures


def test_v3_referrers_are_counted_by_predicate_type():
    counts = a.parse_referrers(rec("referrers_fallback_index_v3.json"))
    assert counts == {"https://sigstore.dev/cosign/sign/v1": 1, "https://cyclonedx.org/bom": 1}  # the 3rd is not sigstore


def test_a_cosign_3_fallback_index_that_does_not_describe_its_bundles_is_read_through_its_manifests():
    # recorded from cosign 3.1.1 (Debian unstable) signing on registry 2.8, which has no referrers API: the
    # fallback entry says artifactType application/vnd.oci.empty.v1+json and carries no annotations
    index = json.loads(rec("referrers_fallback_index_cosign3.1.1.json"))
    manifest = rec("referrer_manifest_cosign3.1.1.json")
    (entry,) = index["manifests"]
    assert "annotations" not in entry and not entry["artifactType"].startswith(a.BUNDLE_PREFIX)
    asked: list[str] = []

    def lookup(digest: str):
        asked.append(digest)
        return json.loads(manifest) if digest == entry["digest"] else None

    assert a.parse_referrers(index) == {}                       # what inventory and the UI saw: "unsigned"
    assert a.parse_referrers(index, lookup) == {"https://sigstore.dev/cosign/sign/v1": 1}
    assert asked == [entry["digest"]]
    # entries that describe themselves (sigstore's or another tool's) are not looked up
    asked.clear()
    assert a.parse_referrers(rec("referrers_fallback_index_v3.json"), lookup) == {
        "https://sigstore.dev/cosign/sign/v1": 1, "https://cyclonedx.org/bom": 1}
    assert asked == []


def test_count_adds_both_formats():
    listing = a.Listing(DIGEST, signatures=1, attestations={"https://cyclonedx.org/bom": 2},
                        bundles={"https://sigstore.dev/cosign/sign/v1": 1, "https://cyclonedx.org/bom": 1})
    assert listing.count("signature") == 2
    assert listing.count("cyclonedx") == 3
    assert listing.count("https://cyclonedx.org/bom") == 3
    assert listing.count("vuln") == 0


@pytest.mark.parametrize("listing,kind,ours,decision", [
    (a.Listing(DIGEST), "signature", None, "sign"),                       # nothing there: no cosign call needed
    (a.Listing(DIGEST), "cyclonedx", None, "sign"),
    (a.Listing(DIGEST, signatures=1), "signature", None, "check"),         # something there: whose?
    (a.Listing(DIGEST, signatures=1), "signature", True, "skip"),          # ours: no second signature
    (a.Listing(DIGEST, signatures=3), "signature", False, "sign"),         # others' keys only: add ours
    (a.Listing(DIGEST, signatures=1), "cyclonedx", None, "sign"),          # a signature is no attestation
    (a.Listing(DIGEST, attestations={"https://cyclonedx.org/bom": 2}), "cyclonedx", True, "skip"),
    (a.Listing(DIGEST, attestations={"https://cosign.sigstore.dev/attestation/vuln/v1": 1}), "cyclonedx", None,
     "sign"),
    (a.Listing(DIGEST, bundles={"https://sigstore.dev/cosign/sign/v1": 1}), "signature", None, "check"),
])
def test_decide(listing, kind, ours, decision):
    assert a.decide(listing, kind, ours) == decision


# --------------------------------------------------------------------------- reading a registry (fake)


class FakeRegistry:
    """Just the verbs attachments uses, over a dict of tag/digest -> manifest bytes."""

    name = "fake"

    def __init__(self, manifests: dict[str, bytes], referrers_api: bytes | None = None) -> None:
        self.manifests = dict(manifests)
        self.referrers_api = referrers_api
        self.puts: list[tuple[str, str]] = []

    def manifest_get(self, repo, ref):
        if ref not in self.manifests:
            raise NotFound(self.name, f"{repo}:{ref} not found", status=404)
        body = self.manifests[ref]
        return body, json.loads(body).get("mediaType", ""), "sha256:" + hashlib.sha256(body).hexdigest()

    def manifest_head(self, repo, ref):
        return object() if ref in self.manifests else None

    manifest_find = Registry.manifest_find      # the real "None when absent", over this fake's manifest_get

    def manifest_put(self, repo, ref, body, media):
        self.manifests[ref] = body
        self.puts.append((ref, media))
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def referrers(self, repo, digest):
        return self.referrers_api          # None: the registry has no referrers API


def test_listing_reads_legacy_tags_and_the_fallback_index():
    reg = FakeRegistry({a.signature_tag(DIGEST): rec("sig_manifest_1_layer.json"),
                        a.referrers_tag(DIGEST): rec("referrers_fallback_index_v3.json")})
    found = a.listing(reg, "app", DIGEST)
    assert (found.signatures, found.count("signature"), found.count("cyclonedx")) == (1, 2, 1)
    assert found.sig_manifest and found.att_manifest is None


def test_listing_prefers_the_referrers_api():
    reg = FakeRegistry({}, referrers_api=rec("referrers_fallback_index_v3.json"))
    assert a.listing(reg, "app", DIGEST).bundles == {"https://sigstore.dev/cosign/sign/v1": 1,
                                                      "https://cyclonedx.org/bom": 1}


def test_listing_of_an_unsigned_digest_is_empty():
    found = a.listing(FakeRegistry({}), "app", PLATFORM)
    assert found.count("signature") == 0 and a.decide(found, "signature") == "sign"
    assert found.to_dict() == {"digest": PLATFORM, "signatures": 0, "attestations": {}, "bundles": {}}
