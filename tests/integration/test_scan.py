"""The scan gate on the real toolchain (issue 4 acceptance): real Trivy, real registries, a DB made here.

A small Trivy DB (tests/support/trivydb.py: one HIGH CVE for musl < 1.2.4-r99 on Alpine 3.19)
is pushed as an OCI artifact to the session's plain registry and named in
``scan.db_repository``. Test images are the offline busybox base plus an Alpine apk
database (per platform, so one variant is vulnerable on arm64 only). Releases run through
``pipeline.cli.main``; what the release registries hold is checked over raw HTTP and with
skopeo, never through our own registry client.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.scan import db as scandb
from pipeline.times import parse_time
from pipeline.tools.registry import Registry
from tests.support import project as support
from tests.support.project import http_tags
from tests.support import trivydb
from tests.support.record_trivy import ALPINE_DOCKERFILE, alpine_files

SHA = "5ca45ca45ca45ca45ca45ca45ca45ca45ca45ca4"
RELEASE = ("ghcr", "ecr", "hub")
DOCKERFILE = ALPINE_DOCKERFILE


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "trivy", "skopeo"):
        require_tool(tool)


@pytest.fixture(scope="module")
def db_ref(registries) -> str:
    """The minimal DB as Trivy's OCI artifact in the plain registry."""
    reg = registries["ecr"]
    with Registry(reg.host, insecure=True) as client:
        trivydb.push(client, "mirror/trivy-db", "2", trivydb.pack(trivydb.minimal_db()))
    return f"{reg.host}/mirror/trivy-db:2"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One Trivy cache for the releases of the same image: the scan cache is checked across them."""
    return tmp_path_factory.mktemp("trivy-cache")


def github_env() -> dict[str, str]:
    return support.github_env(sha=SHA)


def project(tmp: Path, registries: dict[str, Any], offline_base: str, db: str, *, name: str, cache: Path,
            arm64_only: bool = False, exceptions: str = "", scan_extra: str = "") -> Path:
    """An Alpine-looking image per platform (musl 1.2.4-r2 is vulnerable in the test DB)."""
    files = alpine_files("1.2.4-r99" if arm64_only else "1.2.4-r2", "1.2.4-r2")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "scan-exceptions.toml").write_text(exceptions)
    scan = (f'fail_on = "HIGH"\ndb_repository = ["{db}"]\ncache_dir = "{cache}"\n'
            f'exceptions_file = "{tmp / "scan-exceptions.toml"}"\n{scan_extra}')
    return support.write_project(tmp, registries, offline_base, name=name, dockerfile=DOCKERFILE, release=RELEASE,
                                 rules='"type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}"',
                                 scan=scan, files=files)


def pipeline(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    run = support.run_main(args, env or github_env())
    return run.code, run.out, run.err


def http_has_manifest(reg: Any, repo: str, digest: str) -> bool:
    r = httpx.head(f"{reg.url}/v2/{repo}/manifests/{digest}", timeout=30, headers={
        **reg.auth_header(), "Accept": "application/vnd.oci.image.index.v1+json,"
                                      "application/vnd.oci.image.manifest.v1+json"})
    return r.status_code == 200


def skopeo_tags(reg: Any, repo: str) -> list[str]:
    authfile = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    r = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", "--authfile", str(authfile),
                        f"docker://{reg.host}/{repo}"], capture_output=True, text=True, timeout=120)
    return json.loads(r.stdout).get("Tags") or [] if r.returncode == 0 else []


def assert_release_registries_untouched(registries: dict[str, Any], name: str, dist: Path) -> None:
    manifest = json.loads((dist / "release.json").read_text())
    index = manifest["digest"]
    assert index, manifest
    platforms = list(manifest["platforms"].values())
    for r in RELEASE:
        reg = registries[r]
        assert http_tags(reg, name) == [], f"{r} got release tags"
        assert skopeo_tags(reg, name) == [], f"{r} got release tags (skopeo)"
        for digest in (index, *platforms):
            assert not http_has_manifest(reg, name, digest), f"{r} got {digest}"
    for digest in (index, *platforms):                                          # staging got nothing either:
        assert not http_has_manifest(registries["ecr"], f"staging/{name}", digest)  # the gate runs before uploads


# --------------------------------------------------------------------------- the gate


def test_vulnerable_image_fails_naming_cve_package_per_platform_and_releases_nothing(
        tmp_path, registries, offline_base, db_ref, shared_cache):
    cfg = project(tmp_path, registries, offline_base, db_ref, name="scan-vuln", cache=shared_cache)
    code, out, err = pipeline(["release", "--config", str(cfg)])
    assert code == 1, err[-3000:]
    line = next(ln for ln in err.splitlines() if ln.startswith("pipeline: error:"))
    for platform in ("linux/amd64", "linux/arm64"):
        assert f"{platform}: CVE-2099-0001 (HIGH) in musl 1.2.4-r2, fixed in 1.2.4-r99" in line
    assert_release_registries_untouched(registries, "scan-vuln", tmp_path / "dist")
    stages = {s["stage"]: s["status"] for s in json.loads((tmp_path / "dist" / "release.json").read_text())["stages"]}
    assert stages["scan"] == "failed" and "copy" not in stages and "tag" not in stages
    scan_dir = tmp_path / "dist" / "scan"
    arm = json.loads((scan_dir / "linux-arm64.json").read_text())
    assert arm["ArtifactType"] == "container_image" and "@sha256:" in arm["ArtifactName"]
    verdict = json.loads((scan_dir / "verdict.json").read_text())
    assert {p: v["verdict"] for p, v in verdict["platforms"].items()} == {"linux/amd64": "fail",
                                                                          "linux/arm64": "fail"}
    # the same report, judged again from the file (pipeline scan --report)
    code, out, err = pipeline(["scan", "--report", str(scan_dir / "linux-arm64.json"), "--config", str(cfg),
                               "--format", "json"])
    assert code == 1, err
    assert [(b["id"], b["package"]) for b in json.loads(out)["blocking"]] == [("CVE-2099-0001", "musl")]


def test_unexpired_exception_passes_and_is_listed_then_expired_fails_naming_it(
        tmp_path, registries, offline_base, db_ref, shared_cache, capsys):
    exception = ('[[exceptions]]\nid = "CVE-2099-0001"\npackage = "musl"\nreason = "test: not reachable"\n'
                 'expires = {}\nowner = "qa"\n')
    ok = tmp_path / "ok"
    cfg = project(ok, registries, offline_base, db_ref, name="scan-vuln", cache=shared_cache,
                  exceptions=exception.format("2099-01-01"))
    code, out, err = pipeline(["release", "--config", str(cfg), "--format", "json"])
    assert code == 0, err[-3000:]
    manifest = json.loads(out)
    scan = manifest["outputs"]["scan"]
    assert scan["verdict"] == "pass"
    for platform in ("linux/amd64", "linux/arm64"):
        [used] = [s for s in scan["platforms"][platform]["suppressed"] if s["id"] == "CVE-2099-0001"]
        assert used["by"] == "exception:CVE-2099-0001" and used["expires"] == "2099-01-01"
        assert used["reason"] == "test: not reachable" and used["owner"] == "qa"
    for r in RELEASE:
        assert sorted(http_tags(registries[r], "scan-vuln")) == ["1.2", "1.2.3", "latest"]
    assert "exception CVE-2099-0001 (musl) until 2099-01-01" in capsys.readouterr().err   # the terminal table
    assert "`CVE-2099-0001` (musl) until 2099-01-01: test: not reachable" in (ok / "dist" / "scan" /
                                                                            "summary.md").read_text()

    expired = tmp_path / "expired"
    cfg = project(expired, registries, offline_base, db_ref, name="scan-vuln", cache=shared_cache,
                  exceptions=exception.format("2024-01-31"))
    code, out, err = pipeline(["release", "--config", str(cfg)])
    assert code == 1, err[-3000:]
    line = next(ln for ln in err.splitlines() if ln.startswith("pipeline: error:"))
    assert "linux/arm64: CVE-2099-0001 (HIGH) in musl" in line
    assert "exception for CVE-2099-0001 expired on 2024-01-31" in line
    assert "build.reused" in err and "image.scan_reused" in err   # same inputs, digests and DB: no rebuild, no rescan


def test_a_vulnerability_only_on_arm64_blocks_the_release(tmp_path, registries, offline_base, db_ref):
    cfg = project(tmp_path, registries, offline_base, db_ref, name="scan-arm64", cache=tmp_path / "cache",
                  arm64_only=True)
    code, out, err = pipeline(["release", "--config", str(cfg)])
    assert code == 1, err[-3000:]
    line = next(ln for ln in err.splitlines() if ln.startswith("pipeline: error:"))
    assert "linux/arm64: CVE-2099-0001 (HIGH) in musl 1.2.4-r2" in line and "linux/amd64" not in line
    verdict = json.loads((tmp_path / "dist" / "scan" / "verdict.json").read_text())
    assert verdict["platforms"]["linux/amd64"]["verdict"] == "pass"
    assert_release_registries_untouched(registries, "scan-arm64", tmp_path / "dist")
    junit = (tmp_path / "dist" / "scan" / "junit.xml").read_text()
    assert 'name="CVE-2099-0001 musl 1.2.4-r2"' in junit


def test_no_db_reachable_exits_3_with_what_to_configure(tmp_path, registries, offline_base):
    missing = f"{registries['ecr'].host}/nothing/trivy-db:2"
    cfg = project(tmp_path, registries, offline_base, missing, name="scan-vuln", cache=tmp_path / "empty-cache")
    code, out, err = pipeline(["release", "--config", str(cfg)])
    assert code == 3, err[-3000:]
    line = next(ln for ln in err.splitlines() if ln.startswith("pipeline: error:"))
    assert f"no vulnerability DB: {missing}:" in line and "MANIFEST_UNKNOWN" in line
    assert "scan.db_repository" in line and "--mirror-db" in line
    code, out, err = pipeline(["scan", "--download-db", "--config", str(cfg)])
    assert code == 3 and "no vulnerability DB:" in err


def test_standalone_scan_reuses_the_staged_candidate_and_its_scan(tmp_path, registries, offline_base, db_ref):
    cfg = project(tmp_path, registries, offline_base, db_ref, name="scan-arm64", cache=tmp_path / "cache",
                  arm64_only=True)
    for _ in range(2):
        code, out, err = pipeline(["scan", "--config", str(cfg), "--format", "json"])
        assert code == 1, err[-3000:]
        data = json.loads(out)
        assert data["verdict"] == "fail"
        assert data["platforms"]["linux/arm64"]["blocking"][0]["id"] == "CVE-2099-0001"
        assert data["platforms"]["linux/amd64"]["verdict"] == "pass"
    assert "build.reused" in err and "image.scan_reused" in err
    assert all(p["cached"] for p in data["platforms"].values())


def test_a_staged_candidate_is_fetched_with_the_configs_credentials_and_scanned_locally(
        tmp_path, registries, offline_base, db_ref, monkeypatch):
    """Staging behind htpasswd; the user's docker config knows nothing: our client fetches the candidate
    staged by another machine with the credentials the config names, and Trivy scans it locally."""
    exception = ('[[exceptions]]\nid = "CVE-2099-0001"\npackage = "musl"\nreason = "for staging"\n'
                 'expires = 2099-01-01\n')
    cfg = project(tmp_path, registries, offline_base, db_ref, name="scan-auth", cache=tmp_path / "cache",
                  arm64_only=True, exceptions=exception)
    cfg.write_text(cfg.read_text().replace('registry = "ecr"', 'registry = "ghcr"'))
    builder = tmp_path / "builder"          # the machine that built and staged it
    builder.mkdir()
    monkeypatch.chdir(builder)
    code, out, err = pipeline(["build", "--config", str(cfg)])
    assert code == 0, err[-3000:]
    (tmp_path / "scan-exceptions.toml").write_text("")     # the exception is gone
    scanner = tmp_path / "scanner"          # another machine: no local layout, an empty docker config
    scanner.mkdir()
    monkeypatch.chdir(scanner)
    empty = tmp_path / "empty-docker-config"
    empty.mkdir()
    env = {**github_env(), "DOCKER_CONFIG": str(empty)}
    code, out, err = pipeline(["scan", "--config", str(cfg), "--format", "json"], env)
    assert code == 1, err[-3000:]
    assert "staging has an image with the same build inputs (fetched into a local layout)" in err
    data = json.loads(out)
    assert data["platforms"]["linux/arm64"]["image"].startswith(f"{registries['ghcr'].host}/staging/scan-auth@")
    assert data["platforms"]["linux/arm64"]["blocking"][0]["id"] == "CVE-2099-0001"
    assert registries["ghcr"].password not in out + err


def test_mirror_db_then_download_db_from_the_mirror(tmp_path, registries, db_ref):
    hub = registries["hub"]
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'[image]\nname = "x"\n{registries["hub"].toml}\n{registries["ecr"].toml}\n'
                   f'[scan]\ndb_repository = ["{db_ref}"]\ncache_dir = "{tmp_path / "c1"}"\n[sign]\nenabled = false\n')
    code, out, err = pipeline(["scan", "--mirror-db", f"{hub.host}/mirrors/trivy-db:2", "--config", str(cfg),
                               "--format", "json"])
    assert code == 0, err
    data = json.loads(out)
    assert data["source"] == db_ref and data["destination"] == f"{hub.host}/mirrors/trivy-db:2"
    assert http_tags(hub, "mirrors/trivy-db") == ["2"]
    cfg2 = tmp_path / "p2.toml"
    cfg2.write_text(cfg.read_text().replace(db_ref, f"{hub.host}/mirrors/trivy-db:2"))
    code, out, err = pipeline(["scan", "--download-db", "--config", str(cfg2), "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["source"] == f"{hub.host}/mirrors/trivy-db:2"
    assert (tmp_path / "c1" / "db" / "trivy.db").is_file()
    # no source answers: the cached DB is packed and pushed instead
    cfg3 = tmp_path / "p3.toml"
    cfg3.write_text(cfg.read_text().replace(db_ref, f"{registries['ecr'].host}/nothing/here:2"))
    code, out, err = pipeline(["scan", "--mirror-db", f"{hub.host}/mirrors/from-cache:2", "--config", str(cfg3),
                               "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["source"].startswith("cache:")


def test_sbom_needs_no_db(registries, offline_base, tmp_path):
    from pipeline.tools import transfer, trivy
    from pipeline.tools.oci import Layout

    reg = registries["ecr"]
    repo, digest = offline_base.split("/", 1)[1].split("@")
    layout = Layout.create(tmp_path / "layout")
    with Registry(reg.host, insecure=True) as client:
        transfer.pull(client, repo, digest, layout)
    platform = next(iter(layout.platforms(digest).values()))
    view = layout.view(platform, tmp_path / "view")
    doc = json.loads(trivy.sbom(view.path, what=f"{reg.host}/{repo}@{platform}"))
    assert doc["bomFormat"] == "CycloneDX"


def test_scan_result_is_attested_per_platform_with_attest_scan(tmp_path, registries, offline_base, db_ref,
                                                                shared_cache):
    """[sign] attest_scan: each platform's Trivy result becomes a cosign vuln attestation (checked by cosign itself)."""
    import base64
    import secrets

    exception = ('[[exceptions]]\nid = "CVE-2099-0001"\npackage = "musl"\nreason = "test: not reachable"\n'
                 'expires = 2099-01-01\n')
    cfg = project(tmp_path, registries, offline_base, db_ref, name="scan-attest", cache=shared_cache,
                  exceptions=exception)
    password = secrets.token_urlsafe(16)
    env = {**github_env(), "COSIGN_PASSWORD": password}
    code, _, err = pipeline(["keygen", "--output", str(tmp_path / "keys" / "release")], env)
    assert code == 0, err
    key, pub = tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub"
    cfg.write_text(cfg.read_text().replace(
        "[sign]\nenabled = false", f'[sign]\nkey = "{key}"\ntlog_upload = false\nsbom = false\nattest_scan = true'))
    code, out, err = pipeline(["release", "--config", str(cfg), "--format", "json"], env)
    assert code == 0, err[-3000:]
    assert password not in out and password not in err
    manifest = json.loads(out)
    for r in RELEASE:
        reg = registries[r]
        for platform, digest in manifest["platforms"].items():
            done = subprocess.run(["cosign", "verify-attestation", "--key", str(pub), "--type", "vuln",
                                   "--insecure-ignore-tlog=true", f"{reg.host}/scan-attest@{digest}"],
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{r} {platform}: {done.stderr}"
            statement = json.loads(base64.b64decode(json.loads(done.stdout.splitlines()[0])["payload"]))
            assert statement["predicateType"] == "https://cosign.sigstore.dev/attestation/vuln/v1"
            assert statement["subject"][0]["digest"]["sha256"] == digest.split(":", 1)[1]
            assert "CVE-2099-0001" in json.dumps(statement["predicate"])
            gate = statement["predicate"]["invocation"]["parameters"]["gate"]   # the gate's dated verdict rides along
            assert (gate["source"], gate["verdict"], gate["blocking"], gate["fail_on"]) == ("release", "pass", [],
                                                                                            "HIGH"), gate
            finished = statement["predicate"]["metadata"]["scanFinishedOn"]
            assert parse_time(gate["scanned_on"]) == parse_time(finished) and gate["db_built"], (gate, finished)
    # a second release attests nothing new (same key, same digests)
    code, out, err = pipeline(["release", "--config", str(cfg), "--format", "json"], env)
    assert code == 0, err[-3000:]
    items = json.loads(out)["outputs"]["sign"]["items"]
    assert items and all(i["action"] == "present" for i in items)


# --------------------------------------------------------------------------- the Java DB

JAVA_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY foo-1.0.0.jar /app/foo-1.0.0.jar
COPY bare.jar /app/lib/bare.jar
"""


def offline_trivy(tmp: Path) -> tuple[Path, Path]:
    """A ``trivy`` first on PATH that runs the real one in a network namespace of its own (only a
    loopback that is down): a scan that tried to reach any host would fail. Each call is logged."""
    real = subprocess.run(["sh", "-c", "command -v trivy"], capture_output=True, text=True, check=True).stdout.strip()
    bin_dir, calls = tmp / "offline-bin", tmp / "trivy-calls.log"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "trivy"
    shim.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\nexec unshare --map-root-user --net -- "{real}" "$@"\n')
    shim.chmod(0o755)
    return bin_dir, calls


def test_an_image_with_jars_gets_the_java_db_from_our_client_and_the_scan_sends_nothing(
        tmp_path, registries, offline_base):
    """The JAR analyzer needs the Java DB: our client fetches it (and the vuln DB) from the mirror, and
    Trivy, run with no network at all, finds a JAR known only by its SHA-1 in that Java DB."""
    foo = trivydb.make_jar("com.example", "foo", "1.0.0")
    bare = trivydb.make_jar("ignored", "ignored", "0", pom=False)        # only the Java DB names it
    advisories = {trivydb.MAVEN_BUCKET: {
        "com.example:foo": {"GHSA-mmmm-0000-0001": {"VulnerableVersions": ["<1.0.1"], "PatchedVersions": ["1.0.1"]}},
        "com.example:bar": {"CVE-2099-3001": {"VulnerableVersions": [">=2.0.0, <2.0.1"],
                                              "PatchedVersions": ["2.0.1"]}}}}
    vulns = {"GHSA-mmmm-0000-0001": {"Title": "foo: made-up", "VendorSeverity": {"ghsa": 3}},
             "CVE-2099-3001": {"Title": "bar: made-up", "VendorSeverity": {"ghsa": 4}}}
    reg = registries["ecr"]
    with Registry(reg.host, insecure=True) as client:
        trivydb.push(client, "mirror/java-vuln-db", "2",
                     trivydb.pack(trivydb.trivy_buckets(advisories, vulns, {trivydb.MAVEN_BUCKET: trivydb.MAVEN_SOURCE})))
        scandb.push_layer(client, "mirror/trivy-java-db", "1",
                   trivydb.pack_java([("com.example", "bar", "2.0.0", bare)]), scandb.JAVA_DB)
    cache = tmp_path / "trivy-cache"                                 # fresh: no Java DB, no scan cache
    cfg = support.write_project(
        tmp_path, registries, offline_base, name="scan-java", dockerfile=JAVA_DOCKERFILE, release=RELEASE,
        scan=(f'fail_on = "HIGH"\ndb_repository = ["{reg.host}/mirror/java-vuln-db:2"]\n'
              f'java_db_repository = ["{reg.host}/mirror/trivy-java-db:1"]\ncache_dir = "{cache}"\n'))
    (tmp_path / "ctx" / "foo-1.0.0.jar").write_bytes(foo)
    (tmp_path / "ctx" / "bare.jar").write_bytes(bare)
    bin_dir, calls = offline_trivy(tmp_path)
    env = {**github_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}", "PIPELINE_LOG_FORMAT": "json"}
    run = support.run_process(["release", "--config", str(cfg)], env, cwd=tmp_path)

    assert run.returncode == 1, run.stderr[-3000:]
    line = next(ln for ln in run.stderr.splitlines() if ln.startswith("pipeline: error:"))
    for platform in ("linux/amd64", "linux/arm64"):
        assert (f"{platform}: CVE-2099-3001 (CRITICAL) in com.example:bar 2.0.0, fixed in 2.0.1; "
                f"GHSA-mmmm-0000-0001 (HIGH) in com.example:foo 1.0.0, fixed in 1.0.1") in line, line
    assert (cache / "java-db" / "trivy-java.db").read_bytes().startswith(b"SQLite format 3")
    events = [json.loads(ln) for ln in run.stderr.splitlines() if ln.startswith("{")]
    assert any(e.get("event") == "java_db.ready" for e in events), run.stderr[-3000:]
    scans = [c for c in calls.read_text().splitlines() if c.startswith("image --input")]
    assert scans and all("--skip-java-db-update" in c and "--offline-scan" in c for c in scans), scans
    assert_release_registries_untouched(registries, "scan-java", tmp_path / "dist")


# --------------------------------------------------------------------------- VEX both ways


def test_exceptions_exported_as_openvex_pass_the_gate_and_trivy_applies_them(
        tmp_path, registries, offline_base, db_ref, shared_cache):
    """The exception passes a release; exported as OpenVEX it passes one without the exception (scan.vex), and
    Trivy run by hand with --vex on the exported file suppresses the same finding."""
    from pipeline.tools import trivy
    from pipeline.tools.oci import Layout

    exception = ('[[exceptions]]\nid = "CVE-2099-0001"\npackage = "musl"\nreason = "test: musl is not reached"\n'
                 'expires = 2099-01-01\nowner = "qa"\n')
    first = tmp_path / "with-exception"
    cfg = project(first, registries, offline_base, db_ref, name="scan-vex", cache=shared_cache, exceptions=exception)
    code, out, err = pipeline(["release", "--config", str(cfg), "--format", "json"])
    assert code == 0, err[-3000:]
    exported = tmp_path / "exceptions.vex.json"
    code, out, err = pipeline(["vex", "export", "--config", str(cfg), "--output", str(exported)])
    assert code == 0, err[-3000:]
    doc = json.loads(exported.read_text())
    (statement,) = doc["statements"]
    purls = {p["@id"] for p in statement["products"]}
    assert any(p.startswith("pkg:apk/alpine/musl?arch=") for p in purls), purls     # every version of musl
    assert any(p.startswith("pkg:oci/scan-vex@sha256%3A") for p in purls), purls
    assert "expires=2099-01-01" in statement["status_notes"]

    # the same finding, suppressed by the document instead of the exception, and said so with its source
    second = tmp_path / "with-vex"
    cfg = project(second, registries, offline_base, db_ref, name="scan-vex", cache=shared_cache,
                  scan_extra=f'vex = ["{exported}"]\n')
    code, out, err = pipeline(["release", "--config", str(cfg), "--format", "json"])
    assert code == 0, err[-3000:]
    scan = json.loads(out)["outputs"]["scan"]
    for platform in ("linux/amd64", "linux/arm64"):
        [by] = [s for s in scan["platforms"][platform]["suppressed"] if s["id"] == "CVE-2099-0001"]
        assert by["by"] == f"vex:{exported}#0" and by["reason"] == "test: musl is not reached"
    assert f"by {exported}#0" in (second / "dist" / "scan" / "summary.md").read_text()

    # Trivy itself, with --vex on the exported file, on the local image of one platform
    release = json.loads((second / "dist" / "release.json").read_text())
    layout = Layout(Path(".pipeline/images") / release["candidate"]["key"][:32])
    view = layout.view(release["platforms"]["linux/arm64"], tmp_path / "arm64-view")
    cache = json.loads(out)["outputs"]["scan"]["db"]["cache_dir"]
    argv = [trivy.TRIVY, "image", "--input", str(view.path), "--cache-dir", cache, "--skip-db-update",
            "--skip-java-db-update", "--offline-scan", "--scanners", "vuln", "--format", "json", "--quiet"]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    ids = [v["VulnerabilityID"] for r in json.loads(plain.stdout).get("Results", []) for v in r.get("Vulnerabilities") or []]
    assert "CVE-2099-0001" in ids
    with_vex = subprocess.run([*argv, "--vex", str(exported), "--show-suppressed"], capture_output=True, text=True,
                              timeout=300)
    assert with_vex.returncode == 0, with_vex.stderr[-2000:]
    results = json.loads(with_vex.stdout).get("Results", [])
    assert "CVE-2099-0001" not in [v["VulnerabilityID"] for r in results for v in r.get("Vulnerabilities") or []]
    modified = [m for r in results for m in r.get("ExperimentalModifiedFindings") or []]
    assert [(m["Status"], m["Finding"]["VulnerabilityID"]) for m in modified] == [("not_affected", "CVE-2099-0001")]
