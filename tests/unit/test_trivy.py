"""Trivy boundary: argv by equality, the report parser on recorded real reports, DB handling, scan cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import ToolError
from pipeline.scan import results
from pipeline.tools import proc, trivy

DATA = Path(__file__).resolve().parents[1] / "data" / "trivy"
IMAGE = "127.0.0.1:5000/app@sha256:" + "a" * 64


# --------------------------------------------------------------------------- argv


def test_scan_argv_scans_a_local_layout_with_no_network_and_no_exit_code_or_severity():
    argv = trivy.scan_argv("images/reg/app@sha256:" + "a" * 64, cache_dir="/c", output="/o/r.json",
                           timeout_seconds=300)
    assert argv == ["trivy", "image", "--input", "images/reg/app@sha256:" + "a" * 64, "--format", "json",
                    "--output", "/o/r.json", "--cache-dir", "/c", "--skip-db-update", "--skip-java-db-update",
                    "--offline-scan", "--scanners", "vuln,secret", "--timeout", "300s", "--no-progress"]
    assert not any(a.startswith(("--exit-code", "--severity", "-s", "--ignore", "--image-src", "--insecure",
                                 "--db-repository", "--java-db-repository")) for a in argv)


def test_scan_argv_optional_flags_only_where_this_trivy_has_them():
    argv = trivy.scan_argv("v", cache_dir="/c", output="/o", supported=frozenset({"--skip-version-check"}))
    assert argv[-1] == "--skip-version-check" and "--disable-telemetry" not in argv


def test_sbom_argv_is_cyclonedx_of_a_local_layout_and_never_downloads_a_db():
    """The JAR analyzer runs for SBOM formats: without the skip flags Trivy would fetch the Java DB itself."""
    assert trivy.sbom_argv("images/x", output="/o/s.json") == [
        "trivy", "image", "--input", "images/x", "--format", "cyclonedx", "--output", "/o/s.json",
        "--skip-db-update", "--skip-java-db-update", "--offline-scan", "--timeout", "900s", "--no-progress"]
    assert trivy.sbom_argv("v", output="o", cache_dir="/c")[-2:] == ["--cache-dir", "/c"]


def test_a_scan_that_needs_the_java_db_says_so(tmp_path, monkeypatch):
    """Trivy's own words when an image has JARs and the cache has no Java DB (recorded from 0.59.1)."""
    stderr = ("2026-12-01T16:00:00Z\tERROR\t[javadb] The first run cannot skip downloading Java DB\n"
              "2026-12-01T16:00:00Z\tFATAL\tFatal error\timage scan error: scan error: scan failed: failed"
              " analysis: post analysis error: Unable to initialize the Java DB: Java DB update failed:"
              " '--skip-java-db-update' cannot be specified on the first run\n")

    def fake_run(argv, **kw):
        raise ToolError("trivy scan: trivy failed", tool="trivy", returncode=1, stderr=stderr)

    monkeypatch.setattr(trivy, "supported_flags", lambda: frozenset())
    monkeypatch.setattr(trivy.proc, "run", fake_run)
    (tmp_path / "view").mkdir()
    with pytest.raises(trivy.JavaDBNeeded):
        trivy.scan(tmp_path / "view", cache_dir=str(tmp_path / "c"), what="reg/app@sha256:" + "a" * 64)


def test_the_report_names_the_image_not_a_temporary_directory(tmp_path, monkeypatch):
    seen = {}

    def fake_run(argv, cwd=None, **kw):
        seen["input"] = argv[argv.index("--input") + 1]
        seen["cwd"] = cwd
        assert (Path(cwd) / "reg:5000/app").resolve() == tmp_path / "view"
        Path(argv[argv.index("--output") + 1]).write_text("{}")
        return proc.Completed(tuple(argv), 0, "", "")

    monkeypatch.setattr(trivy, "supported_flags", lambda: frozenset())
    monkeypatch.setattr(trivy.proc, "run", fake_run)
    (tmp_path / "view").mkdir()
    trivy.scan(tmp_path / "view", cache_dir=str(tmp_path / "c"), what="reg:5000/app@sha256:" + "a" * 64)
    assert seen["input"] == "reg:5000/app@sha256:" + "a" * 64   # Trivy names the artifact after it


