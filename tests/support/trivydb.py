"""A small, real Trivy vulnerability DB made here: bbolt file, metadata.json, OCI artifact.

Trivy (0.59) opens ``<cache>/db/trivy.db`` with bbolt and reads nested buckets
(specs/trivy.md §8). This module writes that file without any library:

* page 0 and 1: meta pages (magic, version 2, page size, root bucket page, freelist page,
  high-water page id, txid, FNV-1a 64 checksum);
* page 2: an empty freelist;
* one leaf page per bucket, keys sorted; a nested bucket is a leaf value with the
  bucket flag holding ``{root pgid, sequence}`` that points at its own leaf page.

:func:`build` turns a plain dict (``{bucket: {key: value | {nested…}}}``) into
``trivy.db``; :func:`write_db` adds ``metadata.json``; :func:`pack` makes the
``db.tar.gz`` layer and :func:`push` puts it in a registry as the OCI artifact
Trivy's ``--db-repository`` downloads (through :class:`pipeline.tools.registry.Registry`).

Run ``python -m tests.support.trivydb --push HOST/REPO:2`` to load the small
synthetic DB into a local mirror (offline development machines only: it knows a
handful of made-up CVEs and nothing else, so it must never gate a real release).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

PAGE_SIZE = 4096
MAGIC = 0xED0CDAED
VERSION = 2
LEAF = 0x02
META = 0x04
FREELIST = 0x10
BUCKET_LEAF_FLAG = 0x01
PAGE_HEADER = 16          # id u64, flags u16, count u16, overflow u32
LEAF_ELEMENT = 16         # flags u32, pos u32, ksize u32, vsize u32


Tree = Mapping[str, Union["Tree", bytes, str, Mapping[str, Any]]]


def _fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _meta_page(pgid: int, root: int, freelist: int, high_water: int, txid: int) -> bytes:
    meta = struct.pack("<IIII", MAGIC, VERSION, PAGE_SIZE, 0)
    meta += struct.pack("<QQ", root, 0)               # root bucket: root pgid, sequence
    meta += struct.pack("<QQQ", freelist, high_water, txid)
    meta += struct.pack("<Q", _fnv64a(meta))
    page = struct.pack("<QHHI", pgid, META, 0, 0) + meta
    return page.ljust(PAGE_SIZE, b"\0")


def _is_bucket(value: Any) -> bool:
    """A mapping whose values are all mappings/bytes/str is a nested bucket only when flagged so.

    Values are JSON documents unless wrapped in :class:`Bucket`.
    """
    return isinstance(value, Bucket)


class Bucket(dict):  # type: ignore[type-arg]
    """Marks a mapping as a nested bucket (plain mappings are JSON values)."""


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


class _Writer:
    def __init__(self) -> None:
        self.pages: dict[int, bytes] = {}
        self.next = 3                                  # 0,1 meta; 2 freelist

    def leaf(self, bucket: Mapping[str, Any]) -> int:
        """Write one bucket (and its nested buckets) as leaf pages; returns its page id."""
        items: list[tuple[bytes, bytes, int]] = []
        for key in sorted(bucket, key=lambda k: k.encode()):
            value = bucket[key]
            if _is_bucket(value):
                child = self.leaf(value)
                items.append((key.encode(), struct.pack("<QQ", child, 0), BUCKET_LEAF_FLAG))
            else:
                items.append((key.encode(), _encode(value), 0))
        header_size = PAGE_HEADER + LEAF_ELEMENT * len(items)
        data_size = sum(len(k) + len(v) for k, v, _ in items)
        pages = max(1, -(-(header_size + data_size) // PAGE_SIZE))
        pgid = self.next
        self.next += pages
        elements = b""
        payload = b""
        offset = header_size
        for i, (k, v, flags) in enumerate(items):
            element_at = PAGE_HEADER + LEAF_ELEMENT * i
            elements += struct.pack("<IIII", flags, offset - element_at, len(k), len(v))
            payload += k + v
            offset += len(k) + len(v)
        body = struct.pack("<QHHI", pgid, LEAF, len(items), pages - 1) + elements + payload
        self.pages[pgid] = body.ljust(pages * PAGE_SIZE, b"\0")
        return pgid

    def file(self, root: Mapping[str, Any]) -> bytes:
        root_pgid = self.leaf(Bucket(root))
        high_water = self.next
        freelist = struct.pack("<QHHI", 2, FREELIST, 0, 0).ljust(PAGE_SIZE, b"\0")
        out = bytearray(_meta_page(0, root_pgid, 2, high_water, 0) + _meta_page(1, root_pgid, 2, high_water, 1)
                        + freelist)
        for pgid in sorted(self.pages):
            assert len(out) == pgid * PAGE_SIZE
            out += self.pages[pgid]
        return bytes(out)


def build(buckets: Mapping[str, Any]) -> bytes:
    """The bytes of a bbolt file holding ``buckets`` (every top-level value is a bucket)."""
    return _Writer().file({name: content if isinstance(content, Bucket) else Bucket(content)
                           for name, content in buckets.items()})


# --------------------------------------------------------------------------- Trivy's schema


def _ts(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def metadata(updated: datetime, next_update: datetime | None = None) -> bytes:
    """metadata.json as trivy-db writes it (Go JSON + newline); DownloadedAt zero as published."""
    nxt = next_update or datetime(2099, 1, 1, tzinfo=timezone.utc)
    return (json.dumps({"Version": 2, "NextUpdate": _ts(nxt), "UpdatedAt": _ts(updated),
                        "DownloadedAt": "0001-01-01T00:00:00Z"}, separators=(",", ":")) + "\n").encode()


def trivy_buckets(advisories: Mapping[str, Mapping[str, Mapping[str, Any]]],
                  vulnerabilities: Mapping[str, Mapping[str, Any]],
                  data_sources: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """``advisories``: platform bucket → package → vuln id → advisory JSON."""
    out: dict[str, Any] = {}
    for platform, packages in advisories.items():
        out[platform] = Bucket({pkg: Bucket(dict(vulns)) for pkg, vulns in packages.items()})
    out["vulnerability"] = Bucket(dict(vulnerabilities))           # must exist, even empty
    out["data-source"] = Bucket(dict(data_sources or {}))
    return out


ALPINE_SOURCE = {"ID": "alpine", "Name": "Alpine Secdb", "URL": "https://secdb.alpinelinux.org/"}
DEBIAN_SOURCE = {"ID": "debian", "Name": "Debian Security Tracker", "URL": "https://salsa.debian.org/security-tracker-team/security-tracker"}
PIP_SOURCE = {"ID": "ghsa", "Name": "GitHub Security Advisory pip",
              "URL": "https://github.com/advisories?query=type%3Areviewed+ecosystem%3Apip"}

#: The CVE the test images are vulnerable to (musl 1.2.4-r2 < 1.2.4-r99).
MUSL_CVE = "CVE-2099-0001"
MUSL_FIXED = "1.2.4-r99"


def sample_db() -> dict[str, Any]:
    """The synthetic DB the tests use: Alpine 3.19, Debian 12 and pip advisories of every kind."""
    advisories = {
        "alpine 3.19": {
            "musl": {MUSL_CVE: {"FixedVersion": MUSL_FIXED},          # HIGH, fixed
                     "CVE-2099-0002": {"FixedVersion": "1.2.5-r0"},   # CRITICAL, fixed
                     "CVE-2099-0003": {},                             # MEDIUM, no fix: affected
                     "CVE-2099-0004": {"FixedVersion": "1.2.4-r1"}},  # LOW but already fixed: not reported
            "busybox": {"CVE-2099-0005": {"FixedVersion": "1.36.1-r20"},   # LOW, fixed
                        "CVE-2099-0006": {"FixedVersion": "1.36.1-r21"}},  # not in 'vulnerability': UNKNOWN
        },
        "debian 12": {
            "openssl": {"CVE-2099-1001": {"FixedVersion": "3.0.99-1"},                 # CRITICAL fixed
                        "CVE-2099-1002": {"Status": 5},                                 # will_not_fix
                        "CVE-2099-1003": {"Status": 6},                                 # fix_deferred
                        "CVE-2099-1004": {"Status": 7, "Severity": 3}},                 # end_of_life, pkg sev
            "zlib": {"CVE-2099-1005": {"Status": 2},                                    # affected
                     "CVE-2099-1006": {"FixedVersion": "1:1.2.99-1"}},                  # fixed, MEDIUM
        },
        "pip::GitHub Security Advisory pip": {
            "requests": {"GHSA-aaaa-bbbb-cccc": {"PatchedVersions": ["2.31.0"],
                                                 "VulnerableVersions": ["<2.31.0"]}},
            "urllib3": {"CVE-2099-2001": {"VulnerableVersions": [">=1.0, <3.0"]}},     # no patch: affected
        },
    }
    vulns = {
        MUSL_CVE: {"Title": "musl: made-up heap overflow", "Description": "A test vulnerability.",
                   "Severity": "HIGH", "VendorSeverity": {"nvd": 3},
                   "CVSS": {"nvd": {"V3Vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", "V3Score": 7.5}},
                   "References": ["https://example.invalid/CVE-2099-0001"], "CweIDs": ["CWE-122"],
                   "PublishedDate": "2099-01-01T00:00:00Z", "LastModifiedDate": "2099-01-02T00:00:00Z"},
        "CVE-2099-0002": {"Title": "musl: made-up critical", "Severity": "CRITICAL", "VendorSeverity": {"nvd": 4},
                          "CVSS": {"nvd": {"V3Score": 9.8}}},
        "CVE-2099-0003": {"Title": "musl: unfixed medium", "Severity": "MEDIUM", "VendorSeverity": {"nvd": 2}},
        "CVE-2099-0004": {"Title": "musl: old low", "Severity": "LOW", "VendorSeverity": {"nvd": 1}},
        "CVE-2099-0005": {"Title": "busybox: low", "Severity": "LOW", "VendorSeverity": {"nvd": 1}},
        "CVE-2099-1001": {"Title": "openssl: critical", "VendorSeverity": {"debian": 4, "nvd": 2}},
        "CVE-2099-1002": {"Title": "openssl: will not fix", "VendorSeverity": {"nvd": 3}},
        "CVE-2099-1003": {"Title": "openssl: fix deferred", "VendorSeverity": {"nvd": 3}},
        "CVE-2099-1004": {"Title": "openssl: eol", "VendorSeverity": {"nvd": 1}},
        "CVE-2099-1005": {"Title": "zlib: affected", "VendorSeverity": {"debian": 3}},
        "CVE-2099-1006": {"Title": "zlib: medium", "Severity": "MEDIUM"},
        "GHSA-aaaa-bbbb-cccc": {"Title": "requests: leaks headers", "VendorSeverity": {"ghsa": 2}},
        "CVE-2099-2001": {"Title": "urllib3: no patch", "VendorSeverity": {"ghsa": 3, "nvd": 4}},
    }
    sources = {"alpine 3.19": ALPINE_SOURCE, "debian 12": DEBIAN_SOURCE,
               "pip::GitHub Security Advisory pip": PIP_SOURCE}
    return trivy_buckets(advisories, vulns, sources)


def minimal_db() -> dict[str, Any]:
    """specs/trivy.md §8.3: one HIGH CVE for musl < 1.2.4-r99 on Alpine 3.19, nothing else."""
    return trivy_buckets({"alpine 3.19": {"musl": {MUSL_CVE: {"FixedVersion": MUSL_FIXED}}}},
                         {MUSL_CVE: {"Title": "musl: made-up heap overflow", "Severity": "HIGH",
                                     "VendorSeverity": {"nvd": 3}}},
                         {"alpine 3.19": ALPINE_SOURCE})


def write_db(dest: Path, buckets: Mapping[str, Any] | None = None, *,
             updated: datetime | None = None) -> Path:
    """``dest/trivy.db`` + ``dest/metadata.json`` (dest is ``<cache>/db``); returns dest."""
    dest.mkdir(parents=True, exist_ok=True)
    data = build(buckets if buckets is not None else sample_db())
    (dest / "trivy.db").write_bytes(data)
    (dest / "metadata.json").write_bytes(metadata(updated or _updated_for(data)))
    return dest


def _updated_for(data: bytes) -> datetime:
    """A stable UpdatedAt per DB content, so two different test DBs never share a 'version'."""
    seconds = int(hashlib.sha256(data).hexdigest()[:8], 16) % (3600 * 24 * 365)
    return datetime.fromtimestamp(1_767_225_600 + seconds, timezone.utc)   # during 2026


def pack(buckets: Mapping[str, Any] | None = None, *, updated: datetime | None = None) -> bytes:
    """``db.tar.gz`` (trivy.db + metadata.json), deterministic."""
    data = build(buckets if buckets is not None else sample_db())
    return _targz({"trivy.db": data, "metadata.json": metadata(updated or _updated_for(data))})


def _targz(files: Mapping[str, bytes]) -> bytes:
    """A deterministic gzip tar of ``files`` (name → content), no directory prefix."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def push(registry: Any, repository: str, tag: str = "2", layer: bytes | None = None) -> str:
    """Push ``layer`` (default: :func:`pack`) as Trivy's DB artifact, exactly as ``pipeline scan
    --mirror-db`` does; returns the manifest digest. ``registry`` is a pipeline Registry client."""
    from pipeline.scan.db import push_layer

    return push_layer(registry, repository, tag, layer if layer is not None else pack())


