"""The scan stage and `pipeline scan` with Trivy and the registries faked (real recorded reports)."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipeline import config
from pipeline.access import registries as registries_mod
from pipeline.build.build import BuildOutput
from pipeline.cli import main
from pipeline.context import Context
from pipeline.errors import PolicyError, ToolError
from pipeline.metadata.ci import CIInfo
from pipeline.plan import RELEASE, Runner
from pipeline.scan import scan as scan_stage
from pipeline.stages.tag import unmet_gates
from pipeline.tools import trivy
from tests.support.fakeaccess import fake_access
from tests.support.layouts import image_layout, root_of

DATA = Path(__file__).resolve().parents[1] / "data" / "trivy"


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Staging holds an index whose arm64 image has CVE-2099-0001 (recorded real Trivy reports)."""
    scans: list[tuple[str, dict]] = []
    cache = tmp_path / "trivy-cache"
    layout, index = image_layout(tmp_path / "layout")
    platforms = layout.platforms(index)
    reports = {platforms["linux/amd64"]: (DATA / "image" / "linux-amd64.json").read_bytes(),
               platforms["linux/arm64"]: (DATA / "image" / "linux-arm64.json").read_bytes()}

    def fake_scan(view, **kw):
        scans.append((root_of(view), kw))
        return reports[root_of(view)]

    db = trivy.DBInfo(str(cache), 2, "2026-11-01T00:00:00Z", "2099-01-01T00:00:00Z", "", 100, "mirror")
    monkeypatch.setattr(registries_mod, "Access", fake_access())    # what ctx.registry_access() makes
    monkeypatch.setattr(scan_stage.scandb, "prepare", lambda cfg, env, access: db)
    monkeypatch.setattr(scan_stage.trivy, "scan", fake_scan)
    monkeypatch.setattr(scan_stage.trivy, "version", lambda remember=None: "0.59.1")

    def make(scan: dict | None = None, files: dict[str, str] | None = None, env: dict | None = None) -> Context:
        for name, text in (files or {}).items():
            (tmp_path / name).write_text(text)
        data = {"image": {"name": "app", "platforms": ["linux/amd64", "linux/arm64"]},
                "registries": [{"name": "stage", "url": "127.0.0.1:5000", "auth": "none"}],
                "scan": {"exceptions_file": str(tmp_path / "exceptions.toml"), "cache_dir": str(cache),
                         **(scan or {})},
                "sign": {"enabled": False}, "report": {"dir": str(tmp_path / "dist")}}
        ctx = Context(config=config.parse(data), ci=CIInfo("github", "tag", "push", "refs/tags/v1.2.3", "a" * 40),
                      env=env or {}, now=datetime(2026, 1, 1, tzinfo=timezone.utc), progress=lambda line: None)
        ctx.outputs["build"] = BuildOutput("stage", "staging/app", index, platforms, "k", "candidate-x", False,
                                           layout=str(layout.path))
        return ctx

    make.scans = scans          # type: ignore[attr-defined]
    make.platforms = platforms  # type: ignore[attr-defined]
    make.tmp = tmp_path         # type: ignore[attr-defined]
    return make


EXCEPTION = '[[exceptions]]\nid = "CVE-2099-0001"\npackage = "musl"\nreason = "r"\nexpires = {}\n'


def test_a_vulnerability_on_arm64_only_fails_the_gate_naming_cve_package_platform(world):
    ctx = world({"fail_on": "HIGH", "max_allowed": {"CRITICAL": 1}})
    with pytest.raises(PolicyError) as exc:
        scan_stage.Scan().run(ctx)
    msg = str(exc.value)
    assert exc.value.exit_code == 1
    assert msg.startswith("scan gate failed: linux/arm64: CVE-2099-0001 (HIGH) in musl 1.2.4-r2, fixed in"
                          " 1.2.4-r99 (reports in ")
    assert "linux/amd64" not in msg
    gate = ctx.outputs["scan_gate"]
    assert gate.verdict == "fail" and gate.platforms["linux/amd64"].verdict == "pass"
    assert "scan" not in ctx.outputs and "scan (did not pass)" in unmet_gates(ctx)


def test_every_platform_is_scanned_from_its_own_view_of_the_local_image_without_registry_access(world):
    ctx = world({"fail_on": "CRITICAL", "max_allowed": {"CRITICAL": 1}})
    out = scan_stage.Scan().run(ctx)
    assert [digest for digest, _ in world.scans] == [world.platforms["linux/amd64"], world.platforms["linux/arm64"]]
    kw = world.scans[0][1]
    assert "env" not in kw and "insecure" not in kw   # nothing to reach: no credentials, no registry flags
    assert out.verdict == "pass" and set(out.platforms) == {"linux/amd64", "linux/arm64"}


def test_a_rerelease_does_not_rescan(world):
    ctx = world({"fail_on": "CRITICAL", "max_allowed": {"CRITICAL": 1}})
    scan_stage.Scan().run(ctx)
    out = scan_stage.Scan().run(world({"fail_on": "CRITICAL", "max_allowed": {"CRITICAL": 1}}))
    assert len(world.scans) == 2 and all(p.cached for p in out.platforms.values())