def test_version_argv():
    assert trivy.version_argv() == ["trivy", "version", "--format", "json"]


def test_neutral_env_undoes_filters_a_user_may_have_exported():
    env = trivy._env({"DOCKER_CONFIG": "/d"})
    assert env["TRIVY_SEVERITY"] == "UNKNOWN,LOW,MEDIUM,HIGH,CRITICAL"
    assert env["TRIVY_IGNORE_UNFIXED"] == "false" and env["TRIVY_EXIT_CODE"] == "0"
    assert env["TRIVY_IGNOREFILE"] == ".trivyignore" and env["DOCKER_CONFIG"] == "/d"


def test_workdir_holds_empty_ignore_and_config_files():
    with trivy.workdir() as wd:
        assert (wd / ".trivyignore").read_text() == ""
        assert (wd / "trivy.yaml").is_file()
    assert not wd.exists()


# --------------------------------------------------------------------------- parser


def test_parse_recorded_alpine_rootfs_report():
    r = results.parse_report((DATA / "alpine" / "all.json").read_bytes())
    assert r.os == "alpine 3.19.1" and r.artifact_type == "filesystem" and r.eosl
    vulns = {(v.id, v.pkg_name): v for _, v in r.vulnerabilities()}
    musl = vulns[("CVE-2099-0001", "musl")]
    assert (musl.installed, musl.fixed, musl.severity, musl.status, musl.severity_source) == (
        "1.2.4-r2", "1.2.4-r99", "HIGH", "fixed", "nvd")
    assert musl.purl.startswith("pkg:apk/alpine/musl@1.2.4-r2") and musl.cvss_v3_score == 7.5
    assert vulns[("CVE-2099-0003", "musl")].status == "affected"
    assert vulns[("CVE-2099-0006", "busybox")].severity == "UNKNOWN"      # not in the DB's vulnerability bucket
    assert ("CVE-2099-0004", "musl") not in vulns                         # installed version is already fixed


def test_parse_recorded_debian_report_statuses_language_packages_and_secret():
    r = results.parse_report((DATA / "debian" / "all.json").read_text())
    statuses = {v.id: v.status for _, v in r.vulnerabilities()}
    assert statuses["CVE-2099-1002"] == "will_not_fix" and statuses["CVE-2099-1003"] == "fix_deferred"
    assert statuses["CVE-2099-1004"] == "end_of_life" and statuses["CVE-2099-1005"] == "affected"
    pip = [v for res, v in r.vulnerabilities() if res.type == "python-pkg"]
    assert {v.pkg_path for v in pip} == {"usr/lib/python3/dist-packages/requests-2.28.1.dist-info/METADATA",
                                         "usr/lib/python3/dist-packages/urllib3-1.26.12.dist-info/METADATA"}
    [(res, secret)] = r.secrets()
    assert (res.target, secret.rule_id, secret.severity) == ("app/settings.py", "github-pat", "CRITICAL")


def test_parse_recorded_image_reports_per_platform():
    amd = results.parse_report((DATA / "image" / "linux-amd64.json").read_bytes())
    arm = results.parse_report((DATA / "image" / "linux-arm64.json").read_bytes())
    assert amd.artifact_type == arm.artifact_type == "container_image"
    assert amd.image_id.startswith("sha256:") and amd.repo_digests
    assert "CVE-2099-0001" in {v.id for _, v in arm.vulnerabilities()}
    assert "CVE-2099-0001" not in {v.id for _, v in amd.vulnerabilities()}


def test_absent_results_and_vulnerabilities_are_normal():
    r = results.parse_report({"SchemaVersion": 2, "ArtifactName": "x", "ArtifactType": "container_image"})
    assert r.results == () and r.vulnerabilities() == []
    r = results.parse_report({"SchemaVersion": 2, "Results": [{"Target": "t", "Class": "os-pkgs"}]})
    assert r.results[0].vulnerabilities == ()