# --------------------------------------------------------------------------- the Java DB (specs/trivy-javadb.md)

MAVEN_BUCKET = "maven::GitHub Security Advisory Maven"
MAVEN_SOURCE = {"ID": "ghsa", "Name": "GitHub Security Advisory Maven",
                "URL": "https://github.com/advisories?query=type%3Areviewed+ecosystem%3Amaven"}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def make_jar(group: str, artifact: str, version: str, *, pom: bool = True) -> bytes:
    """A deterministic JAR. With ``pom`` (and shipped as ``<artifact>-<version>.jar``) Trivy names it from
    pom.properties; without, only its SHA-1 in the Java DB identifies it."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as jar:
        jar.writestr(zipfile.ZipInfo("META-INF/MANIFEST.MF", _ZIP_DATE), "Manifest-Version: 1.0\r\n\r\n")
        if pom:
            jar.writestr(zipfile.ZipInfo(f"META-INF/maven/{group}/{artifact}/pom.properties", _ZIP_DATE),
                         f"groupId={group}\nartifactId={artifact}\nversion={version}\n")
    return buf.getvalue()


def java_db_file(rows: list[tuple[str, str, str, bytes]]) -> bytes:
    """``trivy-java.db`` (SQLite, the trivy-java-db schema) indexing each ``(group, artifact, version, jar)``
    by the JAR's raw SHA-1."""
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trivy-java.db"
        con = sqlite3.connect(path)
        con.executescript(
            "CREATE TABLE artifacts(id INTEGER PRIMARY KEY, group_id TEXT, artifact_id TEXT);"
            "CREATE TABLE indices(artifact_id INTEGER, version TEXT, sha1 BLOB, archive_type TEXT,"
            " foreign key (artifact_id) references artifacts(id));"
            "CREATE UNIQUE INDEX artifacts_idx ON artifacts(artifact_id, group_id);"
            "CREATE INDEX indices_artifact_idx ON indices(artifact_id);"
            "CREATE UNIQUE INDEX indices_sha1_idx ON indices(sha1);")
        for group, artifact, version, jar in rows:
            con.execute("INSERT OR IGNORE INTO artifacts(group_id, artifact_id) VALUES (?, ?)", (group, artifact))
            con.execute("INSERT INTO indices(artifact_id, version, sha1, archive_type) VALUES ((SELECT id FROM"
                        " artifacts WHERE group_id=? AND artifact_id=?), ?, ?, 'jar')",
                        (group, artifact, version, hashlib.sha1(jar).digest()))
        con.commit()
        con.close()
        return path.read_bytes()


