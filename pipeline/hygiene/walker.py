"""Registry hygiene: repositories → images with push times → lifecycle plan → deletes.

``pipeline prune`` and ``pipeline inventory`` share this module:

* :class:`Walker` reads one repository over the OCI API (tags, one HEAD per tag with the full
  ``Accept`` list, one GET per distinct digest) and turns it into a :class:`Snapshot`: **images**
  (a digest with all its tags; an index with its platform manifests) and **attachments** (cosign's
  ``sha256-<hex>.sig/.att/.sbom`` tags, the OCI referrers fallback ``sha256-<hex>`` with the
  referrers it lists, tagged manifests with a ``subject``). Attachments are never images: they
  follow their subject.
* Push times: the OCI API has none (specs/lifecycle.md §4.2), so each image takes the first source
  in ``lifecycle.age_sources`` that knows it, and says which:

  ``release``     the release manifests this tool wrote (``released_at`` of the run that pushed the
                  digest to that registry and repository; the earliest when several did);
  ``registry``    the vendor's own API (ECR imagePushedAt, GHCR package version created_at, Docker Hub
                  tag_last_pushed, Harbor push_time);
  ``annotation``  the ``org.opencontainers.image.created`` annotation (build time: approximate);
  ``created``     the image config's ``created`` (build time: approximate; epoch, 1980 and year-1
                  values of reproducible builders and cosign are ignored).

  An image no source knows has no push time: it sorts as the newest and never expires by age.
* :func:`plan` applies the lifecycle policy (pure, ECR semantics) to a snapshot and works out
  what to delete, image by image: the image's digest, then the platform manifests of an expired
  index, then the attachments of both — never anything a kept image still references (a platform
  manifest shared with a kept index, the signatures of a kept image). Attachments whose subject is
  gone are deleted too (a prune interrupted between an image and its signature finishes the job).
* :func:`apply` first asks every registry whether it can delete at all; if one cannot, nothing is
  deleted anywhere. Deletes run image by image, oldest first, each under the retry policy;
  a failure stops that image's remaining deletes (never a signature without its image).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pipeline import log
from pipeline.errors import InfraError
from pipeline.hygiene import lifecycle
from pipeline.sign.attachments import SIMPLE_SIGNING, is_attachment_tag, parse_attestation_manifest, parse_referrers
from pipeline.tools.registry import INDEX_TYPES, NotFound, Registry, RegistryError, index_platforms, platform_name
from pipeline.times import parse_time
from pipeline.tools.vendors import VendorImage

CREATED_ANNOTATION = "org.opencontainers.image.created"
OLDEST_PLAUSIBLE = datetime(1990, 1, 1, tzinfo=timezone.utc)  # 1970 epoch, 1980 buildpacks, year-1 cosign
EXACT_SOURCES = ("release", "registry")
VULN_PREDICATE = "https://cosign.sigstore.dev/attestation/vuln/v1"


# --------------------------------------------------------------------------- release manifests


@dataclass
class ReleaseFacts:
    """What this tool's release manifests say about digests: when each was pushed where, scans, signatures."""

    pushed: dict[tuple[str, str, str], datetime] = field(default_factory=dict)  # (registry, repo, digest)
    scanned: dict[str, str] = field(default_factory=dict)                         # digest -> pass | fail
    signed: set[tuple[str, str]] = field(default_factory=set)                     # (registry, digest)
    #: (image digest, platform) -> the finding ids the release-time gate saw there (blocking or suppressed)
    seen: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def add(self, data: Mapping[str, Any], source: str = "") -> None:
        when = parse_time(data.get("released_at"))
        digest = data.get("digest")
        if source:
            self.files.append(source)
        if not digest:
            return
        platforms = list((data.get("platforms") or {}).values())
        places: list[tuple[str, str, list[str]]] = []
        cand = data.get("candidate") or {}
        if cand.get("registry") and cand.get("repository"):
            places.append((cand["registry"], cand["repository"], platforms))
        for reg in data.get("registries") or []:
            if reg.get("digest") == digest and reg.get("name") and reg.get("repository"):
                places.append((reg["name"], reg["repository"], list((reg.get("platforms") or {}).values())))
        if when is not None:
            for name, repo, plats in places:
                for d in (digest, *plats):
                    place = (name, repo, d)
                    if place not in self.pushed or when < self.pushed[place]:
                        self.pushed[place] = when
        outputs = data.get("outputs") or {}
        for key in ("scan", "scan_gate"):
            scan = outputs.get(key)
            if isinstance(scan, Mapping) and scan_counts(scan):
                for d in (scan["digest"], *platforms):
                    self.scanned[d] = str(scan["verdict"])
                for platform, result in (scan.get("platforms") or {}).items():
                    if isinstance(result, Mapping):
                        found = [*(result.get("blocking") or []), *(result.get("suppressed") or [])]
                        self.seen[(str(scan["digest"]), platform)] = {
                            str(b.get("id")) for b in found if isinstance(b, Mapping)}
        sign = outputs.get("sign")
        if isinstance(sign, Mapping):
            for item in sign.get("items") or []:
                if item.get("kind") == "signature" and item.get("registry"):
                    self.signed.add((item["registry"], str(sign.get("digest") or digest)))


