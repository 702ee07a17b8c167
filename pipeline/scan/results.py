"""Trivy's output as the gate reads it: the typed JSON report, and the cache of reports.

``parse_report`` turns Trivy's ``--format json`` into :class:`Report` (tolerant of the
fields older and newer releases add or drop: specs/trivy.md); :class:`ScanCache` keeps one
report per (platform digest, DB build, Trivy version, scanners), so a re-run does not rescan.
Running Trivy itself is :mod:`pipeline.tools.trivy`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.tools.trivy import SCANNERS, SEVERITIES, STATUSES, DBInfo

# --------------------------------------------------------------------------- scan cache


@dataclass(frozen=True)
class ScanCache:
    """Trivy JSON per (image digest, DB build, Trivy version, scanners): a re-release does not rescan."""

    root: Path

    @staticmethod
    def key(digest: str, db: DBInfo, trivy_version: str, scanners: Sequence[str] = SCANNERS) -> str:
        raw = json.dumps([digest, db.key, trivy_version, list(scanners)])
        return hashlib.sha256(raw.encode()).hexdigest()

    def get(self, key: str) -> bytes | None:
        try:
            data = (self.root / f"{key}.json").read_bytes()
            json.loads(data)
            return data
        except (OSError, ValueError):
            return None

    def put(self, key: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.root / f"{key}.json")


# --------------------------------------------------------------------------- the report (typed)


class ReportError(ValueError):
    """Not a Trivy JSON report."""


@dataclass(frozen=True)
class Vulnerability:
    id: str
    pkg_name: str
    installed: str
    fixed: str = ""
    severity: str = "UNKNOWN"
    status: str = "unknown"
    pkg_id: str = ""
    pkg_path: str = ""
    purl: str = ""
    title: str = ""
    description: str = ""
    primary_url: str = ""
    severity_source: str = ""
    data_source: str = ""
    references: tuple[str, ...] = ()
    cwe_ids: tuple[str, ...] = ()
    cvss_v3_score: float | None = None
    layer_digest: str = ""


@dataclass(frozen=True)
class Secret:
    rule_id: str
    category: str = ""
    severity: str = "UNKNOWN"
    title: str = ""
    start_line: int = 0
    end_line: int = 0
    layer_digest: str = ""


@dataclass(frozen=True)
class Result:
    target: str
    class_: str = ""
    type: str = ""
    vulnerabilities: tuple[Vulnerability, ...] = ()
    secrets: tuple[Secret, ...] = ()
    misconfigurations: int = 0
    licenses: int = 0


@dataclass(frozen=True)
class Report:
    artifact_name: str = ""
    artifact_type: str = ""
    schema_version: int = 2
    trivy_version: str = ""
    created_at: str = ""
    os_family: str = ""
    os_name: str = ""
    eosl: bool = False
    image_id: str = ""
    repo_digests: tuple[str, ...] = ()
    results: tuple[Result, ...] = field(default_factory=tuple)

    @property
    def os(self) -> str:
        return f"{self.os_family} {self.os_name}".strip()

    def vulnerabilities(self) -> list[tuple[Result, Vulnerability]]:
        return [(r, v) for r in self.results for v in r.vulnerabilities]

    def secrets(self) -> list[tuple[Result, Secret]]:
        return [(r, s) for r in self.results for s in r.secrets]


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(d: Mapping[str, Any], key: str) -> str:
    v = d.get(key)
    return "" if v is None else str(v)


def _severity(value: Any) -> str:
    s = str(value or "").upper()
    return s if s in SEVERITIES else "UNKNOWN"   # empty severity is UNKNOWN, as Trivy treats it


def _status(v: Mapping[str, Any]) -> str:
    """The report's string status; absent means 'unknown' (zero value), or 'fixed' when a fix is
    named (reports from Trivy releases before statuses existed)."""
    raw = v.get("Status")
    if isinstance(raw, str) and raw in STATUSES:
        return raw
    if isinstance(raw, int) and 0 <= raw < len(STATUSES):
        return STATUSES[raw]
    return "fixed" if v.get("FixedVersion") else "unknown"


def _v3_score(v: Mapping[str, Any]) -> float | None:
    cvss = v.get("CVSS") or {}
    if not isinstance(cvss, dict):
        return None
    order = [v.get("SeveritySource") or "", "nvd", *sorted(cvss)]
    for source in order:
        entry = cvss.get(source)
        if isinstance(entry, dict) and isinstance(entry.get("V3Score"), (int, float)):
            return float(entry["V3Score"])
    return None


def _vuln(v: Mapping[str, Any]) -> Vulnerability:
    if not isinstance(v, dict) or not v.get("VulnerabilityID"):
        raise ReportError("a vulnerability without VulnerabilityID")
    ident = v.get("PkgIdentifier") or {}
    return Vulnerability(
        id=_str(v, "VulnerabilityID"), pkg_name=_str(v, "PkgName"), installed=_str(v, "InstalledVersion"),
        fixed=_str(v, "FixedVersion"), severity=_severity(v.get("Severity")), status=_status(v),
        pkg_id=_str(v, "PkgID"), pkg_path=_str(v, "PkgPath"),
        purl=_str(ident, "PURL") if isinstance(ident, dict) else "",
        title=_str(v, "Title"), description=_str(v, "Description"), primary_url=_str(v, "PrimaryURL"),
        severity_source=_str(v, "SeveritySource"),
        data_source=_str(v.get("DataSource") or {}, "ID") if isinstance(v.get("DataSource"), dict) else "",
        references=tuple(str(x) for x in v.get("References") or ()),
        cwe_ids=tuple(str(x) for x in v.get("CweIDs") or ()), cvss_v3_score=_v3_score(v),
        layer_digest=_str(v.get("Layer") or {}, "Digest") if isinstance(v.get("Layer"), dict) else "")


def _secret(s: Mapping[str, Any]) -> Secret:
    if not isinstance(s, dict):
        raise ReportError("a secret finding that is not an object")
    return Secret(rule_id=_str(s, "RuleID") or "secret", category=_str(s, "Category"),
                  severity=_severity(s.get("Severity")), title=_str(s, "Title"),
                  start_line=int(s.get("StartLine") or 0), end_line=int(s.get("EndLine") or 0),
                  layer_digest=_str(s.get("Layer") or {}, "Digest") if isinstance(s.get("Layer"), dict) else "")


def parse_report(data: bytes | str | Mapping[str, Any]) -> Report:
    """Trivy's ``-f json`` report (any release with SchemaVersion 2). Absent keys are normal."""
    if isinstance(data, (bytes, str)):
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ReportError(f"not JSON ({exc})") from None
    else:
        doc = data
    if not isinstance(doc, dict):
        raise ReportError("not a JSON object")
    if "SchemaVersion" not in doc and "Results" not in doc and "ArtifactName" not in doc:
        raise ReportError("no SchemaVersion, ArtifactName or Results: not a Trivy JSON report")
    if doc.get("SchemaVersion", 2) != 2:
        raise ReportError(f"SchemaVersion {doc.get('SchemaVersion')} (only 2 is understood)")
    results = doc.get("Results") or []
    if not isinstance(results, list):
        raise ReportError("Results is not a list")
    parsed: list[Result] = []
    for r in results:
        if not isinstance(r, dict):
            raise ReportError("a result that is not an object")
        parsed.append(Result(
            target=_str(r, "Target"), class_=_str(r, "Class"), type=_str(r, "Type"),
            vulnerabilities=tuple(_vuln(v) for v in r.get("Vulnerabilities") or ()),
            secrets=tuple(_secret(s) for s in r.get("Secrets") or ()),
            misconfigurations=len(r.get("Misconfigurations") or ()), licenses=len(r.get("Licenses") or ())))
    meta = _obj(doc.get("Metadata"))
    os_ = _obj(meta.get("OS"))
    trivy = _obj(doc.get("Trivy"))
    return Report(
        artifact_name=_str(doc, "ArtifactName"), artifact_type=_str(doc, "ArtifactType"),
        schema_version=int(doc.get("SchemaVersion") or 2),
        trivy_version=_str(trivy, "Version"),
        created_at=_str(doc, "CreatedAt"), os_family=_str(os_, "Family"), os_name=_str(os_, "Name"),
        eosl=bool(os_.get("EOSL")), image_id=_str(meta, "ImageID"),
        repo_digests=tuple(str(x) for x in meta.get("RepoDigests") or ()),
        results=tuple(parsed))

