"""Released images stay watched (issue 15): a rescan with a newer DB, exceptions, VEX, expiring exceptions.

An Alpine-looking image (musl 1.2.4-r99) passes the gate under DB v1, whose one musl advisory it
already has the fix for. DB v2 adds a HIGH advisory for musl < 1.2.5-r0: ``pipeline rescan`` must now
fail naming the CVE, the image and its digest (and say the finding is new since the release), pass with
an exception, and pass with that exception exported as OpenVEX and fed back through ``scan.vex``. A
second rescan with the same DB runs no Trivy. Real Trivy, real registries, DBs built by the tests.
"""

from __future__ import annotations

import json
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.tools.registry import Registry
from tests.support import project as support
from tests.support import kubelet, trivydb
from tests.support.record_trivy import ALPINE_DOCKERFILE, alpine_files

NEW_CVE = "CVE-2099-0777"


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "trivy"):
        require_tool(tool)


def db_v2() -> dict[str, Any]:
    return trivydb.trivy_buckets(
        {"alpine 3.19": {"musl": {trivydb.MUSL_CVE: {"FixedVersion": trivydb.MUSL_FIXED},
                                  NEW_CVE: {"FixedVersion": "1.2.5-r0"}}}},
        {trivydb.MUSL_CVE: {"Title": "musl: made-up heap overflow", "Severity": "HIGH", "VendorSeverity": {"nvd": 3}},
         NEW_CVE: {"Title": "musl: found after the release", "Severity": "HIGH", "VendorSeverity": {"nvd": 3}}},
        {"alpine 3.19": trivydb.ALPINE_SOURCE})


def _write(tmp: Path, registries, offline_base: str, db: str, cache: Path, *, exceptions: str = "",
           scan_extra: str = "", extra_registry: str = "", name: str = "watched/app") -> Path:
    files = alpine_files("1.2.4-r99", "1.2.4-r99")
    (tmp / "scan-exceptions.toml").write_text(exceptions)
    scan = (f'fail_on = "HIGH"\ndb_repository = ["{db}"]\ncache_dir = "{cache}"\n'
            f'exceptions_file = "{tmp / "scan-exceptions.toml"}"\n{scan_extra}')
    cfg = support.write_project(tmp, registries, offline_base, name=name, dockerfile=ALPINE_DOCKERFILE,
                                release=("ecr", "hub"), scan=scan, files=files,
                                rules='"type=semver,pattern={{version}}"', extra=extra_registry)
    return cfg


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return support.run_process([*args], support.github_env(PIPELINE_LOG_FORMAT="json"), cwd, timeout=900)


