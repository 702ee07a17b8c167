"""OCI formats and the image layout on disk: media types, descriptors, digests, index platforms,
and :class:`Layout`, an OCI image layout directory (image-spec ``image-layout.md``).

Every image a release handles lives in a layout first: BuildKit writes the build there
(``--output type=oci,dest=DIR,tar=false``), images fetched from a registry land there, the
scan gate reads per-platform views of it (Trivy ``--input``), and the registry client uploads
from it. Blobs are written through a temporary file and renamed only once their digest checks,
so a killed process never leaves a blob that lies about its content. Pure file system work:
no process, no socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.errors import InfraError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
REF_NAME = "org.opencontainers.image.ref.name"
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class LayoutError(InfraError):
    """A layout on disk is missing something or does not match its digests (exit 3, named)."""


def is_digest(reference: str) -> bool:
    algorithm, _, hexpart = reference.partition(":")
    return ((algorithm == "sha256" and len(hexpart) == 64) or (algorithm == "sha512" and len(hexpart) == 128)) \
        and all(c in "0123456789abcdef" for c in hexpart)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def matches_digest(data: bytes, digest: str) -> bool:
    algorithm = digest.split(":", 1)[0]
    try:
        return digest_of(data, algorithm) == digest
    except ValueError:
        return False


def platform_name(platform: Mapping[str, Any] | None) -> str | None:
    """``os/arch[/variant]`` of an index entry's platform, or ``None`` where it names none (``unknown``)."""
    p = platform or {}
    if p.get("os") in (None, "", "unknown"):
        return None
    return "/".join(str(x) for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)


def index_platforms(index: Mapping[str, Any]) -> dict[str, str]:
    """Platform → manifest digest of an image index, first entry per platform; attestation manifests
    (BuildKit's ``vnd.docker.reference.type`` entries, platform ``unknown/unknown``) left out."""
    out: dict[str, str] = {}
    for m in index.get("manifests") or []:
        name = platform_name(m.get("platform"))
        if name and "vnd.docker.reference.type" not in (m.get("annotations") or {}):
            out.setdefault(name, m["digest"])
    return out


def referenced_descriptors(manifest: Mapping[str, Any]) -> tuple[list[Descriptor], list[Descriptor]]:
    """(child manifests, blobs) that a manifest or index points at.

    Foreign / non-distributable layers (with ``urls``) live elsewhere and are left out, as docker does.
    """
    children = [Descriptor(m.get("mediaType", ""), m["digest"], int(m.get("size", 0)))
                for m in manifest.get("manifests") or []]
    blobs: list[Descriptor] = []
    if manifest.get("config"):
        c = manifest["config"]
        blobs.append(Descriptor(c.get("mediaType", ""), c["digest"], int(c.get("size", 0))))
    for layer in manifest.get("layers") or []:
        if layer.get("urls"):
            continue
        blobs.append(Descriptor(layer.get("mediaType", ""), layer["digest"], int(layer.get("size", 0))))
    return children, blobs