def scan_counts(scan: Any) -> bool:
    """A release manifest's scan output that says something about vulnerabilities (not a secrets-only scan)."""
    return (isinstance(scan, Mapping) and bool(scan.get("digest")) and bool(scan.get("verdict"))
            and scan.get("vulnerabilities_scanned") is not False)


def load_release_facts(patterns: Sequence[str], base: Path | None = None) -> ReleaseFacts:
    """Read every release manifest the globs name (relative to ``base``); unreadable files are skipped."""
    facts = ReleaseFacts()
    seen: set[str] = set()
    for pattern in patterns:
        full = str((base or Path.cwd()) / pattern) if not Path(pattern).is_absolute() else pattern
        for path in sorted(glob.glob(full)):
            if path in seen:
                continue
            seen.add(path)
            try:
                data = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log.get().warning("release_manifest.unreadable", path=path)
                continue
            if isinstance(data, dict):
                facts.add(data, path)
    return facts


# --------------------------------------------------------------------------- snapshots


@dataclass
class Image:
    """One image: a manifest digest with every tag on it (an index with its platform manifests)."""

    digest: str
    media_type: str
    tags: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    platforms: dict[str, str] = field(default_factory=dict)   # platform -> manifest digest (index)
    annotations: dict[str, str] = field(default_factory=dict)
    config: str | None = None
    size: int = 0
    pushed_at: datetime | None = None
    age_source: str = "unknown"
    untagged: bool = False

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def approximate(self) -> bool:
        return self.age_source not in EXACT_SOURCES and self.age_source != "unknown"


@dataclass
class Attachment:
    """Something that follows a subject: a cosign tag, a referrers fallback index, a tagged referrer."""

    tag: str | None
    digest: str
    subject: str
    kind: str                        # sig | att | sbom | referrers | referrer
    referrers: tuple[str, ...] = ()  # referrers fallback index: the manifests it lists
    subject_present: bool | None = None
    signatures: int = 0              # simple-signing layers (.sig)
    predicates: dict[str, int] = field(default_factory=dict)  # .att layers / bundles by predicate type


UNTAGGED_UNLISTED = ("untagged manifests cannot be listed over the OCI API: untagged rules see only what a vendor"
                     " API lists")


@dataclass
class Snapshot:
    registry: str
    repository: str
    vendor: str
    images: dict[str, Image] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tag_count: int = 0

    def attachments_of(self, digests: Iterable[str]) -> list[Attachment]:
        wanted = set(digests)
        return [a for a in self.attachments if a.subject in wanted]


def subject_of(tag: str) -> tuple[str, str]:
    """``sha256-<hex>.sig`` → (``sha256:<hex>``, ``sig``); the fallback tag → (…, ``referrers``)."""
    base, _, suffix = tag.partition(".")
    return base.replace("-", ":", 1), suffix or "referrers"


