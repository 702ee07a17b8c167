"""ECR set-up, pure parts and the ensure logic against a fake client; tokens and errors of the boto3 layer."""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipeline import config
from pipeline.access import ecr
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.retry import RetryPolicy
from pipeline.tools import ecr as tools_ecr

HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
CONFIG = f"""
[image]
name = "team/app"
[[registries]]
name = "ecr"
url = "{HOST}"
auth = "ecr"
[[registries]]
name = "ghcr"
url = "ghcr.io/acme"
[staging]
registry = "ecr"
repository = "staging/app"
[ecr]
tag_immutability = true
mutable_tags = ["latest"]
encryption = "KMS"
kms_key = "alias/ecr"
resource_tags = {{team = "platform"}}
pull_principals = ["111122223333"]
[[lifecycle.rules]]
rulePriority = 1
description = "untagged after 14 days"
selection = {{tagStatus = "untagged", countType = "sinceImagePushed", countUnit = "days", countNumber = 14}}
action = {{type = "expire"}}
"""


def load(tmp_path: Path, text: str = CONFIG) -> config.Config:
    p = tmp_path / "pipeline.toml"
    p.write_text(text)
    return config.load(p, {})


class FakeEcr:
    """Holds repositories like ECR does; records every call."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.lifecycle: dict[str, dict] = {}
        self.policies: dict[str, dict] = {}
        self.calls: list[str] = []

    def describe_repository(self, name, registry_id):
        self.calls.append(f"describe {name}")
        return self.repos.get(name)

    def create_repository(self, request):
        self.calls.append(f"create {request['repositoryName']}")
        repo = {k: v for k, v in request.items() if k not in ("tags", "registryId")}
        self.repos[request["repositoryName"]] = repo
        return repo

    def put_scanning(self, name, registry_id, scan_on_push):
        self.calls.append(f"scanning {name}")
        self.repos[name]["imageScanningConfiguration"] = {"scanOnPush": scan_on_push}

    def put_mutability(self, name, registry_id, mutability, exclusions):
        self.calls.append(f"mutability {name}")
        self.repos[name]["imageTagMutability"] = mutability
        self.repos[name]["imageTagMutabilityExclusionFilters"] = exclusions

    def lifecycle_policy(self, name, registry_id):
        return self.lifecycle.get(name)

    def put_lifecycle_policy(self, name, registry_id, document):
        self.calls.append(f"lifecycle {name}")
        self.lifecycle[name] = json.loads(json.dumps(document))

    def repository_policy(self, name, registry_id):
        return self.policies.get(name)

    def set_repository_policy(self, name, registry_id, document):
        self.calls.append(f"policy {name}")
        self.policies[name] = json.loads(json.dumps(document))


def test_settings_and_create_request(tmp_path):
    cfg = load(tmp_path)
    want = ecr.settings(cfg.ecr)
    assert want.mutability == "IMMUTABLE_WITH_EXCLUSION" and want.exclusions == ("latest",)
    req = ecr.create_request("team/app", want, "123456789012")
    assert req == {"repositoryName": "team/app", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
                   "imageScanningConfiguration": {"scanOnPush": True},
                   "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "alias/ecr"},
                   "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}],
                   "tags": [{"Key": "team", "Value": "platform"}], "registryId": "123456789012"}
    plain = ecr.settings(load(tmp_path, "[image]\nname = 'a'\n").ecr)
    assert (plain.mutability, plain.scan_on_push, plain.encryption) == ("MUTABLE", True, "AES256")


def test_repositories_and_registries(tmp_path):
    cfg = load(tmp_path)
    regs = ecr.ecr_registries(cfg)
    assert [r.name for r in regs] == ["ecr"]
    assert ecr.repositories(cfg, regs[0]) == ["team/app", "staging/app"]
    with pytest.raises(ConfigError, match="not ECR"):
        ecr.ecr_registries(cfg, ["ghcr"])
    with pytest.raises(ConfigError, match="no ECR registry"):
        ecr.ecr_registries(load(tmp_path, "[image]\nname = 'a'\n[[registries]]\nname='x'\nurl='ghcr.io'\n"))


def test_lifecycle_document_comes_from_the_lifecycle_rules(tmp_path):
    doc = ecr.lifecycle_document(load(tmp_path))
    assert doc == {"rules": [{"rulePriority": 1, "description": "untagged after 14 days",
                              "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                            "countUnit": "days", "countNumber": 14},
                              "action": {"type": "expire"}}]}
    assert ecr.lifecycle_document(load(tmp_path, "[image]\nname = 'a'\n")) is None
    bad = CONFIG.replace('countType = "sinceImagePushed"', 'countType = "sometimes"')
    with pytest.raises(ConfigError, match="lifecycle.rules"):
        ecr.lifecycle_document(load(tmp_path, bad))


def test_repository_policy_for_cross_account_pull(tmp_path):
    cfg = load(tmp_path, "[image]\nname = 'a'\n[ecr]\npull_principals = ['111122223333',"
                         " 'arn:aws:iam::444455556666:role/deploy']\npush_principals = ['777788889999']\n"
                         "pull_organizations = ['o-abcdefghij']\n")
    doc = ecr.repository_policy(cfg.ecr)
    assert doc["Version"] == "2012-10-17"
    pull, org, push = doc["Statement"]
    assert pull["Principal"] == {"AWS": ["arn:aws:iam::111122223333:root", "arn:aws:iam::444455556666:role/deploy"]}
    assert pull["Action"] == ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    assert org["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": ["o-abcdefghij"]}}
    assert "ecr:PutImage" in push["Action"] and "ecr:BatchGetImage" in push["Action"]
    assert ecr.repository_policy(load(tmp_path, "[image]\nname = 'a'\n").ecr) is None


def test_ensure_creates_then_is_idempotent_then_repairs(tmp_path):
    cfg = load(tmp_path)
    fake = FakeEcr()
    first = ecr.ensure(cfg, {}, client_factory=lambda region, env: fake)
    assert [(r.repository, r.created, r.lifecycle, r.policy) for r in first] == [
        ("team/app", True, "put", "set"), ("staging/app", True, "put", "set")]
    assert fake.repos["team/app"]["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    fake.calls.clear()
    second = ecr.ensure(cfg, {}, client_factory=lambda region, env: fake)
    assert [(r.created, r.changed, r.lifecycle, r.policy) for r in second] == \
        [(False, [], "unchanged", "unchanged")] * 2
    assert all(c.startswith("describe") for c in fake.calls)
    fake.repos["team/app"]["imageScanningConfiguration"] = {"scanOnPush": False}
    fake.repos["team/app"]["imageTagMutability"] = "MUTABLE"
    fake.repos["team/app"]["encryptionConfiguration"] = {"encryptionType": "AES256"}
    third = ecr.ensure(cfg, {}, client_factory=lambda region, env: fake)
    assert third[0].changed == ["scan_on_push", "mutability"]
    assert any("encryption is AES256" in w for w in third[0].warnings)
    assert fake.repos["team/app"]["imageScanningConfiguration"] == {"scanOnPush": True}


def test_drift_detection():
    want = ecr.RepositorySettings(True, "IMMUTABLE", (), "AES256", None)
    assert ecr.drift({"imageScanningConfiguration": {"scanOnPush": True}, "imageTagMutability": "IMMUTABLE",
                      "encryptionConfiguration": {"encryptionType": "AES256"}}, want) == {"fix": [], "report": []}
    assert ecr.drift({}, want)["fix"] == ["scan_on_push", "mutability"]


# --------------------------------------------------------------------------- tokens and errors


def test_token_expiry_is_believed_only_when_plausible():
    now = 1_000_000.0
    assert tools_ecr.token_expiry(datetime.fromtimestamp(now + 11 * 3600, timezone.utc), now) == now + 11 * 3600
    assert tools_ecr.token_expiry(datetime(2015, 1, 1, tzinfo=timezone.utc), now) == now + 12 * 3600  # moto's
    assert tools_ecr.token_expiry(None, now) == now + 12 * 3600


def test_authorization_token_decodes_and_registers_the_secret():
    from pipeline import log

    class Stub:
        def get_authorization_token(self, **kw):
            assert kw == {"registryIds": ["123456789012"]}
            token = base64.b64encode(b"AWS:the-ecr-password-123").decode()
            return {"authorizationData": [{"authorizationToken": token, "expiresAt": None}]}

    user, password, _ = tools_ecr.EcrClient("eu-west-1", {}, client=Stub()).authorization_token("123456789012")
    assert (user, password) == ("AWS", "the-ecr-password-123")
    assert log.scrub("x the-ecr-password-123 y") == "x *** y"


def test_client_errors_become_one_line_ecr_errors_and_temporary_ones_retry():
    from botocore.exceptions import ClientError, EndpointConnectionError

    calls = {"n": 0}

    class Stub:
        def describe_repositories(self, **kw):
            raise ClientError({"Error": {"Code": "RepositoryNotFoundException", "Message": "nope"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "DescribeRepositories")

        def create_repository(self, **kw):
            calls["n"] += 1
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "CreateRepository")

        def put_lifecycle_policy(self, **kw):
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    client = tools_ecr.EcrClient("eu-west-1", {}, client=Stub(),
                                 policy=RetryPolicy(attempts=3, initial_seconds=0.001, max_seconds=0.002))
    assert client.describe_repository("a", None) is None
    with pytest.raises(tools_ecr.EcrError) as exc:
        client.create_repository({"repositoryName": "a"})
    assert calls["n"] == 3 and "ThrottlingException: slow down (gave up after 3 attempts)" in str(exc.value)
    assert str(exc.value).startswith("ECR eu-west-1: CreateRepository a:") and exc.value.exit_code == 3
    with pytest.raises(tools_ecr.EcrError, match="EndpointConnectionError"):
        client.put_lifecycle_policy("a", None, {"rules": []})


def test_login_token_falls_back_to_the_aws_cli_through_stdout(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "aws").write_text(f"#!/bin/sh\necho \"$*\" > {tmp_path / 'argv'}\necho cli-token-abcdef123456\n")
    (bindir / "aws").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(tools_ecr, "have_boto3", lambda: False)
    creds = tools_ecr.login_token("eu-west-1", None, {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"})
    assert (creds.username, creds.password) == ("AWS", "cli-token-abcdef123456")
    assert creds.expires_at is not None
    assert (tmp_path / "argv").read_text().split() == ["ecr", "get-login-password", "--region", "eu-west-1",
                                                       "--endpoint-url", "http://127.0.0.1:1"]


# --------------------------------------------------------------------------- the command


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(args, env=env or {}, stdout=out, stderr=err), out.getvalue(), err.getvalue()


def test_ecr_policy_command(tmp_path):
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(CONFIG)
    code, out, err = run(["ecr", "policy", "--config", str(cfg)])
    assert code == 0, err
    assert json.loads(out)["Statement"][0]["Principal"] == {"AWS": ["arn:aws:iam::111122223333:root"]}
    cfg.write_text("[image]\nname = 'a'\n")
    code, _, err = run(["ecr", "policy", "--config", str(cfg)])
    assert code == 2 and "no principals" in err
