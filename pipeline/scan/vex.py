"""OpenVEX both ways: the exceptions file exported as an OpenVEX document, and VEX documents applied by the gate.

Hand-written: OpenVEX (https://github.com/openvex/spec, v0.2.0) is a small JSON format, and what
matters is that the documents match the way Trivy applies them (``trivy image --vex FILE``), which a
general library would not decide for us.

**Export** (:func:`export`): one statement per exception, ``status`` ``not_affected``, the reason as
``impact_statement``, the expiry and owner in ``status_notes`` (``expires=YYYY-MM-DD``, read back by
:func:`parse`, so an exported exception still lapses here; an exception that has lapsed is not
exported, as other tools ignore the note). Products: every package purl the last gate's or rescan's
Trivy reports name for a finding the exception covers, without its version (an exception names a
package, not a version; the qualifiers stay, as Trivy matches them), the exception's own ``purl``
when it has one, and the released image by digest (``pkg:oci/<name>@sha256:…``) with those packages
as subcomponents.

**Input** (``scan.vex``, :func:`parse` + :func:`decide`), as Trivy 0.59 (go-vex 0.2.5) decides: a
statement is about a finding when its vulnerability (``name``, ``@id`` or an alias, exactly) is the
finding's id and one of its products or subcomponents is a package purl matching the finding's
package (type, namespace and name equal; a version only when given; the statement's qualifiers a
subset of the package's), or an image product naming this image's digest without subcomponents (Trivy
itself knows no image purl for a local layout, so there only package products apply). Of the
statements of one document that are about a finding, the one Trivy picks decides (ordered by
timestamp; on equal timestamps the first in the document): ``not_affected`` or ``fixed`` suppresses it,
``affected`` and ``under_investigation`` do not. A statement whose ``expires=`` has passed no longer
suppresses (Trivy does not know that note: re-export when exceptions change). Any one document
suppressing is enough, as with several ``--vex`` files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from pipeline.errors import ConfigError
from pipeline.scan import purl
from pipeline.scan.policy import Finding, ScanException

CONTEXT = "https://openvex.dev/ns/v0.2.0"
SUPPRESSING = ("not_affected", "fixed")
STATUSES = ("not_affected", "affected", "fixed", "under_investigation")
JUSTIFICATIONS = ("component_not_present", "vulnerable_code_not_present", "vulnerable_code_not_in_execute_path",
                  "vulnerable_code_cannot_be_controlled_by_adversary", "inline_mitigations_already_exist")


@dataclass(frozen=True)
class Product:
    """One product of a statement: its purl (``@id`` or ``identifiers.purl``) and its subcomponents' purls."""

    id: str
    subcomponents: tuple[str, ...] = ()

    @property
    def image_digest(self) -> str | None:
        return _digest_of_image(self.id)


def _purl_matches(constraint: str, target: purl.Purl) -> bool:
    try:
        return purl.parse(constraint).matches(target)
    except purl.PurlError:
        return False


@dataclass(frozen=True)
class Statement:
    vulnerability: str
    aliases: tuple[str, ...]
    products: tuple[Product, ...]
    status: str
    justification: str
    impact: str
    expires: date | None
    source: str                        # file#statement index
    timestamp: datetime = datetime.min.replace(tzinfo=timezone.utc)   # the statement's, else the document's

    def applies(self, day: date) -> bool:
        return self.status in SUPPRESSING and (self.expires is None or day < self.expires)

    def matches(self, f: Finding, digests: Iterable[str] = ()) -> bool:
        """Is this statement about ``f`` in the image ``digests``? A package product matches the finding's
        package itself (its subcomponents do not widen it); an image product only this image, by digest, and
        then only the packages it lists as subcomponents (all of them when it lists none)."""
        if f.kind != "vulnerability" or f.id not in (self.vulnerability, *self.aliases):
            return False
        target = None
        if f.purl:
            try:
                target = purl.parse(f.purl)
            except purl.PurlError:
                target = None
        ours = set(digests)
        for product in self.products:
            digest = product.image_digest
            if digest is not None:
                if digest in ours and (not product.subcomponents or (
                        target is not None and any(_purl_matches(s, target) for s in product.subcomponents))):
                    return True
            elif target is not None and _purl_matches(product.id, target):
                return True
        return False

    @property
    def why(self) -> str:
        return self.impact or self.justification.replace("_", " ") or self.status