def test_missing_status_is_unknown_or_fixed_when_a_fix_is_named():
    doc = {"SchemaVersion": 2, "Results": [{"Target": "t", "Vulnerabilities": [
        {"VulnerabilityID": "A", "PkgName": "p", "InstalledVersion": "1", "Severity": "HIGH"},
        {"VulnerabilityID": "B", "PkgName": "p", "InstalledVersion": "1", "FixedVersion": "2", "Severity": ""},
        {"VulnerabilityID": "C", "PkgName": "p", "InstalledVersion": "1", "Status": 5, "Severity": "bogus"}]}]}
    vulns = [v for _, v in results.parse_report(doc).vulnerabilities()]
    assert [(v.status, v.severity) for v in vulns] == [("unknown", "HIGH"), ("fixed", "UNKNOWN"),
                                                       ("will_not_fix", "UNKNOWN")]


@pytest.mark.parametrize("data, why", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"foo": 1}', "not a Trivy JSON report"),
    (b'{"SchemaVersion": 1, "Results": []}', "SchemaVersion 1"),
    (b'{"SchemaVersion": 2, "Results": {"a": 1}}', "Results is not a list"),
    (b'{"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"PkgName": "x"}]}]}', "without VulnerabilityID"),
])
def test_malformed_reports_are_rejected(data, why):
    with pytest.raises(results.ReportError, match=why):
        results.parse_report(data)


# --------------------------------------------------------------------------- DB


def _write_db(cache: Path, updated: str = "2026-11-01T00:00:00Z") -> None:
    (cache / "db").mkdir(parents=True, exist_ok=True)
    (cache / "db" / "trivy.db").write_bytes(b"x" * 100)
    (cache / "db" / "metadata.json").write_text(json.dumps(
        {"Version": 2, "NextUpdate": "2026-11-02T00:00:00Z", "UpdatedAt": updated, "DownloadedAt": "x"}))


def test_read_db(tmp_path):
    assert trivy.read_db(str(tmp_path)) is None
    _write_db(tmp_path)
    info = trivy.read_db(str(tmp_path))
    assert info and info.version == 2 and info.size == 100 and info.source == "cache"
    (tmp_path / "db" / "metadata.json").write_text('{"Version": 3}')
    assert trivy.read_db(str(tmp_path)) is None


def test_default_cache_dir_is_trivys():
    assert trivy.default_cache_dir({"HOME": "/home/u"}) == "/home/u/.cache/trivy"
    assert trivy.default_cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == "/x/trivy"
    assert trivy.default_cache_dir({"TRIVY_CACHE_DIR": "/t"}) == "/t"


def test_db_layer_is_a_tarball_of_the_cached_db(tmp_path):
    import gzip
    import io
    import tarfile

    _write_db(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(trivy.db_layer(str(tmp_path))))) as tar:
        assert sorted(tar.getnames()) == ["metadata.json", "trivy.db"]


# --------------------------------------------------------------------------- scan cache


def test_scan_cache_key_is_per_digest_db_and_trivy_version(tmp_path):
    _write_db(tmp_path)
    db = trivy.read_db(str(tmp_path))
    assert db is not None
    k = results.ScanCache.key("sha256:1", db, "0.59.1")
    assert k == results.ScanCache.key("sha256:1", db, "0.59.1")
    assert k != results.ScanCache.key("sha256:2", db, "0.59.1")
    assert k != results.ScanCache.key("sha256:1", db, "0.60.0")
    _write_db(tmp_path, updated="2026-11-02T00:00:00Z")
    assert k != results.ScanCache.key("sha256:1", trivy.read_db(str(tmp_path)), "0.59.1")
    same_db_redownloaded = trivy.DBInfo(db.cache_dir, 2, db.updated_at, db.next_update, "later", db.size, "x")
    assert k == results.ScanCache.key("sha256:1", same_db_redownloaded, "0.59.1")
    cache = results.ScanCache(tmp_path / "scans")
    assert cache.get(k) is None
    cache.put(k, b'{"SchemaVersion": 2}')
    assert cache.get(k) == b'{"SchemaVersion": 2}'
    (tmp_path / "scans" / f"{k}.json").write_text("broken")
    assert cache.get(k) is None