def pack_java(rows: list[tuple[str, str, str, bytes]]) -> bytes:
    """``javadb.tar.gz`` as trivy-java-db publishes it: ``trivy-java.db`` + ``metadata.json`` (schema 1)."""
    meta = json.dumps({"Version": 1, "NextUpdate": "2099-01-01T00:00:00Z", "UpdatedAt": "2026-01-01T00:00:00Z",
                       "DownloadedAt": "0001-01-01T00:00:00Z"}).encode() + b"\n"
    return _targz({"trivy-java.db": java_db_file(rows), "metadata.json": meta})


def main(argv: list[str] | None = None) -> int:
    import argparse

    from pipeline.refs import parse
    from pipeline.tools.registry import Registry

    p = argparse.ArgumentParser(prog="python -m tests.support.trivydb",
                                description="Write or push the synthetic test DB (never for real releases).")
    p.add_argument("--push", metavar="HOST/REPO:TAG", help="push the DB artifact to this (plain-HTTP) registry")
    p.add_argument("--write", metavar="DIR", help="write trivy.db and metadata.json into DIR (a cache's db/)")
    args = p.parse_args(argv)
    if args.write:
        print(write_db(Path(args.write)))
    if args.push:
        ref = parse(args.push)
        with Registry(ref.registry, insecure=True) as reg:
            print(push(reg, ref.repository, ref.tag or "2"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