def plausible(when: datetime | None, now: datetime) -> datetime | None:
    if when is None or when < OLDEST_PLAUSIBLE or when > now + timedelta(days=1):
        return None
    return when


class Walker:
    """Reads repositories of one registry into snapshots (HEADs and GETs in parallel)."""

    def __init__(self, client: Registry, *, registry: str, vendor: Any = None, facts: ReleaseFacts | None = None,
                 age_sources: Sequence[str] = ("release", "registry", "annotation", "created"),
                 now: datetime | None = None, concurrency: int = 16, detail: bool = False) -> None:
        self.client = client
        self.registry = registry
        self.vendor = vendor
        self.facts = facts or ReleaseFacts()
        self.sources = tuple(age_sources)
        self.now = now or datetime.now(timezone.utc)
        self.concurrency = max(1, concurrency)
        self.detail = detail   # inventory: configs of single manifests, attachment contents

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _get(self, repo: str, ref: str) -> dict[str, Any] | None:
        try:
            body, _media, _digest = self.client.manifest_get(repo, ref)
        except NotFound:
            return None
        data: dict[str, Any] = json.loads(body)   # the client checked it is a JSON object
        return data

    def _fetch(self, repo: str, ref: str) -> tuple[str, str, dict[str, Any]] | None:
        try:
            body, media_type, digest = self.client.manifest_get(repo, ref)
        except NotFound:
            return None
        return digest, media_type, json.loads(body)

    def walk(self, repo: str) -> Snapshot:
        vendor_kind = getattr(self.vendor, "kind", "distribution")
        snap = Snapshot(self.registry, repo, vendor_kind)
        tags = self.client.tags(repo)
        snap.tag_count = len(tags)
        # image tags: one GET each (body and digest at once; the digest is computed from the bytes);
        # attachment tags: a HEAD is enough unless their content is wanted
        fetched = self._map(lambda t: (t, self._fetch(repo, t)), [t for t in tags if not is_attachment_tag(t)])
        by_digest: dict[str, list[str]] = {}
        media: dict[str, str] = {}
        manifests: dict[str, dict[str, Any]] = {}
        for tag, got in fetched:
            if got is None:   # deleted between the listing and the GET
                continue
            digest, media_type, m = got
            by_digest.setdefault(digest, []).append(tag)
            media[digest], manifests[digest] = media_type, m
        heads = self._map(lambda t: (t, self.client.manifest_head(repo, t)), [t for t in tags if is_attachment_tag(t)])
        attachment_tags = [(tag, desc.digest) for tag, desc in heads if desc is not None]
        for digest, tags_of in by_digest.items():
            m = manifests.get(digest)
            if m is None:
                continue
            if m.get("subject"):   # a tagged referrer follows its subject
                for tag in tags_of:
                    snap.attachments.append(Attachment(tag, digest, m["subject"]["digest"], "referrer"))
                continue
            kind = media.get(digest) or m.get("mediaType", "")
            snap.images[digest] = self._image(digest, kind, tuple(sorted(tags_of)), m)
        self._attachments(repo, snap, attachment_tags)
        vendor_times: dict[str, VendorImage] = {}
        if self.vendor is not None and ("registry" in self.sources or self.detail):
            vendor_times = self.vendor.push_times(repo)
            self._untagged(repo, snap, vendor_times)
        if vendor_kind == "distribution":      # registry:2 and any other plain OCI registry
            snap.notes.append(UNTAGGED_UNLISTED)
        self._ages(repo, snap, vendor_times)
        self._subjects(repo, snap)
        if self.detail:
            self._index_sizes(repo, snap)
        return snap

    def _index_sizes(self, repo: str, snap: Snapshot) -> None:
        """inventory: an index's size is what its platforms store (each config and layer blob once)."""
        indexes = [img for img in snap.images.values() if img.is_index and img.children]
        children = sorted({c for img in indexes for c in img.children})
        bodies = dict(zip(children, self._map(lambda d: self._get(repo, d), children)))
        for img in indexes:
            blobs: dict[str, int] = {}
            for c in img.children:
                m = bodies.get(c) or {}
                for x in [m.get("config") or {}, *(m.get("layers") or [])]:
                    if isinstance(x.get("digest"), str):
                        blobs[x["digest"]] = int(x.get("size", 0))
            img.size = sum(blobs.values())

    def _image(self, digest: str, media_type: str, tags: tuple[str, ...], m: Mapping[str, Any]) -> Image:
        img = Image(digest, media_type, tags, annotations=dict(m.get("annotations") or {}))
        if media_type in INDEX_TYPES or "manifests" in m:
            img.media_type = media_type if media_type in INDEX_TYPES else "application/vnd.oci.image.index.v1+json"
            img.children = tuple(c["digest"] for c in m.get("manifests") or [])
            img.platforms.update(index_platforms(m))
            img.size = sum(int(c.get("size", 0)) for c in m.get("manifests") or [])
        else:
            img.config = (m.get("config") or {}).get("digest")
            img.size = sum(int(x.get("size", 0)) for x in [m.get("config") or {}, *(m.get("layers") or [])])
        return img

    def _attachments(self, repo: str, snap: Snapshot, found: list[tuple[str, str]]) -> None:
        def read(item: tuple[str, str]) -> Attachment:
            tag, digest = item
            subject, kind = subject_of(tag)
            att = Attachment(tag, digest, subject, kind)
            if kind == "referrers" or self.detail:
                m = self._get(repo, digest) or {}
                if kind == "referrers":
                    att.referrers = tuple(x["digest"] for x in m.get("manifests") or [] if x.get("digest"))
                    # what each bundle is matters to inventory only (prune protects every referrer alike)
                    att.predicates = parse_referrers(m, (lambda d: self._get(repo, d)) if self.detail else None)
                elif kind == "sig":
                    layers = m.get("layers") or []
                    att.signatures = sum(1 for layer in layers if layer.get("mediaType") == SIMPLE_SIGNING)
                elif kind == "att":
                    att.predicates = parse_attestation_manifest(m)
            return att
        snap.attachments.extend(self._map(read, found))

    def _untagged(self, repo: str, snap: Snapshot, vendor: Mapping[str, VendorImage]) -> None:
        """Untagged manifests a vendor API lists: images, unless they belong to an index or a subject."""
        belongs = {c for img in snap.images.values() for c in img.children}
        belongs |= {a.digest for a in snap.attachments} | {r for a in snap.attachments for r in a.referrers}
        loose = [d for d, v in vendor.items() if not v.tags and d not in snap.images and d not in belongs]
        for digest, m in zip(loose, self._map(lambda d: self._get(repo, d), loose)):
            if m is None or m.get("subject"):
                continue
            img = self._image(digest, m.get("mediaType", ""), (), m)
            img.untagged = True
            snap.images[digest] = img
        # children of untagged indexes are not images either
        for img in list(snap.images.values()):
            if img.untagged:
                for c in img.children:
                    if c in snap.images and snap.images[c].untagged:
                        del snap.images[c]

    def _ages(self, repo: str, snap: Snapshot, vendor: Mapping[str, VendorImage]) -> None:
        def resolve(img: Image) -> None:
            child: dict[str, Any] | None = None
            for source in self.sources:
                when: datetime | None = None
                if source == "release":
                    when = self.facts.pushed.get((self.registry, repo, img.digest))
                elif source == "registry":
                    v = vendor.get(img.digest)
                    when = v.pushed_at if v else None
                elif source == "annotation":
                    when = plausible(parse_time(img.annotations.get(CREATED_ANNOTATION)), self.now)
                    if when is None and img.is_index and img.platforms:
                        child = child or self._get(repo, next(iter(img.platforms.values()))) or {}
                        when = plausible(parse_time((child.get("annotations") or {}).get(CREATED_ANNOTATION)),
                                         self.now)
                elif source == "created":
                    config = img.config
                    if img.is_index and img.platforms:
                        child = child or self._get(repo, next(iter(img.platforms.values()))) or {}
                        config = (child.get("config") or {}).get("digest")
                    when = plausible(self._created(repo, config), self.now) if config else None
                if when is not None:
                    img.pushed_at, img.age_source = when, source
                    break
            if self.detail and not img.is_index and img.config and not img.platforms:
                platform = self._config_platform(repo, img.config)
                if platform:
                    img.platforms[platform] = img.digest
        self._map(resolve, list(snap.images.values()))

    def _config(self, repo: str, digest: str) -> dict[str, Any]:
        try:
            data = json.loads(self.client.blob_get(repo, digest))
        except (NotFound, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _created(self, repo: str, digest: str) -> datetime | None:
        return parse_time(self._config(repo, digest).get("created"))

    def _config_platform(self, repo: str, digest: str) -> str | None:
        return platform_name(self._config(repo, digest))

    def manifest_platform(self, repo: str, manifest: Mapping[str, Any]) -> str | None:
        """The platform a single image manifest's config names (``linux/amd64``), or None."""
        config = (manifest.get("config") or {}).get("digest")
        return self._config_platform(repo, config) if config else None

    def _subjects(self, repo: str, snap: Snapshot) -> None:
        known = set(snap.images) | {c for img in snap.images.values() for c in img.children}
        unknown = sorted({a.subject for a in snap.attachments if a.subject not in known})
        present = dict(zip(unknown, self._map(lambda d: self.client.manifest_head(repo, d) is not None, unknown)))
        for a in snap.attachments:
            a.subject_present = True if a.subject in known else present.get(a.subject)


# --------------------------------------------------------------------------- planning (pure)


@dataclass(frozen=True)
class Deletion:
    digest: str
    tags: tuple[str, ...]
    what: str          # image | index | platform manifest | sig | att | sbom | referrers | referrer


@dataclass
class Row:
    """One line of the preview: an image (or an orphaned attachment) and its verdict."""

    digest: str
    tags: tuple[str, ...]
    kind: str                      # index | image | untagged | orphan <kind>
    platforms: tuple[str, ...]
    pushed_at: datetime | None
    age_source: str
    approximate: bool
    rule: str | None
    verdict: str                   # keep | expire
    reason: str
    attachments: tuple[str, ...] = ()

    def age_days(self, now: datetime) -> float | None:
        return None if self.pushed_at is None else (now - self.pushed_at).total_seconds() / 86400

    def to_dict(self, now: datetime) -> dict[str, Any]:
        age = self.age_days(now)
        return {"digest": self.digest, "tags": list(self.tags), "kind": self.kind, "platforms": list(self.platforms),
                "pushed_at": self.pushed_at.isoformat() if self.pushed_at else None,
                "age_days": round(age, 2) if age is not None else None, "age_source": self.age_source,
                "approximate": self.approximate, "rule": self.rule, "verdict": self.verdict, "reason": self.reason,
                "attachments": list(self.attachments)}


@dataclass
class RepoPlan:
    registry: str
    repository: str
    vendor: str
    rules: tuple[str, ...]
    rows: list[Row]
    groups: list[tuple[str, list[Deletion]]]     # (image digest, what to delete, in order)
    notes: list[str] = field(default_factory=list)
    tag_count: int = 0

    @property
    def expired(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "expire"]

    def deletions(self) -> list[Deletion]:
        return [d for _, group in self.groups for d in group]

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {"registry": self.registry, "repository": self.repository, "vendor": self.vendor,
                "rules": list(self.rules), "tags": self.tag_count, "notes": list(self.notes),
                "images": [r.to_dict(now) for r in self.rows],
                "deletions": [{"image": img, "digest": d.digest, "tags": list(d.tags), "what": d.what}
                              for img, group in self.groups for d in group]}


def plan(snap: Snapshot, policy: lifecycle.Policy, now: datetime, *, chosen: str | None = None) -> RepoPlan:
    """Evaluate the policy on the snapshot's images and list what goes, image by image (see module doc).

    With ``chosen`` (an image digest picked by hand, e.g. in the inventory page) only that image expires;
    the rules still say why each image would be kept, and the same protection holds: a platform manifest
    of a kept index and the attachments of kept images are never deleted."""
    images = list(snap.images.values())
    result = lifecycle.evaluate(policy, [lifecycle.Image(i.digest, i.tags, i.pushed_at) for i in images], now)
    if chosen is not None:
        result = lifecycle.choose(result, chosen)
    expired = {d for d in result.expired}

    def family(img: Image) -> set[str]:
        return {img.digest, *img.children}

    protected: set[str] = set()
    for img in images:
        if img.digest not in expired:
            fam = family(img)
            protected |= fam
            for a in snap.attachments_of(fam):
                protected |= {a.digest, *a.referrers}
    rows: list[Row] = []
    going: list[Image] = []
    for img in sorted(images, key=lambda i: (i.pushed_at or now, i.digest)):   # oldest first
        v = result.verdicts[img.digest]
        verdict, reason = ("expire" if v.expire else "keep"), v.reason
        if v.expire and img.digest in protected:
            verdict, reason = "keep", "a platform manifest of a kept index"
        kind = "untagged" if img.untagged else ("index" if img.is_index else "image")
        rule = v.expired_by or v.claimed_by
        rows.append(Row(img.digest, img.tags, kind, tuple(sorted(img.platforms)), img.pushed_at, img.age_source,
                        img.approximate, rule.summary() if rule else None, verdict, reason,
                        tuple(a.tag or a.digest for a in snap.attachments_of(family(img)))))
        if verdict == "expire":
            going.append(img)
    # parents before the (tagged) platform manifests they list, so an index is never left half deleted
    inside = {c for img in going if img.is_index for c in img.children}
    groups: list[tuple[str, list[Deletion]]] = []
    scheduled: set[str] = set()
    for img in sorted(going, key=lambda i: i.digest in inside):
        kind = "untagged" if img.untagged else ("index" if img.is_index else "image")
        group = [Deletion(img.digest, img.tags, kind)]
        group += [Deletion(c, snap.images[c].tags if c in snap.images else (), "platform manifest")
                  for c in img.children if c not in protected]
        for a in snap.attachments_of(family(img)):
            if a.digest not in protected:
                group.append(Deletion(a.digest, (a.tag,) if a.tag else (), a.kind))
            group += [Deletion(r, (), "referrer") for r in a.referrers if r not in protected]
        groups.append((img.digest, _dedupe(group, scheduled)))
    orphans: dict[str, list[Attachment]] = {}
    for a in snap.attachments:
        if a.subject_present is False and a.digest not in protected and chosen is None:   # one image: only it
            orphans.setdefault(a.subject, []).append(a)
    for subject, atts in sorted(orphans.items()):
        for a in atts:
            rows.append(Row(a.digest, (a.tag,) if a.tag else (), f"orphan {a.kind}", (), None, "unknown", False,
                            None, "expire", f"its subject {subject[:19]} is gone"))
        group = [Deletion(a.digest, (a.tag,) if a.tag else (), a.kind) for a in atts]
        group += [Deletion(r, (), "referrer") for a in atts for r in a.referrers if r not in protected]
        groups.append((subject, _dedupe(group, scheduled)))
    notes = list(snap.notes)
    if UNTAGGED_UNLISTED in notes:
        for rule in policy.rules:
            if rule.tag_status in ("untagged", "any"):
                notes.append(f"rule {rule.priority} (tagStatus \"{rule.tag_status}\"): this registry cannot list"
                             " untagged manifests over the OCI API, so the rule sees only tagged images here")
    kept_unknown = [a for a in snap.attachments if a.subject_present and a.subject not in
                    {d for i in images for d in family(i)}]
    if kept_unknown:
        notes.append(f"{len(kept_unknown)} attachment(s) follow untagged subjects that cannot be listed; kept")
    return RepoPlan(snap.registry, snap.repository, snap.vendor, tuple(r.summary() for r in policy.rules), rows,
                    [(d, g) for d, g in groups if g], notes, snap.tag_count)


def _dedupe(group: list[Deletion], scheduled: set[str]) -> list[Deletion]:
    out = []
    for d in group:
        if d.digest not in scheduled:
            scheduled.add(d.digest)
            out.append(d)
    return out


# --------------------------------------------------------------------------- deleting


@dataclass(frozen=True)
class Deleted:
    registry: str
    repository: str
    digest: str
    tags: tuple[str, ...]
    what: str
    outcome: str                  # deleted | gone | failed | skipped
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "repository": self.repository, "digest": self.digest,
                "tags": list(self.tags), "what": self.what, "outcome": self.outcome, "error": self.error}


