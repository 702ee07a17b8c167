"""OpenVEX export of the exceptions and VEX input to the gate; exceptions that are about to lapse."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest

from pipeline.errors import ConfigError
from pipeline.scan import vex
from pipeline.scan.policy import Finding, Policy, ScanException, evaluate

MUSL = "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=3.19.1"
MUSL_ANY = "pkg:apk/alpine/musl?arch=x86_64&distro=3.19.1"
DIGEST = "sha256:" + "d" * 64


def finding(id_: str = "CVE-2099-0001", purl: str = MUSL, severity: str = "HIGH") -> Finding:
    return Finding(id_, "musl", "1.2.4-r2", "1.2.4-r99", severity, "fixed", "alpine 3.19.1", purl=purl)


EXC = ScanException("CVE-2099-0001", "not reachable: no DNS in this image", date(2099, 1, 1), package="musl",
                    owner="qa", source="config/scan-exceptions.toml#0")
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def test_export_names_the_packages_trivy_found_the_image_and_the_expiry():
    doc = vex.export([EXC], [finding(), finding("CVE-2099-0002")], [vex.image_purl("team/app", DIGEST, "ghcr.io")],
                     NOW)
    assert doc["@context"] == "https://openvex.dev/ns/v0.2.0" and doc["timestamp"] == "2026-12-01T00:00:00Z"
    (st,) = doc["statements"]
    assert st["vulnerability"] == {"name": "CVE-2099-0001"} and st["status"] == "not_affected"
    assert st["impact_statement"] == EXC.reason
    assert {"@id": MUSL_ANY} in st["products"]              # the package, every version of it
    image = next(p for p in st["products"] if p["@id"].startswith("pkg:oci/"))
    assert image["@id"] == "pkg:oci/app@sha256%3A" + "d" * 64 + "?repository_url=ghcr.io/team/app"
    assert image["subcomponents"] == [{"@id": MUSL_ANY}]
    assert "expires=2099-01-01" in st["status_notes"] and "owner=qa" in st["status_notes"]
    # the same exceptions give the same document id (stable diffs when committed)
    assert vex.export([EXC], [finding()], [], NOW)["@id"] == vex.export([EXC], [finding()], [], NOW)["@id"]


def test_exported_document_fed_back_suppresses_the_same_finding_until_it_lapses():
    text = json.dumps(vex.export([EXC], [finding()], [], NOW))
    statements = vex.parse(text, "exceptions.vex.json")
    policy = Policy(vex=(statements,))
    v = evaluate([finding()], policy, NOW)
    assert v.passed and v.suppressed[0].by == "vex:exceptions.vex.json#0"
    assert v.suppressed[0].reason == EXC.reason
    assert not evaluate([finding()], policy, datetime(2099, 1, 2, tzinfo=timezone.utc)).passed   # lapsed
    assert not evaluate([finding("CVE-2099-0009")], policy, NOW).passed                        # another CVE
    other = finding(purl="pkg:apk/alpine/openssl@3.1.4-r0?arch=x86_64&distro=3.19.1")
    assert not evaluate([other], policy, NOW).passed                                          # another package


def test_vex_statuses_aliases_and_image_products():
    doc = {"@context": vex.CONTEXT, "statements": [
        {"vulnerability": {"name": "GHSA-xxxx", "aliases": ["CVE-2099-0001"]}, "status": "not_affected",
         "justification": "vulnerable_code_not_in_execute_path", "products": [{"@id": "pkg:apk/alpine/musl"}]},
        {"vulnerability": {"name": "CVE-2099-0003"}, "status": "affected", "products": [{"@id": MUSL}]},
        {"vulnerability": {"name": "CVE-2099-0004"}, "status": "fixed",
         "products": [{"@id": f"pkg:oci/app@{DIGEST}"}]},
    ]}
    policy = Policy(vex=(vex.parse(json.dumps(doc), "team.vex.json"),))
    v = evaluate([finding()], policy, NOW)                        # by alias, version-less purl
    assert v.passed and v.suppressed[0].reason == "vulnerable code not in execute path"
    assert not evaluate([finding("CVE-2099-0003")], policy, NOW).passed   # affected: still blocks
    assert evaluate([finding("CVE-2099-0004")], policy, NOW, (DIGEST,)).passed   # the whole image, by digest
    assert not evaluate([finding("CVE-2099-0004")], policy, NOW, ("sha256:" + "e" * 64,)).passed


@pytest.mark.parametrize("text, where", [
    ("{", "not JSON"),
    ('{"statements": []}', "not an OpenVEX document"),
    (json.dumps({"@context": vex.CONTEXT, "statements": [{"status": "fixed"}]}), "statements[0].vulnerability.name"),
    (json.dumps({"@context": vex.CONTEXT, "statements": [{"vulnerability": {"name": "X"}, "status": "fine"}]}),
     "statements[0].status"),
])
def test_bad_vex_documents_name_the_file_and_the_field(text, where):
    with pytest.raises(ConfigError, match=f"team.vex.json: .*{where.replace('[', '.').replace(']', '.')}"):
        vex.parse(text, "team.vex.json")


def test_an_exception_in_use_close_to_its_expiry_is_said():
    soon = ScanException("CVE-2099-0001", "r", date(2026, 12, 10), source="x#0")
    later = ScanException("CVE-2099-0002", "r", date(2027, 6, 1), source="x#1")
    v = evaluate([finding(), finding("CVE-2099-0002")], Policy(exceptions=(soon, later), warn_days=14), NOW)
    assert v.passed and [e.id for e in v.expiring] == ["CVE-2099-0001"]
    assert evaluate([finding()], Policy(exceptions=(soon,), warn_days=0), NOW).expiring == ()
    unused = evaluate([], Policy(exceptions=(soon,), warn_days=14), NOW)
    assert unused.expiring == ()                  # only exceptions a release depends on


def test_conflicting_statements_are_decided_as_trivy_decides():
    def doc(*statements):
        return vex.parse(json.dumps({"@context": vex.CONTEXT, "timestamp": "2026-01-01T00:00:00Z",
                                     "statements": list(statements)}), "d.json")
    ok = {"vulnerability": {"name": "CVE-2099-0001"}, "status": "not_affected", "products": [{"@id": MUSL}]}
    bad = {**ok, "status": "affected"}
    assert evaluate([finding()], Policy(vex=(doc(ok, bad),)), NOW).passed         # equal times: the first wins
    assert not evaluate([finding()], Policy(vex=(doc(bad, ok),)), NOW).passed
    newer = {**ok, "timestamp": "2026-06-01T00:00:00Z"}
    assert evaluate([finding()], Policy(vex=(doc(bad, newer),)), NOW).passed      # the newest wins
    assert evaluate([finding()], Policy(vex=(doc(bad), doc(ok))), NOW).passed     # any document may suppress


def test_a_vendor_statement_about_another_image_does_not_cover_ours():
    doc = {"@context": vex.CONTEXT, "statements": [
        {"vulnerability": {"name": "CVE-2099-0001"}, "status": "not_affected",
         "products": [{"@id": f"pkg:oci/nginx@{DIGEST}", "subcomponents": [{"@id": "pkg:apk/alpine/musl"}]}]}]}
    policy = Policy(vex=(vex.parse(json.dumps(doc), "vendor.vex.json"),))
    assert not evaluate([finding()], policy, NOW, ("sha256:" + "e" * 64,)).passed    # not our image
    assert evaluate([finding()], policy, NOW, (DIGEST,)).passed                     # that image, that package
    other = finding(purl="pkg:apk/alpine/openssl@3.1.4-r0?arch=x86_64")
    assert not evaluate([other], policy, NOW, (DIGEST,)).passed                     # not a listed package


def test_newest_by_vulnerability_name_then_time_as_go_vex_sorts():
    doc = {"@context": vex.CONTEXT, "timestamp": "2026-01-01T00:00:00Z", "statements": [
        {"vulnerability": {"name": "GHSA-xxxx", "aliases": ["CVE-2099-0001"]}, "status": "affected",
         "timestamp": "2026-01-01T00:00:00Z", "products": [{"@id": MUSL}]},
        {"vulnerability": {"name": "CVE-2099-0001"}, "status": "not_affected", "timestamp": "2026-06-01T00:00:00Z",
         "products": [{"identifiers": {"purl": MUSL}}]}]}
    # sorted by name first: GHSA-… sorts after CVE-…, so Trivy takes the older "affected" one
    assert not evaluate([finding()], Policy(vex=(vex.parse(json.dumps(doc), "d.json"),)), NOW).passed


def test_a_bad_timestamp_is_refused_as_trivy_refuses_it():
    doc = {"@context": vex.CONTEXT, "statements": [
        {"vulnerability": {"name": "CVE-1"}, "status": "fixed", "timestamp": "yesterday", "products": [MUSL]}]}
    with pytest.raises(ConfigError, match=r"statements\[0\]\.timestamp: 'yesterday' is not an RFC 3339 time"):
        vex.parse(json.dumps(doc), "d.json")
