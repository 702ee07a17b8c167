"""The subprocess chokepoint: a child gets a minimal environment and what its caller hands it by name."""

from __future__ import annotations

import json
import sys

from pipeline.tools import proc

DUMP = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


def _child_env(**kwargs) -> dict[str, str]:
    return json.loads(proc.run(DUMP, what="dump", **kwargs).stdout)


def test_no_secret_of_ours_reaches_a_child_unless_handed_to_it(monkeypatch):
    monkeypatch.setenv("GHCR_TOKEN", "ghp_registry-token-1234")
    monkeypatch.setenv("COSIGN_PASSWORD", "cosign-pass-5678")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-9012")
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    got = _child_env()
    assert not {"GHCR_TOKEN", "COSIGN_PASSWORD", "AWS_SECRET_ACCESS_KEY"} & set(got)
    assert got["LC_ALL"] == "C.UTF-8" and got["PATH"]
    assert "DOCKER_HOST" not in got                     # the docker client's variables: docker tools only
    handed = _child_env(env={"COSIGN_PASSWORD": "cosign-pass-5678"})          # the one tool that needs it
    assert handed["COSIGN_PASSWORD"] == "***" and "GHCR_TOKEN" not in handed  # it had it; its output is scrubbed


def test_streamed_tools_and_daemons_get_the_same_minimal_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKERHUB_TOKEN", "dckr_pat_secret")
    out = proc.stream(DUMP, what="dump")
    assert "DOCKERHUB_TOKEN" not in json.loads(out.stdout.splitlines()[-1])
    log = tmp_path / "daemon.log"
    child = proc.spawn_daemon(DUMP, log)
    child.wait(timeout=60)
    assert "DOCKERHUB_TOKEN" not in json.loads(log.read_text().splitlines()[-1])


def test_credential_tools_and_prefixes_are_said_by_the_caller(monkeypatch):
    monkeypatch.setenv("GIT_DIR", "/src/.git")
    monkeypatch.setenv("GHCR_TOKEN", "ghp_registry-token-1234")
    assert _child_env(inherit=("GIT_",))["GIT_DIR"] == "/src/.git"
    assert "GIT_DIR" not in _child_env()
    assert _child_env(inherit_all=True)["GHCR_TOKEN"] == "ghp_registry-token-1234"   # credential helpers only


def test_the_docker_cli_and_its_plugins_get_the_docker_client_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    monkeypatch.setenv("DOCKER_CONFIG", "/home/u/.docker")
    monkeypatch.setenv("GHCR_TOKEN", "ghp_registry-token-1234")
    plugin = tmp_path / "docker-buildx"
    plugin.write_text(f"#!{sys.executable}\nimport json, os\nprint(json.dumps(dict(os.environ)))\n")
    plugin.chmod(0o755)
    got = json.loads(proc.run([str(plugin)], what="plugin").stdout)
    assert got["DOCKER_HOST"] == "unix:///var/run/docker.sock" and got["DOCKER_CONFIG"] == "/home/u/.docker"
    assert "GHCR_TOKEN" not in got
    assert "DOCKER_CONFIG" not in _child_env()          # cosign, trivy, git: not even the config's path