def preflight(plans: Sequence[RepoPlan], backends: Mapping[str, Any]) -> list[str]:
    """One sentence per registry/repository that cannot delete (empty: go ahead)."""
    problems: list[str] = []
    asked: set[tuple[str, str]] = set()
    for p in plans:
        if not p.groups or (p.registry, p.repository) in asked:
            continue
        asked.add((p.registry, p.repository))
        try:
            reason = backends[p.registry].can_delete(p.repository)
        except (RegistryError, InfraError) as exc:
            reason = str(exc)
        if reason:
            problems.append(f"{p.registry} ({p.repository}): {reason}")
    return problems


def apply(plans: Sequence[RepoPlan], backends: Mapping[str, Any]) -> list[Deleted]:
    """Delete what the plans list; the caller ran :func:`preflight`. Never raises for one failed delete."""
    logger = log.get("prune")
    out: list[Deleted] = []
    for p in plans:
        backend = backends[p.registry]
        for _image, group in p.groups:
            failed = False
            for d in group:
                if failed:
                    out.append(Deleted(p.registry, p.repository, d.digest, d.tags, d.what, "skipped",
                                       "an earlier delete of this image failed"))
                    continue
                try:
                    outcome = backend.delete(p.repository, d.digest, d.tags)
                except (RegistryError, InfraError) as exc:
                    failed = True
                    out.append(Deleted(p.registry, p.repository, d.digest, d.tags, d.what, "failed", str(exc)))
                    logger.error("image.delete_failed", registry=p.registry, repo=p.repository, digest=d.digest,
                                 error=str(exc))
                    continue
                out.append(Deleted(p.registry, p.repository, d.digest, d.tags, d.what, outcome))
                logger.info("image.deleted", registry=p.registry, repo=p.repository, digest=d.digest,
                            what=d.what, tags=",".join(d.tags), outcome=outcome)
    return out


