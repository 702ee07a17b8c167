"""Every CI's report from one scan: terminal table, markdown, SARIF 2.1.0, GitLab, JUnit, JSON files.

Pure builders (``table``, ``markdown``, ``sarif``, ``gitlab``, ``junit``) over
:class:`PlatformResult`; :func:`write_all` puts them under ``dist/scan/``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.refs import platform_key
from pipeline.scan.policy import Finding, Suppressed, Verdict, findings
from pipeline.scan.results import Report, Vulnerability
from pipeline.tools.trivy import SEVERITIES

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
GITLAB_VERSION = "15.0.7"
TRIVY_URI = "https://github.com/aquasecurity/trivy"
LEVELS = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "note", "UNKNOWN": "note"}
SCORES = {"CRITICAL": 9.5, "HIGH": 8.0, "MEDIUM": 5.5, "LOW": 2.0, "UNKNOWN": 0.0}   # Trivy's sarif.go
NS = uuid.UUID("5d0f3c1e-8a59-4d5e-9a0c-3f1c9b6a7e21")


@dataclass(frozen=True)
class PlatformResult:
    platform: str
    image: str                # registry/repo@sha256:<platform manifest>
    report: Report
    verdict: Verdict
    cached: bool = False

    @property
    def key(self) -> str:
        return platform_key(self.platform)

    def details(self) -> dict[tuple[str, str, str, str], Vulnerability]:
        """(id, package, installed, target) → Trivy's vulnerability (title, description, links)."""
        return {(v.id, v.pkg_name, v.installed, r.target): v for r, v in self.report.vulnerabilities()}

    def allowed(self) -> list[Finding]:
        """Unsuppressed findings that do not block (below the threshold or tolerated)."""
        gone = {_fid(s.finding) for s in self.verdict.suppressed} | {_fid(f) for f in self.verdict.blocking}
        return [f for f in findings(self.report) if _fid(f) not in gone]


def _fid(f: Finding) -> tuple[str, str, str, str, str]:
    return (f.kind, f.id, f.package, f.installed, f.target)


def overall(results: Sequence[PlatformResult]) -> str:
    return "fail" if any(not r.verdict.passed for r in results) else "pass"


# --------------------------------------------------------------------------- human


def _finding_line(f: Finding) -> str:
    if f.kind == "secret":
        return f"{f.severity} {f.id} (secret) in {f.target}"
    fixed = f"fixed in {f.fixed}" if f.fixed else "no fix"
    return f"{f.severity} {f.id} in {f.package} {f.installed} ({fixed}) [{f.target}]"


def failure_message(results: Sequence[PlatformResult], limit: int = 5) -> str:
    """One line naming what blocks, per platform, and any expired exception."""
    parts: list[str] = []
    for r in results:
        if r.verdict.passed:
            continue
        shown = [f"{f.id} ({f.severity}) in {f.package or f.target}"
                 + (f" {f.installed}" if f.installed else "") + (f", fixed in {f.fixed}" if f.fixed else "")
                 for f in r.verdict.blocking[:limit]]
        more = len(r.verdict.blocking) - limit
        text = f"{r.platform}: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        for e in r.verdict.expired:
            text += f"; exception for {e.id} expired on {e.expires.isoformat()} ({e.source})"
        parts.append(text)
    return "scan gate failed: " + " | ".join(parts)


