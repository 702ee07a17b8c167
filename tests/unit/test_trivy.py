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


def test_scan_argv_has_no_exit_code_no_severity_and_scans_by_digest_from_the_registry():
    argv = trivy.scan_argv(IMAGE, cache_dir="/c", output="/o/r.json", insecure=True, timeout_seconds=300)
    assert argv == ["trivy", "image", "--format", "json", "--output", "/o/r.json", "--cache-dir", "/c",
                    "--skip-db-update", "--scanners", "vuln,secret", "--image-src", "remote", "--timeout", "300s",
                    "--no-progress", "--insecure", IMAGE]
    assert not any(a.startswith(("--exit-code", "--severity", "-s", "--ignore")) for a in argv)


def test_scan_argv_java_db_and_optional_flags():
    argv = trivy.scan_argv(IMAGE, cache_dir="/c", output="/o", java_db_repositories=["m/java-db:1"],
                           skip_java_db_update=True, supported=frozenset({"--skip-version-check"}))
    assert argv[-5:] == ["--java-db-repository", "m/java-db:1", "--skip-java-db-update", "--skip-version-check",
                         IMAGE]
    assert "--insecure" not in argv


def test_download_argv_one_repository_at_a_time():
    assert trivy.download_db_argv("/c", "127.0.0.1:5000/aquasec/trivy-db:2", insecure=True) == [
        "trivy", "image", "--download-db-only", "--no-progress", "--cache-dir", "/c", "--db-repository",
        "127.0.0.1:5000/aquasec/trivy-db:2", "--insecure"]
    assert trivy.download_db_argv("/c", "mirror.gcr.io/aquasec/trivy-db:2",
                                  supported=frozenset(trivy.OPTIONAL_FLAGS))[-2:] == list(trivy.OPTIONAL_FLAGS)


def test_sbom_argv_is_cyclonedx_without_db_flags():
    assert trivy.sbom_argv(IMAGE, output="/o/s.json", insecure=False) == [
        "trivy", "image", "--format", "cyclonedx", "--output", "/o/s.json", "--image-src", "remote",
        "--timeout", "900s", "--no-progress", IMAGE]
    assert trivy.sbom_argv(IMAGE, output="o", insecure=True, cache_dir="/c")[-4:] == [
        "--cache-dir", "/c", "--insecure", IMAGE]


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


class FakeRunner:
    """Stands in for proc.run: repositories listed in ``works`` write a DB into the cache dir."""

    def __init__(self, works: set[str]) -> None:
        self.works = works
        self.calls: list[list[str]] = []

    def __call__(self, argv, **kw):
        self.calls.append(list(argv))
        repo = argv[argv.index("--db-repository") + 1]
        if repo not in self.works:
            raise ToolError("DB download: trivy failed", tool="trivy", returncode=1,
                            stderr=f"2026-01-01T00:00:00Z\tFATAL\tFatal error\tinit error: {repo}: 404")
        _write_db(Path(argv[argv.index("--cache-dir") + 1]))
        return proc.Completed(tuple(argv), 0, "", "")


@pytest.fixture(autouse=False)
def no_help(monkeypatch):
    monkeypatch.setattr(trivy, "supported_flags", lambda: frozenset())


def test_ensure_db_tries_mirrors_in_order(tmp_path, no_help):
    runner = FakeRunner({"b/db:2"})
    info = trivy.ensure_db(str(tmp_path), ["a/db:2", "b/db:2", "c/db:2"], insecure=lambda r: r.startswith("a"),
                           runner=runner)
    assert info.source == "b/db:2"
    assert [c[c.index("--db-repository") + 1] for c in runner.calls] == ["a/db:2", "b/db:2"]
    assert "--insecure" in runner.calls[0] and "--insecure" not in runner.calls[1]


def test_ensure_db_defaults_to_trivys_public_repositories(tmp_path, no_help):
    runner = FakeRunner(set())
    _write_db(tmp_path)
    info = trivy.ensure_db(str(tmp_path), [], insecure=lambda r: False, runner=runner)
    assert [c[c.index("--db-repository") + 1] for c in runner.calls] == list(trivy.DEFAULT_DB_REPOSITORIES)
    assert info.source == "cache"        # nothing answered: the cached DB, with a warning


def test_no_db_anywhere_is_an_infra_error_saying_what_to_configure(tmp_path, no_help):
    with pytest.raises(trivy.NoDatabaseError) as exc:
        trivy.ensure_db(str(tmp_path / "c"), ["a/db:2"], insecure=lambda r: False, runner=FakeRunner(set()))
    msg = str(exc.value)
    assert exc.value.exit_code == 3
    assert msg.startswith("no vulnerability DB: a/db:2: init error: a/db:2: 404")
    assert "scan.db_repository" in msg and "--mirror-db" in msg and "--download-db" in msg


def test_skip_db_update_needs_a_cached_db_and_never_downloads(tmp_path, no_help):
    runner = FakeRunner({"a/db:2"})
    with pytest.raises(trivy.NoDatabaseError, match="skip_db_update"):
        trivy.ensure_db(str(tmp_path), ["a/db:2"], insecure=lambda r: False, skip_update=True, runner=runner)
    _write_db(tmp_path)
    assert trivy.ensure_db(str(tmp_path), ["a/db:2"], insecure=lambda r: False, skip_update=True,
                           runner=runner).source == "cache"
    assert runner.calls == []


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
