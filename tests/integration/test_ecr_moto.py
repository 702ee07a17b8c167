"""`pipeline ecr ensure|policy` and ECR login tokens against moto in server mode (a local ECR API).

moto answers ECR's API on a free 127.0.0.1 port; the pipeline process finds it through
AWS_ENDPOINT_URL, as any boto3 program does. Results are read back with boto3 directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.setup import localregistry

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-1"
HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
KEY_ID, SECRET_KEY = "AKIDMOTOLOCAL", "moto-local-secret-key-1234"
LIFECYCLE = {"rules": [
    {"rulePriority": 1, "description": "untagged after 14 days",
     "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14},
     "action": {"type": "expire"}},
    {"rulePriority": 2, "description": "keep 20 releases",
     "selection": {"tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan",
                   "countNumber": 20},
     "action": {"type": "expire"}}]}
CONFIG = f"""
[image]
name = "team/app"
[[registries]]
name = "ecr"
url = "{HOST}"
auth = "ecr"
[staging]
registry = "ecr"
repository = "staging/app"
[ecr]
scan_on_push = true
tag_immutability = true
mutable_tags = ["latest", "candidate-*"]
encryption = "KMS"
kms_key = "arn:aws:kms:{REGION}:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555"
resource_tags = {{team = "platform"}}
pull_principals = ["111122223333", "arn:aws:iam::444455556666:role/deployer"]
[lifecycle]
policy_file = "lifecycle.json"
[retry]
attempts = 2
initial_seconds = 0.05
max_seconds = 0.1
"""


@pytest.fixture(scope="module")
def moto(tmp_path_factory, require_tool) -> str:
    require_tool("moto_server")  # the moto[server] test extra; CI fails here when it is missing
    port = localregistry.free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not localregistry.listening("127.0.0.1", port):
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "moto did not start: " + log.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=15)


def aws_env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": REGION, "PYTHONPATH": str(ROOT)})
    return env


def boto(endpoint: str):
    import boto3

    return boto3.client("ecr", region_name=REGION, endpoint_url=endpoint, aws_access_key_id=KEY_ID,
                        aws_secret_access_key=SECRET_KEY)


def pipeline(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ecr-project")
    (tmp / "pipeline.toml").write_text(CONFIG)
    (tmp / "lifecycle.json").write_text(json.dumps(LIFECYCLE, indent=2))
    return tmp


@pytest.fixture(scope="module")
def ensured(moto, project) -> dict:
    proc = pipeline(["ecr", "ensure", "--config", "pipeline.toml", "--format", "json"], project, aws_env(moto))
    assert proc.returncode == 0, proc.stderr
    assert SECRET_KEY not in proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def test_ensure_creates_repositories_with_the_configured_settings(ensured, moto):
    assert [(r["repository"], r["created"], r["lifecycle_policy"], r["repository_policy"])
            for r in ensured["repositories"]] == [("team/app", True, "put", "set"), ("staging/app", True, "put", "set")]
    client = boto(moto)
    for name in ("team/app", "staging/app"):
        repo = client.describe_repositories(registryId=ACCOUNT, repositoryNames=[name])["repositories"][0]
        assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
        assert sorted(f["filter"] for f in repo["imageTagMutabilityExclusionFilters"]) == ["candidate-*", "latest"]
        assert repo["encryptionConfiguration"]["encryptionType"] == "KMS"
        assert repo["encryptionConfiguration"]["kmsKey"].endswith("11111111-2222-3333-4444-555555555555")
        tags = client.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
        assert {"Key": "team", "Value": "platform"} in tags


def test_ensure_puts_the_lifecycle_policy_and_repository_policy(ensured, moto):
    client = boto(moto)
    lifecycle = json.loads(client.get_lifecycle_policy(repositoryName="team/app")["lifecyclePolicyText"])
    assert lifecycle == LIFECYCLE
    policy = json.loads(client.get_repository_policy(repositoryName="team/app")["policyText"])
    assert policy["Statement"][0]["Principal"] == {"AWS": ["arn:aws:iam::111122223333:root",
                                                           "arn:aws:iam::444455556666:role/deployer"]}
    assert "ecr:BatchGetImage" in policy["Statement"][0]["Action"]


def test_ensure_again_changes_nothing_then_repairs_drift(ensured, moto, project):
    env = aws_env(moto)
    again = pipeline(["ecr", "ensure", "--config", "pipeline.toml", "--format", "json"], project, env)
    assert again.returncode == 0, again.stderr
    assert [(r["created"], r["changed"], r["lifecycle_policy"], r["repository_policy"])
            for r in json.loads(again.stdout)["repositories"]] == [(False, [], "unchanged", "unchanged")] * 2
    client = boto(moto)
    client.put_image_scanning_configuration(repositoryName="team/app", imageScanningConfiguration={"scanOnPush": False})
    client.put_image_tag_mutability(repositoryName="team/app", imageTagMutability="MUTABLE")
    fixed = pipeline(["ecr", "ensure", "--config", "pipeline.toml"], project, env)
    assert fixed.returncode == 0, fixed.stderr
    assert "team/app: updated scan_on_push, mutability" in fixed.stdout
    repo = client.describe_repositories(repositoryNames=["team/app"])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"


def test_policy_apply(ensured, moto, project):
    client = boto(moto)
    client.delete_repository_policy(repositoryName="staging/app")
    proc = pipeline(["ecr", "policy", "--config", "pipeline.toml", "--apply", "--format", "json"], project,
                    aws_env(moto))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["applied"] == ["ecr:team/app", "ecr:staging/app"]
    assert json.loads(client.get_repository_policy(repositoryName="staging/app")["policyText"]) == data["policy"]


def test_unreachable_endpoint_is_a_one_line_infra_error(project):
    env = aws_env(f"http://127.0.0.1:{localregistry.free_port()}")
    proc = pipeline(["ecr", "ensure", "--config", "pipeline.toml"], project, env)
    assert proc.returncode == 3
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("pipeline: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert errors[0].startswith("pipeline: error: ECR eu-west-1: DescribeRepositories team/app:")
    assert "EndpointConnectionError" in errors[0] and errors[0].endswith("(gave up after 2 attempts)")


def test_ecr_login_token_through_boto3(moto, project):
    from pipeline import config, log
    from pipeline.access.registries import Access

    cfg = config.load(project / "pipeline.toml", {})
    now = time.time()
    with Access(cfg, aws_env(moto)) as access:
        creds = access.credentials(cfg.registry("ecr"))
    assert creds.username == "AWS" and creds.password
    assert now + 11.9 * 3600 < creds.expires_at < now + 12.1 * 3600
    assert log.scrub(f"x {creds.password} y") == "x *** y"