def table(results: Sequence[PlatformResult]) -> str:
    """The terminal view: per platform, counts, blocking findings, exceptions used and their expiry."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    buf = StringIO()
    console = Console(file=buf, width=130, no_color=True, highlight=False)
    for r in results:
        v = r.verdict
        counts = "  ".join(f"{s} {v.counts.get(s, 0)}" for s in reversed(SEVERITIES))
        cached = " (cached scan)" if r.cached else ""
        console.print(f"{r.platform}: {v.verdict.upper()}  {r.image}  {r.report.os or 'no OS detected'}{cached}")
        console.print(f"  findings: {counts}  secrets {v.secrets}  suppressed {len(v.suppressed)}")
        if v.blocking:
            t = Table(title=f"blocking on {r.platform}", title_justify="left")
            for col in ("severity", "id", "package", "installed", "fixed", "target"):
                t.add_column(col)
            for f in v.blocking:
                t.add_row(f.severity, f.id, f.package or "(secret)", f.installed, f.fixed or "-", f.target)
            console.print(t)
        used = [s for s in v.suppressed if s.by.startswith("exception:")]
        for s in used:
            console.print(f"  exception {s.finding.id} ({s.finding.package}) until {s.expires}: {s.reason}")
        for e in v.expiring:
            console.print(f"  EXPIRING exception {e.id} on {e.expires.isoformat()} ({e.source}): it blocks from then on")
        for s in (s for s in v.suppressed if s.by.startswith("vex:")):
            console.print(f"  VEX {s.finding.id} ({s.finding.package}) by {s.by[4:]}: {s.reason}")
        for e in v.expired:
            console.print(f"  EXPIRED exception {e.id} (expired {e.expires.isoformat()}, {e.source}): {e.reason}")
        if v.tolerated:
            console.print(f"  tolerated by max_allowed: {len(v.tolerated)}")
    return buf.getvalue().rstrip()


def markdown(results: Sequence[PlatformResult]) -> str:
    status = overall(results)
    lines = [f"## {'✅' if status == 'pass' else '❌'} Scan gate: {status}", ""]
    lines += ["| platform | verdict | " + " | ".join(reversed(SEVERITIES)) + " | secrets | suppressed |",
              "|---|---|" + "---|" * (len(SEVERITIES) + 2)]
    for r in results:
        v = r.verdict
        lines.append(f"| {r.platform} | {v.verdict} | " + " | ".join(str(v.counts.get(s, 0)) for s in
                                                                    reversed(SEVERITIES))
                     + f" | {v.secrets} | {len(v.suppressed)} |")
    for r in results:
        v = r.verdict
        if v.blocking:
            lines += ["", f"### Blocking on {r.platform}", "",
                      "| severity | id | package | installed | fixed | target |", "|---|---|---|---|---|---|"]
            lines += [f"| {f.severity} | {f.id} | {f.package or '(secret)'} | {f.installed} | {f.fixed or '–'} |"
                      f" {f.target} |" for f in v.blocking]
        used = [s for s in v.suppressed if s.by.startswith("exception:")]
        by_vex = [s for s in v.suppressed if s.by.startswith("vex:")]
        if used or v.expired or by_vex:
            lines += ["", f"### Exceptions on {r.platform}", ""]
            lines += [f"- `{s.finding.id}` ({s.finding.package}) until {s.expires}: {s.reason}" for s in used]
            lines += [f"- **expires soon** `{e.id}` on {e.expires.isoformat()} ({e.source})" for e in v.expiring]
            lines += [f"- **expired** `{e.id}` on {e.expires.isoformat()} ({e.source}): {e.reason}"
                      for e in v.expired]
            lines += [f"- VEX `{s.finding.id}` ({s.finding.package}) by {s.by[4:]}: {s.reason}" for s in by_vex]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- SARIF 2.1.0


def _rule(f: Finding, v: Vulnerability | None) -> dict[str, Any]:
    title = (v.title if v else f.title) or f.id
    rule: dict[str, Any] = {
        "id": f.id, "name": "SecretFinding" if f.kind == "secret" else "ContainerImageVulnerability",
        "shortDescription": {"text": title[:1000]},
        "fullDescription": {"text": ((v.description if v else "") or title)[:4000]},
        "defaultConfiguration": {"level": LEVELS.get(f.severity, "note")},
        "help": {"text": f"{f.kind} {f.id}: {title}", "markdown": f"**{f.kind} {f.id}**: {title}"},
        "properties": {"precision": "very-high", "security-severity": str(
            v.cvss_v3_score if v and v.cvss_v3_score is not None else SCORES.get(f.severity, 0.0)),
            "tags": [f.kind, "security", f.severity]},
    }
    if v and v.primary_url:
        rule["helpUri"] = v.primary_url
    return rule


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def sarif(results: Sequence[PlatformResult], *, artifact_uri: str = "Dockerfile",
          trivy_version: str = "") -> dict[str, Any]:
    """One run (Trivy as the tool), one result per finding and platform; suppressed ones carry a suppression."""
    rules: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []

    def add(r: PlatformResult, f: Finding, gate: str, s: Suppressed | None) -> None:
        v = r.details().get((f.id, f.package, f.installed, f.target))
        if f.id not in rules:
            rules[f.id] = _rule(f, v)
        text = (f"{f.kind} {f.id} ({f.severity}) in {f.package or f.target}"
                + (f" {f.installed}" if f.installed else "") + (f", fixed in {f.fixed}" if f.fixed else "")
                + f" on {r.platform} ({r.image}); gate: {gate}")
        res: dict[str, Any] = {
            "ruleId": f.id, "ruleIndex": list(rules).index(f.id), "level": LEVELS.get(f.severity, "note"),
            "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": artifact_uri},
                                                "region": {"startLine": 1, "startColumn": 1, "endLine": 1,
                                                           "endColumn": 1}},
                           "message": {"text": f"{r.image}: {f.target}"}}],
            "partialFingerprints": {"pipelineFinding/v1": _fingerprint(r.platform, f.kind, f.id, f.package,
                                                                        f.installed, f.target)},
            "properties": {"platform": r.platform, "image": r.image, "package": f.package, "installed": f.installed,
                           "fixed": f.fixed, "status": f.status, "target": f.target, "gate": gate},
        }
        if s is not None:
            res["suppressions"] = [{"kind": "external", "status": "accepted",
                                    "justification": f"{s.by}: {s.reason}".rstrip(": ")[:1000]}]
        out.append(res)

    for r in results:
        for f in r.verdict.blocking:
            add(r, f, "blocking", None)
        for f in r.allowed():
            add(r, f, "allowed", None)
        for s in r.verdict.suppressed:
            add(r, s.finding, "suppressed", s)
    driver: dict[str, Any] = {"name": "Trivy", "fullName": "Trivy Vulnerability Scanner",
                              "informationUri": TRIVY_URI, "rules": list(rules.values())}
    if trivy_version:
        driver["version"] = trivy_version
    run: dict[str, Any] = {
        "tool": {"driver": driver}, "results": out, "columnKind": "utf16CodeUnits",
        "automationDetails": {"id": "pipeline-scan-gate/"},
        "properties": {"verdict": overall(results),
                       "platforms": {r.platform: {"image": r.image, "verdict": r.verdict.verdict} for r in results}},
    }
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


# --------------------------------------------------------------------------- GitLab container scanning


def _gl_time(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _identifier(vid: str, url: str) -> dict[str, str]:
    kind = vid.split("-", 1)[0].lower() if "-" in vid else "trivy"
    out = {"type": kind or "trivy", "name": vid, "value": vid}
    if url.startswith(("http://", "https://")):
        out["url"] = url
    return out


def gitlab(results: Sequence[PlatformResult], *, start: datetime, end: datetime,
           trivy_version: str = "") -> dict[str, Any]:
    """GitLab's container-scanning report (schema 15.0.x): unsuppressed vulnerabilities of every platform."""
    vulns: list[dict[str, Any]] = []
    for r in results:
        details = r.details()
        for f in [*r.verdict.blocking, *r.allowed()]:
            if f.kind != "vulnerability":
                continue
            v = details.get((f.id, f.package, f.installed, f.target))
            entry: dict[str, Any] = {
                "id": str(uuid.uuid5(NS, "|".join((r.platform, f.id, f.package, f.installed, f.target)))),
                "name": ((v.title if v else "") or f.id)[:255],
                "description": ((v.description if v else "") or (v.title if v else "") or f.id)[:1048576],
                "severity": f.severity.capitalize(),
                "solution": f"Upgrade {f.package} to {f.fixed}" if f.fixed else "No solution provided",
                "identifiers": [_identifier(f.id, v.primary_url if v else "")],
                "location": {"dependency": {"package": {"name": f.package}, "version": f.installed},
                             "operating_system": r.report.os or "Unknown", "image": r.image},
            }
            links = [{"url": u} for u in (v.references if v else ()) if u.startswith(("http://", "https://"))]
            if links:
                entry["links"] = links[:20]
            vulns.append(entry)
    scanner_version = trivy_version or "unknown"
    return {
        "version": GITLAB_VERSION,
        "scan": {
            "analyzer": {"id": "pipeline-scan-gate", "name": "pipeline scan gate", "version": __version__,
                         "vendor": {"name": "pipeline"}},
            "scanner": {"id": "trivy", "name": "Trivy", "version": scanner_version, "url": TRIVY_URI,
                        "vendor": {"name": "Aqua Security"}},
            "type": "container_scanning", "start_time": _gl_time(start), "end_time": _gl_time(end),
            "status": "success",
        },
        "vulnerabilities": vulns,
    }