def test_a_released_image_fails_rescan_when_the_db_learns_a_cve_and_exceptions_or_vex_let_it_pass(
        tmp_path, registries, offline_base):
    ecr = registries["ecr"]
    with Registry(ecr.host, insecure=True) as client:
        trivydb.push(client, "rescan/trivy-db", "2", trivydb.pack(trivydb.minimal_db()))
    db = f"{ecr.host}/rescan/trivy-db:2"
    cfg = _write(tmp_path, registries, offline_base, db, tmp_path / "cache-v1")
    released = _run(["release", "--config", str(cfg), "--format", "json"], tmp_path)
    assert released.returncode == 0, released.stderr[-4000:]
    digest = json.loads(released.stdout)["digest"]
    # the same DB as the gate: the gate's scans are reused, not one Trivy process; everything passes
    same = _run(["rescan", "--config", str(cfg), "--format", "json"], tmp_path)
    assert same.returncode == 0, same.stderr[-3000:]
    assert json.loads(same.stdout)["trivy_runs"] == 0 and len(json.loads(same.stdout)["images"]) == 4

    # DB v2 knows a HIGH CVE for the released musl; a rescan (its own Trivy cache: the new DB) fails naming it
    with Registry(ecr.host, insecure=True) as client:
        trivydb.push(client, "rescan/trivy-db", "2", trivydb.pack(db_v2()))
    cache = tmp_path / "cache-v2"
    cfg = _write(tmp_path, registries, offline_base, db, cache)
    run = _run(["rescan", "--config", str(cfg), "--format", "json"], tmp_path)
    assert run.returncode == 1, run.stderr[-4000:]
    line = support.Run(run.returncode, run.stdout, run.stderr).error_line()
    assert NEW_CVE in line and digest in line and "watched/app:1.2.3" in line, line
    out = json.loads(run.stdout)
    judged = {(i["registry"], i["platform"]): i for i in out["images"]}
    assert set(judged) == {(r, p) for r in ("ecr", "hub") for p in support.PLATFORMS}, judged
    for item in judged.values():
        assert item["verdict"] == "fail" and item["digest"] == digest and item["tags"] == ["1.2.3", "latest"]
        assert [(b["id"], b["package"], b["installed"], b["fixed"], b["severity"]) for b in item["blocking"]] == [
            (NEW_CVE, "musl", "1.2.4-r99", "1.2.5-r0", "HIGH")]
        assert item["new"] == [NEW_CVE]                 # the release-time verdict is in dist/release.json
    assert out["trivy_runs"] == 2                       # one per platform digest, though two registries hold it
    rescan_dir = tmp_path / "dist" / "rescan"
    for name in ("trivy.sarif", "summary.md", "junit.xml", "gl-container-scanning-report.json", "verdict.json"):
        assert (rescan_dir / name).is_file(), name
    assert NEW_CVE in (rescan_dir / "summary.md").read_text()

    # the same DB again: not one Trivy process
    again = _run(["rescan", "--config", str(cfg), "--format", "json"], tmp_path)
    assert again.returncode == 1 and json.loads(again.stdout)["trivy_runs"] == 0, again.stderr[-3000:]

    # an exception lets it pass; one that lapses soon is said ahead
    soon = (date.today() + timedelta(days=5)).isoformat()
    exception = (f'[[exceptions]]\nid = "{NEW_CVE}"\npackage = "musl"\nreason = "musl is not reached"\n'
                 f'expires = {soon}\n')
    cfg = _write(tmp_path, registries, offline_base, db, cache, exceptions=exception)
    ok = _run(["rescan", "--config", str(cfg), "--format", "json"], tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    items = json.loads(ok.stdout)["images"]
    assert all(i["verdict"] == "pass" and [e["id"] for e in i["expiring"]] == [NEW_CVE] for i in items), items
    assert '"exception.expiring"' in ok.stderr
    text = _run(["rescan", "--config", str(cfg)], tmp_path)
    assert text.returncode == 0 and f"EXPIRING exception {NEW_CVE} on {soon}" in text.stdout, text.stdout

    # exported as OpenVEX, fed back through scan.vex instead of the exception: passes too
    exported = tmp_path / "exceptions.vex.json"
    export = _run(["vex", "export", "--config", str(cfg), "--output", str(exported)], tmp_path)
    assert export.returncode == 0, export.stderr[-3000:]
    cfg = _write(tmp_path, registries, offline_base, db, cache, scan_extra=f'vex = ["{exported}"]\n')
    with_vex = _run(["rescan", "--config", str(cfg), "--format", "json"], tmp_path)
    assert with_vex.returncode == 0, with_vex.stderr[-3000:]
    assert json.loads(with_vex.stdout)["trivy_runs"] == 0

    # a registry that cannot be read is reported, and a failing image still decides the exit code (1)
    dead = '[[registries]]\nname = "gone"\nurl = "127.0.0.1:9"\nauth = "none"\n'
    cfg = _write(tmp_path, registries, offline_base, db, cache, extra_registry=dead)
    broken = _run(["rescan", "--config", str(cfg), "--format", "json"], tmp_path)
    assert broken.returncode == 1, broken.stderr[-3000:]
    assert "gone" in json.loads(broken.stdout)["unreadable"]
    # and with nothing failing, an unreadable registry is exit 3
    cfg = _write(tmp_path, registries, offline_base, db, cache, exceptions=exception, extra_registry=dead)
    incomplete = _run(["rescan", "--config", str(cfg)], tmp_path)
    assert incomplete.returncode == 3, incomplete.stderr[-3000:]
    assert "gone" in support.Run(3, incomplete.stdout, incomplete.stderr).error_line()


def _cosign_vuln(ref: str, pub: Path) -> list[dict[str, Any]]:
    """The gate members of every vuln attestation cosign itself verifies on ``ref`` (straight to the registry)."""
    import base64

    done = subprocess.run(["cosign", "verify-attestation", "--key", str(pub), "--type", "vuln",
                           "--insecure-ignore-tlog=true", "--allow-http-registry=true",
                           "--allow-insecure-registry=true", ref], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    gates = []
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            predicate = json.loads(base64.b64decode(json.loads(line)["payload"]))["predicate"]
            gates.append(predicate["invocation"]["parameters"]["gate"])
    return sorted(gates, key=lambda g: g["source"])


def test_rescan_attest_signs_a_dated_verdict_that_inventory_shows(tmp_path, registries, offline_base):
    import secrets

    ecr = registries["ecr"]
    with Registry(ecr.host, insecure=True) as client:
        trivydb.push(client, "rescan-attest/trivy-db", "2", trivydb.pack(trivydb.minimal_db()))
    db = f"{ecr.host}/rescan-attest/trivy-db:2"
    password = "pw-" + secrets.token_urlsafe(12)
    env = support.github_env(PIPELINE_LOG_FORMAT="json", COSIGN_PASSWORD=password)
    keygen = support.run_process(["keygen", "--output", str(tmp_path / "keys" / "release")], env, tmp_path)
    assert keygen.returncode == 0, keygen.stderr
    key, pub = tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub"

    def write(cache: Path) -> Path:
        cfg = _write(tmp_path, registries, offline_base, db, cache, name="attested/app")
        cfg.write_text(cfg.read_text().replace(
            "[sign]\nenabled = false", f'[sign]\nkey = "{key}"\ntlog_upload = false\nsbom = false\nattest_scan = true'))
        return cfg

    def run(*args: str) -> subprocess.CompletedProcess:
        return support.run_process(list(args), env, tmp_path, timeout=900)

    def inventory(cfg: Path) -> dict[tuple[str, str], dict[str, Any]]:
        inv = run("inventory", "--config", str(cfg), "--format", "json")
        assert inv.returncode == 0, inv.stderr[-3000:]
        return {(r["name"], e["digest"]): e for r in json.loads(inv.stdout)["registries"]
                for repo, rows in r["repositories"].items() if repo == "attested/app" for e in rows}

    cfg = write(tmp_path / "cache-v1")
    released = run("release", "--config", str(cfg), "--format", "json")
    assert released.returncode == 0, released.stderr[-4000:]
    manifest = json.loads(released.stdout)
    digest, platforms = manifest["digest"], manifest["platforms"]
    today = date.today().isoformat()
    for reg in ("ecr", "hub"):        # the release's own vuln attestations carry the gate's dated verdict
        e = inventory(cfg)[(reg, digest)]
        assert (e["scanned"], e["scanned_on"], e["blocking"]) == ("pass", today, 0), e
        assert e["scanned_source"] == "release vuln attestation, verified", e

    # DB v2 knows a HIGH CVE: the rescan fails, and attests that verdict in both registries, per platform
    with Registry(ecr.host, insecure=True) as client:
        trivydb.push(client, "rescan-attest/trivy-db", "2", trivydb.pack(db_v2()))
    cfg = write(tmp_path / "cache-v2")
    attested = run("rescan", "--config", str(cfg), "--format", "json", "--attest")
    assert attested.returncode == 1, attested.stderr[-4000:]
    out = json.loads(attested.stdout)
    assert sorted((a["registry"], a["platform"], a["action"]) for a in out["attested"]) == sorted(
        (r, p, "attested") for r in ("ecr", "hub") for p in platforms), out["attested"]
    assert password not in attested.stdout + attested.stderr
    for reg in ("ecr", "hub"):
        for platform, manifest_digest in platforms.items():
            gates = _cosign_vuln(f"{registries[reg].host}/attested/app@{manifest_digest}", pub)
            assert [g["source"] for g in gates] == ["release", "rescan"], gates
            assert (gates[1]["verdict"], gates[1]["blocking"]) == ("fail", [NEW_CVE]), gates
            assert gates[1]["db_built"] != gates[0]["db_built"]
        e = inventory(cfg)[(reg, digest)]
        assert (e["scanned"], e["scanned_on"], e["blocking"]) == ("fail", today, 1), e
        assert e["scan_counts"].get("HIGH") == 1, e
        assert e["scanned_source"] == "rescan vuln attestation, verified", e
    text = run("inventory", "--config", str(cfg))
    assert f"fail, {today}, 1 blocking" in text.stdout, text.stdout

    # the same DB again: that verdict is already attested, nothing is added
    again = run("rescan", "--config", str(cfg), "--format", "json", "--attest")
    assert again.returncode == 1, again.stderr[-3000:]
    assert {a["action"] for a in json.loads(again.stdout)["attested"]} == {"present"}
    assert len(_cosign_vuln(f"{registries['hub'].host}/attested/app@{next(iter(platforms.values()))}", pub)) == 2

    # the same rescan as a Kubernetes CronJob: its container, laid out as a kubelet would, with nothing but the
    # Secret's credentials and the ConfigMap's files, judges and attests the same (exit 1: the CVE)
    emitted = run("rescan", "--config", str(cfg.relative_to(tmp_path)), "--emit-cronjob", "--attest",
                  "--image", "registry.example/pipeline-rescan:1", "--secret", "rescan-creds")
    assert emitted.returncode == 0, emitted.stderr[-3000:]
    assert password not in emitted.stdout and "PRIVATE KEY" not in emitted.stdout
    configmap, job = kubelet.documents(emitted.stdout)
    assert job["spec"]["schedule"] == "17 5 * * *" and job["spec"]["concurrencyPolicy"] == "Forbid"
    assert "kubectl create secret generic rescan-creds" in emitted.stdout
    secret: dict[str, str | bytes] = {"COSIGN_PASSWORD": password, "cosign.key": key.read_bytes()}
    for reg in registries.values():
        if reg.auth:
            secret.update({reg.username_env: reg.username, reg.password_env: reg.password})
    pod = kubelet.run(emitted.stdout, secret, tmp_path / "pod")
    assert pod.returncode == 1, pod.stderr[-3000:]
    assert "FAIL  hub/attested/app:1.2.3" in pod.stdout and NEW_CVE in pod.stdout, pod.stdout
    assert "attested 0 verdict(s); 4 already attested with this DB" in pod.stdout, pod.stdout
    # a credential the Secret lacks is the job's failure, not a silent pass
    without = {k: v for k, v in secret.items() if k != "COSIGN_PASSWORD"}
    with pytest.raises(AssertionError, match="COSIGN_PASSWORD"):
        kubelet.run(emitted.stdout, without, tmp_path / "pod2")