def test_unexpired_exception_passes_and_is_listed_expired_one_fails_naming_it(world):
    scan = {"fail_on": "HIGH", "ignore_statuses": ["affected"], "max_allowed": {"CRITICAL": 1}}
    out = scan_stage.Scan().run(world(scan, {"exceptions.toml": EXCEPTION.format("2099-01-01")}))
    arm = out.platforms["linux/arm64"]
    assert arm.verdict == "pass"
    assert [s["by"] for s in arm.suppressed if s["id"] == "CVE-2099-0001"] == ["exception:CVE-2099-0001"]
    with pytest.raises(PolicyError) as exc:
        scan_stage.Scan().run(world(scan, {"exceptions.toml": EXCEPTION.format("2020-01-01")}))
    assert "linux/arm64: CVE-2099-0001 (HIGH) in musl" in str(exc.value)
    assert "exception for CVE-2099-0001 expired on 2020-01-01" in str(exc.value)


def test_reports_are_written_and_the_step_summary_appended(world):
    summary = world.tmp / "summary.md"
    ctx = world(env={"GITHUB_STEP_SUMMARY": str(summary)})
    with pytest.raises(PolicyError):
        scan_stage.Scan().run(ctx)
    dist = world.tmp / "dist" / "scan"
    assert sorted(p.name for p in dist.iterdir()) == ["gl-container-scanning-report.json", "junit.xml",
                                                      "linux-amd64.json", "linux-arm64.json", "summary.md",
                                                      "trivy.sarif", "verdict.json"]
    assert json.loads((dist / "linux-arm64.json").read_text())["ArtifactType"] == "container_image"
    assert "Scan gate: fail" in summary.read_text()


def test_a_bad_exceptions_file_is_a_config_error_before_any_scan(world):
    ctx = world(files={"exceptions.toml": '[[exceptions]]\nid = "X"\nreason = "r"\n'})
    with pytest.raises(config.ConfigError, match="exceptions.toml: exceptions\\[0\\].expires: required"):
        scan_stage.Scan().run(ctx)
    assert world.scans == []


def test_plan_describes_the_gate(world):
    ctx = world({"fail_on": "CRITICAL", "ignore_unfixed": True})
    text = scan_stage.Scan().describe(ctx)
    assert "linux/amd64, linux/arm64 by manifest digest" in text and "fail on CRITICAL and above" in text
    assert "unfixed ignored" in text and "secrets fail" in text
    assert scan_stage.Scan().skip_reason(world({"enabled": False})) == "scan.enabled = false"
    assert [s.name for s in RELEASE].index("scan") == [s.name for s in RELEASE].index("build") + 1


def test_runner_records_the_failure_with_exit_1(world):
    ctx = world()
    [result] = Runner(ctx).run((scan_stage.Scan(),))
    assert result.status == "failed" and result.exit_code == 1 and "CVE-2099-0001" in result.detail


# --------------------------------------------------------------------------- pipeline scan --report