# --------------------------------------------------------------------------- JUnit


def _case(suite: ET.Element, r: PlatformResult, f: Finding) -> ET.Element:
    name = f"{f.id} {f.package} {f.installed}".strip() if f.kind == "vulnerability" else f"{f.id} (secret)"
    return ET.SubElement(suite, "testcase", classname=f"scan.{r.key}.{f.target}", name=name, time="0")


def junit(results: Sequence[PlatformResult]) -> str:
    """One testsuite per platform, one testcase per finding: failure = blocking, skipped = suppressed.

    A platform without any finding gets one passing "no findings" testcase, so CI
    systems that reject empty reports (Jenkins) still read it.
    """
    root = ET.Element("testsuites", name="pipeline scan gate")
    total = fails = skips = 0
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=f"scan {r.platform}")
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="image", value=r.image)
        ET.SubElement(props, "property", name="verdict", value=r.verdict.verdict)
        cases = 0
        failures = skipped = 0

        for f in r.verdict.blocking:
            el = _case(suite, r, f)
            fail = ET.SubElement(el, "failure", type=f.severity, message=_finding_line(f))
            fail.text = _finding_line(f)
            cases += 1
            failures += 1
        for f in r.allowed():
            el = _case(suite, r, f)
            ET.SubElement(el, "system-out").text = f"allowed by policy: {_finding_line(f)}"
            cases += 1
        for s in r.verdict.suppressed:
            el = _case(suite, r, s.finding)
            why = f"suppressed by {s.by}" + (f": {s.reason}" if s.reason else "") + (
                f" (until {s.expires})" if s.expires else "")
            ET.SubElement(el, "skipped", message=why)
            cases += 1
            skipped += 1
        if cases == 0:
            ET.SubElement(suite, "testcase", classname=f"scan.{r.key}", name="no findings", time="0")
            cases = 1
        suite.set("tests", str(cases))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", str(skipped))
        total, fails, skips = total + cases, fails + failures, skips + skipped
    root.set("tests", str(total))
    root.set("failures", str(fails))
    root.set("errors", "0")
    root.set("skipped", str(skips))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- files