def media_type_of(body: bytes) -> str:
    """A manifest's media type from its own ``mediaType`` (optional in OCI: then index or manifest by shape)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        raise LayoutError("manifest is not JSON") from None
    if not isinstance(parsed, dict):
        raise LayoutError("manifest is not a JSON object")
    media = parsed.get("mediaType")
    if isinstance(media, str) and media:
        return media
    return OCI_INDEX if "manifests" in parsed else OCI_MANIFEST


# --------------------------------------------------------------------------- the layout


class Layout:
    """An OCI image layout directory: ``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>``.

    ``blobs`` may be a symlink to another layout's blobs (a per-platform view shares them).
    Several threads may add blobs at once: each goes through its own temporary file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Layout({str(self.path)!r})"

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Layout:
        """An empty layout at ``path`` (kept as it is when one exists there already)."""
        layout = cls(path)
        (layout.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (layout.path / "oci-layout").exists():
            _atomic_write(layout.path / "oci-layout", json.dumps(LAYOUT_VERSION).encode())
        if not (layout.path / "index.json").exists():
            layout.write_index([])
        return layout

    def exists(self) -> bool:
        return (self.path / "oci-layout").is_file() and (self.path / "index.json").is_file()

    # ---- blobs

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        if not is_digest(digest):
            raise LayoutError(f"'{digest}' is not a digest")
        return self.path / "blobs" / algorithm / hexpart

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except OSError as exc:
            raise LayoutError(f"{self.path}: blob {digest}: {exc.strerror}") from None

    def read(self, digest: str) -> bytes:
        """A blob's bytes (manifests, configs: small), checked against its digest."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: no blob {digest}") from None
        except OSError as exc:
            raise LayoutError(f"{self.path}: blob {digest}: {exc.strerror}") from None
        if not matches_digest(data, digest):
            raise LayoutError(f"{self.path}: blob {digest} does not match its digest")
        return data

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: no blob {digest}") from None
        except OSError as exc:
            raise LayoutError(f"{self.path}: blob {digest}: {exc.strerror}") from None

    def chunks(self, digest: str, offset: int = 0, length: int | None = None,
               chunk: int = READ_CHUNK) -> Iterator[bytes]:
        """The blob's bytes from ``offset`` (``length`` of them, or to the end), in pieces."""
        with self.open(digest) as fh:
            fh.seek(offset)
            left = length
            while left is None or left > 0:
                piece = fh.read(chunk if left is None else min(chunk, left))
                if not piece:
                    break
                if left is not None:
                    left -= len(piece)
                yield piece

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` (its digest checked when given); returns the digest."""
        digest = digest or digest_of(data)
        if not matches_digest(data, digest):
            raise LayoutError(f"blob does not match {digest}")
        path = self.blob_path(digest)
        if not path.is_file():
            _atomic_write(path, data)
        return digest

    def index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / "index.json").read_text())
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: no index.json (not an OCI layout)") from None
        except ValueError:
            raise LayoutError(f"{self.path}: index.json is not JSON") from None
        if not isinstance(data, dict):
            raise LayoutError(f"{self.path}: index.json is not a JSON object")
        return data

    def write_index(self, manifests: list[dict[str, Any]], annotations: Mapping[str, str] | None = None) -> None:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        if annotations:
            doc["annotations"] = dict(annotations)
        _atomic_write(self.path / "index.json", json.dumps(doc, separators=(",", ":")).encode())

    def entries(self) -> list[dict[str, Any]]:
        return list(self.index().get("manifests") or [])

    def root(self) -> Descriptor:
        """The one image index.json names (BuildKit's oci exporter writes exactly one entry)."""
        entries = self.entries()
        if len(entries) != 1:
            raise LayoutError(f"{self.path}: index.json names {len(entries)} images, expected one")
        e = entries[0]
        return Descriptor(e.get("mediaType", ""), e["digest"], int(e.get("size", 0)))

    def set_root(self, desc: Descriptor, *, name: str | None = None) -> None:
        entry = desc.to_dict()
        if name:
            entry["annotations"] = {REF_NAME: name}
        self.write_index([entry])

    def manifest(self, digest: str) -> tuple[bytes, str]:
        """(body, media type) of a manifest or index in this layout."""
        body = self.read(digest)
        return body, media_type_of(body)

    def descriptor(self, digest: str) -> Descriptor:
        """The descriptor of a manifest or index in this layout (media type from its body)."""
        body, media = self.manifest(digest)
        return Descriptor(media, digest, len(body))

    def json(self, digest: str) -> dict[str, Any]:
        return json.loads(self.read(digest))

    def walk(self, digest: str) -> Iterator[tuple[str, Descriptor]]:
        """Every descriptor below ``digest`` (itself first): ("manifest", d) and ("blob", d)."""
        body, _media = self.manifest(digest)
        yield "manifest", self.descriptor(digest)
        children, blobs = referenced_descriptors(json.loads(body))
        for child in children:
            yield from self.walk(child.digest)
        for blob in blobs:
            yield "blob", blob

    def missing(self, digest: str) -> list[Descriptor]:
        """Blobs (and manifests) below ``digest`` this layout does not hold."""
        out: list[Descriptor] = []
        if not self.has(digest):
            return [Descriptor("", digest, 0)]
        body, _ = self.manifest(digest)
        children, blobs = referenced_descriptors(json.loads(body))
        for child in children:
            out += self.missing(child.digest)
        out += [b for b in blobs if not self.has(b.digest)]
        return out

    def platform_entry(self, digest: str) -> dict[str, Any]:
        """The index entry of the image manifest ``digest``: its descriptor with the platform its config
        names (os, architecture, variant)."""
        config = self.json(self.json(digest)["config"]["digest"])
        platform = {"architecture": config.get("architecture", ""), "os": config.get("os", "")}
        if config.get("variant"):
            platform["variant"] = config["variant"]
        return {**self.descriptor(digest).to_dict(), "platform": platform}

    def put_index(self, entries: list[dict[str, Any]], annotations: Mapping[str, str] | None = None) -> str:
        """An OCI image index over ``entries`` (e.g. :meth:`platform_entry`), stored and made the layout's
        root; its digest."""
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        if annotations:
            index["annotations"] = dict(annotations)
        body = json.dumps(index, separators=(",", ":")).encode()
        digest = self.put(body)
        self.set_root(Descriptor(OCI_INDEX, digest, len(body)))
        return digest

    def platforms(self, digest: str | None = None) -> dict[str, str]:
        """Platform → manifest digest of the root index (or of ``digest``); a single manifest
        counts as the platform its config names."""
        digest = digest or self.root().digest
        body, media = self.manifest(digest)
        data = json.loads(body)
        if media in INDEX_TYPES:
            return index_platforms(data)
        config = self.json(data["config"]["digest"])
        name = platform_name({"os": config.get("os"), "architecture": config.get("architecture"),
                              "variant": config.get("variant")})
        return {name: digest} if name else {}

    def view(self, digest: str, dest: str | os.PathLike[str]) -> Layout:
        """A layout at ``dest`` whose index names only ``digest`` (one platform's manifest), sharing this
        layout's blobs through a symlink: what Trivy ``--input`` scans as exactly that platform."""
        dest = Path(dest)
        body, media = self.manifest(digest)
        if dest.exists() or dest.is_symlink():
            shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
        dest.mkdir(parents=True)
        (dest / "blobs").symlink_to((self.path / "blobs").resolve(), target_is_directory=True)
        view = Layout(dest)
        _atomic_write(dest / "oci-layout", json.dumps(LAYOUT_VERSION).encode())
        view.set_root(self.descriptor(digest))
        return view

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with _quiet():
            os.unlink(tmp)
        raise


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]