# --------------------------------------------------------------------------- input


def _expiry(notes: str) -> date | None:
    for word in notes.replace(";", " ").split():
        if word.startswith("expires="):
            try:
                return date.fromisoformat(word.split("=", 1)[1])
            except ValueError:
                return None
    return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def decide(document: Sequence[Statement], f: Finding, digests: Iterable[str], day: date) -> Statement | None:
    """The statement of one document that suppresses ``f`` (None: none does), picked as Trivy picks it."""
    about = [st for st in reversed(document) if st.matches(f, digests)]
    if not about:
        return None
    # go-vex sorts by vulnerability name, then timestamp (stable: ties keep the reversed document order)
    about.sort(key=lambda st: (st.vulnerability, st.timestamp))
    chosen = about[-1]
    return chosen if chosen.applies(day) else None


def _digest_of_image(ref: str) -> str | None:
    """``pkg:oci/app@sha256%3A…`` or ``…@sha256:…`` (an image product) → the digest."""
    if not ref.startswith("pkg:oci/"):
        return None
    _, _, version = ref.split("?", 1)[0].partition("@")
    version = version.replace("%3A", ":").replace("%3a", ":")
    return version if version.startswith("sha256:") else None


def parse(text: str, source: str) -> tuple[Statement, ...]:
    """The statements of one OpenVEX document; a document that is not one is a ConfigError naming it."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: not JSON ({exc}); scan.vex lists OpenVEX documents") from None
    if not isinstance(data, dict) or not str(data.get("@context", "")).startswith("https://openvex.dev/ns"):
        raise ConfigError(f"{source}: not an OpenVEX document (\"@context\": \"{CONTEXT}\" expected); scan.vex"
                          " lists OpenVEX documents")
    statements = data.get("statements")
    if not isinstance(statements, list):
        raise ConfigError(f"{source}: statements: must be a list")
    if data.get("timestamp") not in (None, "") and _time(data.get("timestamp")) is None:
        raise ConfigError(f"{source}: timestamp: '{data.get('timestamp')}' is not an RFC 3339 time (Trivy refuses"
                          " the document)")
    default_time = _time(data.get("timestamp")) or datetime.min.replace(tzinfo=timezone.utc)
    out: list[Statement] = []
    for i, st in enumerate(statements):
        where = f"{source}: statements[{i}]"
        if not isinstance(st, dict):
            raise ConfigError(f"{where}: must be an object")
        vuln = st.get("vulnerability")
        name = vuln.get("name") if isinstance(vuln, dict) else vuln if isinstance(vuln, str) else None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.vulnerability.name: required (e.g. CVE-2024-1234)")
        aliases = tuple(a for a in ([vuln.get("@id"), *(vuln.get("aliases") or [])] if isinstance(vuln, dict) else [])
                        if isinstance(a, str) and a)
        status = st.get("status")
        if status not in STATUSES:
            raise ConfigError(f"{where}.status: '{status}' is not one of {', '.join(STATUSES)}")
        products = st.get("products") or []
        if not isinstance(products, list):
            raise ConfigError(f"{where}.products: must be a list")
        parsed: list[Product] = []
        for j, product in enumerate(products):
            if isinstance(product, str):
                product = {"@id": product}
            if not isinstance(product, dict):
                raise ConfigError(f"{where}.products[{j}]: must be an object")
            ids = product.get("identifiers") if isinstance(product.get("identifiers"), dict) else {}
            pid = product.get("@id") or ids.get("purl")
            if not isinstance(pid, str) or not pid:
                raise ConfigError(f"{where}.products[{j}]: needs an @id or identifiers.purl")
            subs = []
            for k, sub in enumerate(product.get("subcomponents") or []):
                sid = (sub.get("@id") or (sub.get("identifiers") or {}).get("purl")) if isinstance(sub, dict) else sub
                if not isinstance(sid, str) or not sid:
                    raise ConfigError(f"{where}.products[{j}].subcomponents[{k}]: needs an @id or identifiers.purl")
                subs.append(sid)
            parsed.append(Product(pid, tuple(subs)))
        stamp = st.get("timestamp")
        when = _time(stamp)
        if stamp not in (None, "") and when is None:
            raise ConfigError(f"{where}.timestamp: '{stamp}' is not an RFC 3339 time (Trivy refuses the document)")
        out.append(Statement(name, aliases, tuple(parsed), status, str(st.get("justification") or ""),
                             str(st.get("impact_statement") or ""), _expiry(str(st.get("status_notes") or "")),
                             f"{source}#{i}", when or default_time))
    return tuple(out)


# --------------------------------------------------------------------------- export


def _without_version(text: str) -> str:
    """``pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64`` → ``pkg:apk/alpine/musl?arch=x86_64``."""
    head, sep, rest = text.partition("?")
    head = head.split("#", 1)[0]
    if "@" in head.split("/", 1)[-1]:
        head = head[:head.rindex("@")]
    return head + (sep + rest if sep else "")


def image_purl(repository: str, digest: str, registry: str = "") -> str:
    """``pkg:oci/app@sha256%3A…?repository_url=ghcr.io/acme/app`` (the purl spec's OCI form)."""
    name = repository.rsplit("/", 1)[-1]
    url = f"?repository_url={registry}/{repository}" if registry else ""
    return f"pkg:oci/{name}@{digest.replace(':', '%3A')}{url}"


def export(exceptions: Sequence[ScanException], findings: Iterable[Finding], images: Sequence[str],
           now: datetime, *, author: str = "pipeline") -> dict[str, Any]:
    """The exceptions as one OpenVEX document (see the module docstring). ``findings``: what the last gate
    found (any platform); ``images``: image purls (:func:`image_purl`) of the released index and platforms."""
    found = list(findings)
    statements: list[dict[str, Any]] = []
    for ex in exceptions:
        # an exception names a package, not a version: its statement covers every version Trivy finds
        packages = sorted({_without_version(f.purl) for f in found if f.purl and ex.matches(f)}
                          | ({ex.purl} if ex.purl else set()))
        products: list[dict[str, Any]] = [{"@id": p} for p in packages]
        for image in images:
            if packages:                 # an image product alone would cover every finding of that id in it
                products.append({"@id": image, "subcomponents": [{"@id": p} for p in packages]})
        notes = f"pipeline exception {ex.source}: expires={ex.expires.isoformat()}"
        if ex.owner:
            notes += f"; owner={ex.owner}"
        if ex.package:
            notes += f"; package={ex.package}"
        if ex.paths:
            notes += f"; paths={','.join(ex.paths)}"
        statements.append({"vulnerability": {"name": ex.id}, "products": products, "status": "not_affected",
                           "impact_statement": ex.reason, "status_notes": notes})
    stamp = now.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    body = json.dumps(statements, sort_keys=True).encode()
    return {"@context": CONTEXT, "@id": f"https://openvex.dev/docs/pipeline/vex-{hashlib.sha256(body).hexdigest()[:16]}",
            "author": author, "timestamp": stamp, "version": 1, "tooling": "pipeline vex export",
            "statements": statements}


__all__ = ["CONTEXT", "JUSTIFICATIONS", "STATUSES", "Product", "Statement", "decide", "export", "image_purl",
           "parse"]