def leftovers(plans: Sequence[RepoPlan], done: Sequence[Deleted], clients: Mapping[str, Registry]) -> list[str]:
    """What should be gone but is still there, asked again after the deletes: tags still listed, and
    every deleted digest (tagged or not) the registry still serves."""
    gone: dict[tuple[str, str], set[str]] = {}
    digests: dict[tuple[str, str], set[str]] = {}
    for d in done:
        if d.outcome in ("deleted", "gone"):
            gone.setdefault((d.registry, d.repository), set()).update(d.tags)
            digests.setdefault((d.registry, d.repository), set()).add(d.digest)
    out = []
    for (registry, repo), tags in sorted(gone.items()):
        still = tags & set(clients[registry].tags(repo))
        out += [f"{registry}: {repo}:{t}" for t in sorted(still)]
        served = [d for d in sorted(digests[(registry, repo)]) if clients[registry].manifest_head(repo, d) is not None]
        out += [f"{registry}: {repo}@{d} is still served" for d in served]
    return out


def gc_hint(registry: str, vendor: str, serve_config: Path | None) -> str | None:
    if vendor != "distribution":
        return None
    config = str(serve_config) if serve_config else "/etc/docker/registry/config.yml"
    stop = f"pipeline registry stop --name {registry}" if serve_config else "stop the registry (or set it read-only)"
    return (f"{registry}: disk space comes back only after garbage collection: {stop}, run"
            f" 'docker-registry garbage-collect {config}' (registry:2: 'registry garbage-collect …'), then start it"
            " again; avoid --delete-untagged before distribution v3 with multi-arch images")
