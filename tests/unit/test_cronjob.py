"""``rescan --emit-cronjob``: what the manifest carries, where, and which Secret keys it reads (never a value)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main

CONFIG = """
[image]
name = "acme/app"

[[registries]]
name = "ghcr"
url = "ghcr.io/acme"
auth = "ghcr"

[[registries]]
name = "ecr"
url = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
auth = "ecr"

[[registries]]
name = "inhouse"
url = "registry.acme.example"

[scan]
exceptions_file = "config/scan-exceptions.toml"
vex = ["security/app.vex.json"]

[sign]
key = "keys/cosign.key"

[rescan]
schedule = "0 3 * * 1"
image = "ghcr.io/acme/pipeline-rescan:1"
"""


def _emit(tmp: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    (tmp / "config").mkdir(exist_ok=True)
    (tmp / "config" / "pipeline.toml").write_text(CONFIG)
    (tmp / "config" / "scan-exceptions.toml").write_text("# none yet\n")
    (tmp / "security").mkdir(exist_ok=True)
    (tmp / "security" / "app.vex.json").write_text('{"@context": "https://openvex.dev/ns/v0.2.0"}\n')
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(tmp)
    try:
        code = main(["rescan", "--config", "config/pipeline.toml", "--emit-cronjob", *args],
                    env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "COSIGN_PASSWORD": "s3cret-Pw-991",
                         **(env or {})}, stdout=out, stderr=err)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def test_the_cronjob_carries_the_files_at_their_relative_paths_and_reads_credentials_from_the_secret(tmp_path):
    code, out, err = _emit(tmp_path, "--attest", "--namespace", "security", env={"GITHUB_TOKEN": "ghp_NeverPrinted"})
    assert code == 0, err
    assert "s3cret-Pw-991" not in out and "ghp_NeverPrinted" not in out
    configmap, job = list(yaml.safe_load_all(out))
    assert set(configmap["data"]) == {"work-config-pipeline.toml", "work-config-scan-exceptions.toml",
                                      "work-security-app.vex.json"}
    assert configmap["data"]["work-config-pipeline.toml"] == CONFIG
    assert job["metadata"]["namespace"] == configmap["metadata"]["namespace"] == "security"
    spec = job["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == ("0 3 * * 1", "Etc/UTC", "Forbid")
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/acme/pipeline-rescan:1" and c["workingDir"] == "/work"
    assert c["args"] == ["-m", "pipeline", "rescan", "--config", "/work/config/pipeline.toml", "--attest"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/work/security/app.vex.json"]["subPath"] == "work-security-app.vex.json"
    assert mounts["/work/keys/cosign.key"]["name"] == "signing-key"          # the key from the Secret, not the map
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert {k: (r["name"], r.get("optional", False)) for k, r in refs.items()} == {
        "GITHUB_ACTOR": ("pipeline-rescan", False), "GITHUB_TOKEN": ("pipeline-rescan", False),
        "AWS_ACCESS_KEY_ID": ("pipeline-rescan", True), "AWS_SECRET_ACCESS_KEY": ("pipeline-rescan", True),
        "AWS_SESSION_TOKEN": ("pipeline-rescan", True), "AWS_REGION": ("pipeline-rescan", True),
        "COSIGN_PASSWORD": ("pipeline-rescan", False)}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["DOCKER_CONFIG"] == "/var/run/secrets/pipeline/docker"     # the docker-auth registry's config
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["runAsNonRoot"] is True
    assert "kubectl create secret generic pipeline-rescan" in out and "--from-file=cosign.key=PATH" in out


def test_without_attest_no_signing_material_and_a_missing_vex_file_is_named(tmp_path, monkeypatch):
    code, out, _ = _emit(tmp_path)
    assert code == 0
    _, job = list(yaml.safe_load_all(out))
    (c,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert "--attest" not in c["args"] and "COSIGN_PASSWORD" not in out
    assert all(m["name"] != "signing-key" for m in c["volumeMounts"])
    (tmp_path / "security" / "app.vex.json").unlink()
    monkeypatch.chdir(tmp_path)
    out2, err2 = io.StringIO(), io.StringIO()
    code = main(["rescan", "--config", "config/pipeline.toml", "--emit-cronjob"],
                env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}, stdout=out2, stderr=err2)
    assert code == 2 and "scan.vex[0]: security/app.vex.json" in err2.getvalue(), err2.getvalue()


@pytest.mark.parametrize("keyless", ['keyless = true\ntlog_upload = true\nidentity = "ci@acme.example"\n'
                                     'issuer = "https://token.actions.githubusercontent.com"'])
def test_attest_with_keyless_signing_is_refused_naming_the_key(tmp_path, keyless):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "pipeline.toml").write_text(
        CONFIG.replace('key = "keys/cosign.key"', keyless).replace('vex = ["security/app.vex.json"]', ""))
    err = io.StringIO()
    code = main(["rescan", "--config", str(tmp_path / "config" / "pipeline.toml"), "--emit-cronjob", "--attest"],
                env={"PATH": os.environ.get("PATH", "")}, stdout=io.StringIO(), stderr=err)
    assert code == 2 and "[sign] key" in err.getvalue(), err.getvalue()


def test_absolute_paths_stay_where_the_config_names_them_and_one_file_is_mounted_once(tmp_path):
    shared = tmp_path / "config" / "scan-exceptions.toml"
    text = CONFIG.replace('exceptions_file = "config/scan-exceptions.toml"', f'exceptions_file = "{shared}"')
    text = text.replace('vex = ["security/app.vex.json"]', f'vex = ["security/app.vex.json", "{shared}"]\n'
                        'trivyignore = "config/scan-exceptions.toml"')
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "pipeline.toml").write_text(text)
    code, out, err = _emit(tmp_path, "--namespace", "Bad_Name")
    assert code == 2 and "--namespace Bad_Name" in err, err
    (tmp_path / "config" / "pipeline.toml").write_text(text)
    _, job = list(yaml.safe_load_all(_emit_written(tmp_path, text)))
    (c,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    paths = [m["mountPath"] for m in c["volumeMounts"]]
    assert len(paths) == len(set(paths)), paths                      # Kubernetes wants them unique
    assert str(shared) in paths and "/work/config/scan-exceptions.toml" in paths    # named twice: mounted once


def _emit_written(tmp: Path, text: str) -> str:
    """_emit, but with this config text (the helper writes its own)."""
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(tmp)
    try:
        (tmp / "config" / "pipeline.toml").write_text(text)
        (tmp / "security").mkdir(exist_ok=True)
        (tmp / "security" / "app.vex.json").write_text("{}\n")
        (tmp / "config" / "scan-exceptions.toml").write_text("# none\n")
        assert main(["rescan", "--config", "config/pipeline.toml", "--emit-cronjob"],
                    env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp)}, stdout=out, stderr=err) == 0, \
            err.getvalue()
    finally:
        os.chdir(old)
    return out.getvalue()