def run(args, env=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(args, env=env or {}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write_cfg(tmp_path: Path, scan: str) -> Path:
    p = tmp_path / "pipeline.toml"
    p.write_text(f'[image]\nname = "app"\n[scan]\nexceptions_file = "{tmp_path / "none.toml"}"\n{scan}\n')
    return p


def test_report_fail_exit_1_with_the_documented_json(tmp_path):
    cfg = write_cfg(tmp_path, 'fail_on = "HIGH"\nignore_unfixed = true')
    code, out, err = run(["scan", "--report", str(DATA / "alpine" / "all.json"), "--config", str(cfg),
                          "--format", "json"])
    assert code == 1, err
    data = json.loads(out)
    assert data["verdict"] == "fail"
    assert [(b["id"], b["package"], b["severity"]) for b in data["blocking"]] == [
        ("CVE-2099-0002", "musl", "CRITICAL"), ("CVE-2099-0001", "musl", "HIGH")]
    assert set(data["blocking"][0]) == {"id", "package", "installed", "fixed", "severity", "status", "target"}
    assert data["suppressed"][0]["by"] == "ignore_unfixed"
    assert data["counts"] == {"UNKNOWN": 1, "LOW": 1, "MEDIUM": 0, "HIGH": 1, "CRITICAL": 1}


def test_report_pass_exit_0_and_text_table(tmp_path):
    cfg = write_cfg(tmp_path, 'fail_on = "CRITICAL"\nmax_allowed = { CRITICAL = 1 }')
    code, out, err = run(["scan", "--report", str(DATA / "alpine" / "all.json"), "--config", str(cfg)])
    assert code == 0, err
    assert "PASS" in out and "tolerated by max_allowed: 1" in out


def test_report_usage_errors(tmp_path):
    code, _, err = run(["scan", "--report", str(tmp_path / "missing.json"), "--config",
                        str(write_cfg(tmp_path, ""))])
    assert code == 2 and "cannot read" in err
    (tmp_path / "bad.json").write_text('{"hello": 1}')
    code, _, err = run(["scan", "--report", str(tmp_path / "bad.json"), "--config", str(write_cfg(tmp_path, ""))])
    assert code == 2 and "not a Trivy JSON report" in err
    code, _, err = run(["scan", "--report", "x.json", "--download-db"])
    assert code == 2 and "give one" in err


def test_report_config_errors_name_the_field(tmp_path):
    cfg = write_cfg(tmp_path, 'ignore_unfixed = true\nignore_statuses = ["affected"]')
    code, _, err = run(["scan", "--report", str(DATA / "alpine" / "all.json"), "--config", str(cfg)])
    assert code == 2 and "pipeline.toml: scan: set either ignore_unfixed or ignore_statuses" in err


# --------------------------------------------------------------------------- DB settings


def test_db_repositories_and_plain_http_decision():
    from pipeline.scan import db as scandb

    cfg = config.parse({"image": {"name": "app"},
                        "registries": [{"name": "corp", "url": "registry.corp:5000", "insecure": True},
                                       {"name": "gh", "url": "ghcr.io/acme"}],
                        "scan": {"db_repository": ["registry.corp:5000/mirror/trivy-db:2"]}})
    assert scandb.repositories(cfg) == ("registry.corp:5000/mirror/trivy-db:2",)
    assert scandb.insecure(cfg, "registry.corp:5000/mirror/trivy-db:2") is True
    assert scandb.insecure(cfg, "ghcr.io/aquasecurity/trivy-db:2") is False
    assert scandb.insecure(cfg, "127.0.0.1:5000/x:2") is True
    assert scandb.repositories(config.parse({"image": {"name": "app"}})) == trivy.DEFAULT_DB_REPOSITORIES
    assert scandb.cache_dir(cfg, {"HOME": "/h"}) == "/h/.cache/trivy"


def test_mirror_db_destination_must_be_a_tagged_repository(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text('[image]\nname = "app"\n')
    code, _, err = run(["scan", "--mirror-db", "localhost:5000/m/trivy-db@sha256:" + "a" * 64, "--config", str(cfg)])
    assert code == 2 and "give a tag" in err
    code, _, err = run(["scan", "--mirror-db", "Not A Ref", "--config", str(cfg)])
    assert code == 2 and "--mirror-db Not A Ref" in err


def _no_db(cfg, env, access):
    raise trivy.NoDatabaseError("no vulnerability DB: every repository failed (localhost:5000/aquasec/trivy-db:2)")


def test_no_db_stops_the_release_unless_vuln_db_is_explicitly_optional(world, monkeypatch):
    monkeypatch.setattr(scan_stage.scandb, "prepare", _no_db)
    with pytest.raises(trivy.NoDatabaseError) as exc:
        scan_stage.Scan().run(world({"fail_on": "CRITICAL"}))
    assert exc.value.exit_code == 3 and "no vulnerability DB" in str(exc.value)
    assert world.scans == []


def test_optional_vuln_db_scans_secrets_only_and_the_report_says_so(world, monkeypatch):
    from pipeline.report import markdown_summary, release_warnings

    monkeypatch.setattr(scan_stage.scandb, "prepare", _no_db)
    ctx = world({"fail_on": "CRITICAL", "max_allowed": {"CRITICAL": 1}, "vuln_db_required": False})
    out = scan_stage.Scan().run(ctx)
    assert [kw["scanners"] for _, kw in world.scans] == [("secret",), ("secret",)]
    assert out.vulnerabilities_scanned is False
    warnings = release_warnings({"scan": out})
    assert warnings and "NOT scanned" in warnings[0]
    summary = markdown_summary({"status": "ok", "image": "app", "warnings": warnings, "registries": [],
                                "stages": []})
    assert "vulnerabilities were NOT scanned" in summary


def test_a_bug_in_a_stage_fails_it_with_exit_3_and_the_report_still_runs(world, monkeypatch, tmp_path):
    """Not only PipelineErrors: any exception in a stage is a failed stage, and dist/release.json is written."""
    from pipeline.stages.report import Report

    ctx = world()
    monkeypatch.setattr(scan_stage.Scan, "run", lambda self, ctx: {}["missing"])     # a KeyError: a bug
    results = Runner(ctx).run((scan_stage.Scan(), Report()))
    scan, report = results
    assert scan.status == "failed" and scan.exit_code == 3
    assert scan.detail.startswith("internal error in the scan stage: KeyError") and "PIPELINE_DEBUG" in scan.detail
    assert report.status == "ok" and (ctx.dist / "release.json").is_file()


def test_a_gate_that_scanned_nothing_fails(world):
    """An index whose entries are all filtered out (attestations only) reaches the gate with no platform."""
    import dataclasses

    ctx = world()
    ctx.outputs["build"] = dataclasses.replace(ctx.outputs["build"], platforms={})
    with pytest.raises(ToolError, match="a gate that scanned nothing cannot pass"):
        scan_stage.Scan().run(ctx)
    assert world.scans == []
