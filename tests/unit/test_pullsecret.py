"""Kubernetes pull secrets: the Secret kubelet reads, the service-account patch, the ECR refresh CronJob."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from pipeline.access import pullsecret
from pipeline.cli import main
from pipeline.tools.registry import Credentials

PASSWORD = "s3cr3t-Pa55word-for-tests"
CONFIG = """
[image]
name = "app"
[[registries]]
name = "corp"
url = "registry.corp:5000/team"
auth = "env"
username_env = "CORP_USER"
password_env = "CORP_PASSWORD"
[[registries]]
name = "hub"
url = "docker.io/acme"
auth = "dockerhub"
[[registries]]
name = "anon"
url = "localhost:5000"
auth = "none"
[[registries]]
name = "ecr"
url = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
auth = "ecr"
"""


def decoded(doc: dict) -> dict:
    return json.loads(base64.b64decode(doc["data"][".dockerconfigjson"]))


def test_secret_holds_a_docker_config_kubelet_reads():
    docs = pullsecret.documents(name="regcred", namespace="apps", host="registry.corp:5000",
                                creds=Credentials("alice", PASSWORD))
    assert len(docs) == 1
    sec = docs[0]
    assert sec["kind"] == "Secret" and sec["type"] == "kubernetes.io/dockerconfigjson"
    assert sec["metadata"]["name"] == "regcred" and sec["metadata"]["namespace"] == "apps"
    entry = decoded(sec)["auths"]["registry.corp:5000"]
    assert entry["username"] == "alice" and entry["password"] == PASSWORD
    assert base64.b64decode(entry["auth"]).decode() == f"alice:{PASSWORD}"


def test_docker_hub_uses_the_canonical_key_and_identity_tokens_are_refused():
    cfg = pullsecret.docker_config("docker.io", Credentials("me", "dckr_pat_x"))
    assert list(cfg["auths"]) == ["https://index.docker.io/v1/"]
    with pytest.raises(ValueError, match="identity token"):
        pullsecret.docker_config("ghcr.io", Credentials("<token>", "", identity_token="tok"))


def test_service_account_document_and_patch():
    docs = pullsecret.documents(name="regcred", namespace="apps", host="h:1", creds=Credentials("u", "p" * 8),
                                service_account_name="default")
    assert docs[1] == {"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "default", "namespace": "apps"}, "imagePullSecrets": [{"name": "regcred"}]}
    assert pullsecret.service_account_patch("regcred") == {"imagePullSecrets": [{"name": "regcred"}]}


@pytest.mark.parametrize("kw", [{"name": "Bad_Name"}, {"namespace": "a.b"}, {"service_account_name": "-x"}])
def test_kubernetes_names_are_checked(kw):
    args = {"name": "regcred", "namespace": "apps", "host": "h", "creds": Credentials("u", "pppp"), **kw}
    with pytest.raises(ValueError):
        pullsecret.documents(**args)


def test_ecr_refresh_cronjob_rbac_and_no_token_on_argv():
    docs = pullsecret.documents(name="ecr-pull", namespace="apps", host="1.dkr.ecr.eu-west-1.amazonaws.com",
                                creds=Credentials("AWS", "tok" * 10),
                                refresh=pullsecret.RefreshOptions(region="eu-west-1", role_arn="arn:aws:iam::1:role/r"))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Secret", "ServiceAccount", "Role", "RoleBinding", "CronJob"]
    sa, role, binding, cron = docs[1:]
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/r"}
    assert role["rules"][0]["resourceNames"] == ["ecr-pull"] and set(role["rules"][0]["verbs"]) == {"get", "patch",
                                                                                                    "update"}
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"]
    spec = cron["spec"]
    assert spec["schedule"] == "0 */8 * * *" and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    init = pod["initContainers"][0]
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["AWS_REGION"] == "eu-west-1" and env["SECRET_NAME"] == "ecr-pull"
    assert env["REGISTRY"] == "1.dkr.ecr.eu-west-1.amazonaws.com"
    script = init["command"][2]
    assert "aws ecr get-login-password" in script and "> /work/secret.json" in script
    assert pod["containers"][0]["args"] == ["apply", "-f", "/work/secret.json"]
    assert pod["volumes"] == [{"name": "work", "emptyDir": {"medium": "Memory"}}]
    text = pullsecret.render(docs, registry="ecr", refresh=True)
    assert list(yaml.safe_load_all(text)) == docs
    assert "12 hours" in text


# --------------------------------------------------------------------------- the command


def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(args, env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "pipeline.toml"
    p.write_text(CONFIG)
    return p


def test_cli_stdout_yaml_and_nothing_secret_in_logs(cfg):
    env = {"CORP_USER": "alice", "CORP_PASSWORD": PASSWORD}
    code, out, err = run(["--log-format", "json", "pull-secret", "--config", str(cfg), "--registry", "corp",
                          "--namespace", "apps", "--service-account", "builder"], env)
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    assert decoded(docs[0])["auths"]["registry.corp:5000"]["password"] == PASSWORD
    assert docs[1]["kind"] == "ServiceAccount" and docs[1]["metadata"]["name"] == "builder"
    encoded = docs[0]["data"][".dockerconfigjson"]
    assert PASSWORD not in err and encoded not in err


def test_cli_output_file_is_0600_and_not_echoed(cfg, tmp_path):
    env = {"CORP_USER": "alice", "CORP_PASSWORD": PASSWORD}
    target = tmp_path / "out" / "regcred.yaml"
    code, out, err = run(["pull-secret", "--config", str(cfg), "--registry", "corp", "--output", str(target)], env)
    assert code == 0, err
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert PASSWORD not in out and PASSWORD not in err and "0600" in out
    assert decoded(next(yaml.safe_load_all(target.read_text())))["auths"]["registry.corp:5000"]["username"] == "alice"


def test_cli_errors_are_one_line(cfg):
    code, _, err = run(["pull-secret", "--config", str(cfg), "--registry", "anon"], {})
    assert code == 2 and "auth = \"none\"" in err and err.count("\n") == 1
    code, _, err = run(["pull-secret", "--config", str(cfg), "--registry", "corp"], {"CORP_USER": "a"})
    assert code == 3 and "CORP_PASSWORD is not set" in err
    code, _, err = run(["pull-secret", "--config", str(cfg), "--registry", "nope"], {})
    assert code == 2 and "no registry named 'nope'" in err
    code, _, err = run(["pull-secret", "--config", str(cfg)], {})
    assert code == 2 and "--registry" in err
    code, _, err = run(["pull-secret", "--config", str(cfg), "--registry", "corp", "--name", "Bad_Name"],
                       {"CORP_USER": "a", "CORP_PASSWORD": PASSWORD})
    assert code == 2 and "Bad_Name" in err and PASSWORD not in err


def test_cli_ecr_adds_the_refresh_cronjob(cfg, monkeypatch):
    from pipeline.tools import ecr

    monkeypatch.setattr(ecr, "login_token", lambda region, registry_id, env, **kw:
                        Credentials("AWS", "ecr-token-" + "x" * 20, expires_at=1e12))
    code, out, err = run(["pull-secret", "--config", str(cfg), "--registry", "ecr", "--aws-role-arn",
                          "arn:aws:iam::123456789012:role/refresh"], {})
    assert code == 0, err
    kinds = [d["kind"] for d in yaml.safe_load_all(out)]
    assert kinds == ["Secret", "ServiceAccount", "Role", "RoleBinding", "CronJob"]
    code, out, _ = run(["pull-secret", "--config", str(cfg), "--registry", "ecr", "--no-refresh"], {})
    assert [d["kind"] for d in yaml.safe_load_all(out)] == ["Secret"]


def test_cli_apply_sends_the_secret_through_kubectl_stdin(cfg, tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "calls"
    fake = bindir / "kubectl"
    fake.write_text(f"#!/bin/sh\necho \"ARGV $*\" >> {record}\ncat >> {record}\necho ok\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    env = {"CORP_USER": "alice", "CORP_PASSWORD": PASSWORD}
    code, out, err = run(["pull-secret", "--config", str(cfg), "--registry", "corp", "--apply",
                          "--service-account", "default", "--namespace", "apps"], env)
    assert code == 0, err
    calls = record.read_text()
    argv_lines = [ln for ln in calls.splitlines() if ln.startswith("ARGV ")]
    assert argv_lines[0] == "ARGV apply -f -"
    assert argv_lines[1].startswith("ARGV patch serviceaccount default --namespace apps --type strategic --patch")
    assert all(PASSWORD not in ln for ln in argv_lines)
    assert "kind: Secret" in calls  # the manifest went through stdin
    assert PASSWORD not in out and PASSWORD not in err and "applied to namespace apps" in out