def verdict_document(results: Sequence[PlatformResult], db: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"verdict": overall(results), "db": db or {},
            "platforms": {r.platform: {"image": r.image, "os": r.report.os, "cached": r.cached,
                                       **r.verdict.to_dict()} for r in results}}


def write_all(dest: Path, results: Sequence[PlatformResult], raw: dict[str, bytes], *, start: datetime,
              end: datetime, db: dict[str, Any] | None = None, artifact_uri: str = "Dockerfile",
              trivy_version: str = "") -> dict[str, str]:
    """Write every report under ``dest`` (``dist/scan``); returns {kind: path}."""
    dest.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}

    def put(kind: str, name: str, text: str) -> None:
        path = dest / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths[kind] = str(path)

    for r in results:
        if r.platform in raw:
            put(f"trivy:{r.platform}", f"{r.key}.json", raw[r.platform].decode())
    put("verdict", "verdict.json", json.dumps(verdict_document(results, db), indent=2) + "\n")
    put("sarif", "trivy.sarif", json.dumps(sarif(results, artifact_uri=artifact_uri,
                                                 trivy_version=trivy_version), indent=2) + "\n")
    put("gitlab", "gl-container-scanning-report.json",
        json.dumps(gitlab(results, start=start, end=end, trivy_version=trivy_version), indent=2) + "\n")
    put("junit", "junit.xml", junit(results))
    put("markdown", "summary.md", markdown(results))
    return paths
