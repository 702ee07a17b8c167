"""Access and distribution on the real toolchain (issue 7 acceptance).

A registry started the way a user does (`pipeline registry adduser` + `start --auth`, as
`nox -s registry -- …` runs them), a release against it with htpasswd auth (credentials from
env variables, then from the docker config after `pipeline login`), the native CI outputs of
that release, and a Kubernetes pull secret that lets a plain `docker pull` fetch the image.
Every command runs as its own `python -m pipeline` process; results are checked with raw
HTTP and the docker CLI. The password must never show in any output.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml

from pipeline.setup import localregistry
from tests.support import project

ROOT = Path(__file__).resolve().parents[2]
SHA = "7e57ab1e7e57ab1e7e57ab1e7e57ab1e7e57ab1e"
TAGS = ["1.4.0", "1.4", "1", "latest"]
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY app.txt /app.txt
"""


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "htpasswd"):
        require_tool(tool)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "JENKINS"))}
    env.update({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/tags/v1.4.0", "GITHUB_SHA": SHA,
                "GITHUB_EVENT_NAME": "push", "GITHUB_REPOSITORY": "acme/app", "GITHUB_SERVER_URL": "https://github.com",
                "SOURCE_DATE_EPOCH": "1700000000", "PYTHONPATH": str(ROOT)})
    env.pop("CI", None)
    env.pop("PIPELINE_REGISTRY_PASSWORD", None)
    env.update(extra)
    return env


def pipeline(args: list[str], cwd: Path, env: dict[str, str], stdin: str | None = None,
             timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def assert_hidden(proc: subprocess.CompletedProcess, *values: str) -> None:
    for v in values:
        assert v not in proc.stdout and v not in proc.stderr, "a secret leaked into the output"


class Own:
    """The registry this module starts through the CLI."""

    def __init__(self, cwd: Path, port: int, user: str, password: str) -> None:
        self.cwd, self.port, self.user, self.password = cwd, port, user, password
        self.host = f"127.0.0.1:{port}"

    def auth(self) -> tuple[str, str]:
        return self.user, self.password

    def tags(self, repo: str) -> list[str]:
        r = httpx.get(f"http://{self.host}/v2/{repo}/tags/list", auth=self.auth(), timeout=30)
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return r.json().get("tags") or []


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Any:
    cwd = tmp_path_factory.mktemp("own-registry")
    user, password = "alice", "pw-" + secrets.token_urlsafe(18)
    port = localregistry.free_port()
    env = base_env()
    add = pipeline(["registry", "adduser", user, "--name", "own"], cwd, env, stdin=password + "\n", timeout=60)
    assert add.returncode == 0, add.stderr
    assert_hidden(add, password)
    start = pipeline(["registry", "start", "--name", "own", "--auth", "--port", str(port)], cwd, env, timeout=120)
    assert start.returncode == 0, start.stderr
    assert "auth on" in start.stdout and "pipeline login" in start.stdout
    try:
        yield Own(cwd, port, user, password)
    finally:
        stop = pipeline(["registry", "stop", "--name", "own"], cwd, env, timeout=60)
        assert stop.returncode == 0, stop.stderr


def write_project(tmp: Path, own: Own, offline_base: str, *, auth: str, name: str = "team/app") -> Path:
    entry = ('auth = "env"\nusername_env = "OWN_USER"\npassword_env = "OWN_PASSWORD"\n' if auth == "env"
             else 'auth = "docker"\n')
    registry = SimpleNamespace(toml=f'[[registries]]\nname = "own"\nurl = "{own.host}"\n{entry}')
    return project.write_project(tmp, {"own": registry}, offline_base, name=name, dockerfile=DOCKERFILE,
                                 release=("own",), staging="own", platforms=("linux/amd64",))


@pytest.fixture(scope="module")
def released(tmp_path_factory, own, offline_base):
    """A tag release to the htpasswd registry, credentials from env variables, in a GitHub-like environment."""
    tmp = tmp_path_factory.mktemp("access-release")
    cfg = write_project(tmp, own, offline_base, auth="env")
    gh_output, gh_summary = tmp / "github_output", tmp / "step_summary"
    env = base_env(OWN_USER=own.user, OWN_PASSWORD=own.password, GITHUB_OUTPUT=str(gh_output),
                   GITHUB_STEP_SUMMARY=str(gh_summary))
    proc = pipeline(["release", "--config", str(cfg), "--format", "json"], tmp, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_hidden(proc, own.password)
    return tmp, cfg, json.loads(proc.stdout), proc


# --------------------------------------------------------------------------- the registry command


def test_registry_status_and_stop_behave(tmp_path, require_tool):
    env = base_env()
    port = localregistry.free_port()
    start = pipeline(["registry", "start", "--name", "life", "--port", str(port), "--format", "json"], tmp_path, env)
    assert start.returncode == 0, start.stderr
    assert json.loads(start.stdout)["running"] is True
    status = pipeline(["registry", "status", "--name", "life", "--format", "json"], tmp_path, env)
    data = json.loads(status.stdout)
    assert status.returncode == 0 and data["address"] == f"127.0.0.1:{port}" and data["auth"] is False
    assert pipeline(["registry", "stop", "--name", "life"], tmp_path, env).stdout.strip() == "registry life: stopped"
    status = pipeline(["registry", "status", "--name", "life"], tmp_path, env)
    assert status.returncode == 3 and status.stdout.strip() == "registry life: not running"
    again = pipeline(["registry", "stop", "--name", "life"], tmp_path, env)
    assert again.returncode == 0 and "was not running" in again.stdout
    assert not localregistry.listening("127.0.0.1", port)


def test_start_auth_without_users_is_a_usage_error(tmp_path):
    proc = pipeline(["registry", "start", "--name", "nousers", "--auth", "--port", "0"], tmp_path, base_env())
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "adduser" in proc.stderr


def test_tls_registry_prints_the_certs_d_set_up_and_does_it_with_trust(tmp_path, require_tool):
    require_tool("openssl")
    env = base_env()
    port = localregistry.free_port()
    try:
        start = pipeline(["registry", "start", "--name", "tls", "--tls", "--port", str(port)], tmp_path, env)
        assert start.returncode == 0, start.stderr
        assert f"/etc/docker/certs.d/127.0.0.1:{port}/ca.crt" in start.stdout
        assert f"/etc/docker/certs.d/localhost:{port}" in start.stdout and "--trust" in start.stdout
        certs_d = tmp_path / "certs.d"
        trust = pipeline(["registry", "status", "--name", "tls", "--trust", "--certs-d", str(certs_d),
                          "--format", "json"], tmp_path, env)
        assert trust.returncode == 0, trust.stderr
        written = json.loads(trust.stdout)["certs_d"]
        assert written == [str(certs_d / f"127.0.0.1:{port}" / "ca.crt"), str(certs_d / f"localhost:{port}" / "ca.crt")]
        ca = Path(written[0]).read_text()
        assert ca.startswith("-----BEGIN CERTIFICATE-----")
        trusted = ssl.create_default_context(cafile=written[0])
        assert httpx.get(f"https://127.0.0.1:{port}/v2/", verify=trusted, timeout=10).status_code == 200
    finally:
        pipeline(["registry", "stop", "--name", "tls"], tmp_path, env)


# --------------------------------------------------------------------------- release with htpasswd auth


def test_release_with_htpasswd_auth(released, own):
    _, _, manifest, _ = released
    assert manifest["status"] == "ok" and manifest["tags"] == TAGS
    assert sorted(own.tags("team/app")) == sorted(TAGS)
    r = httpx.get(f"http://{own.host}/v2/team/app/tags/list", timeout=30)
    assert r.status_code == 401  # the registry really requires the password


def test_release_writes_github_outputs_summary_dotenv_and_junit(released, own):
    tmp, _, manifest, _ = released
    text = (tmp / "github_output").read_text()
    outputs: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if "<<" in lines[i]:
            key, delim = lines[i].split("<<", 1)
            end = lines.index(delim, i + 1)
            outputs[key] = "\n".join(lines[i + 1:end])
            i = end + 1
        elif lines[i]:
            key, value = lines[i].split("=", 1)
            outputs[key] = value
            i += 1
        else:
            i += 1
    assert set(outputs) == {"status", "digest", "version", "tags", "refs", "images"}
    assert outputs["digest"] == manifest["digest"] and outputs["version"] == "1.4.0" and outputs["status"] == "ok"
    assert outputs["tags"].split("\n") == TAGS
    assert outputs["refs"].split("\n") == [f"{own.host}/team/app:{t}" for t in TAGS]
    assert outputs["images"] == f"{own.host}/team/app@{manifest['digest']}"
    summary = (tmp / "step_summary").read_text()
    assert "Release of `team/app` 1.4.0" in summary and manifest["digest"] in summary
    dotenv = dict(ln.split("=", 1) for ln in (tmp / "dist" / "release.env").read_text().splitlines())
    assert dotenv["PIPELINE_DIGEST"] == manifest["digest"] and dotenv["PIPELINE_TAGS"] == ",".join(TAGS)
    junit = (tmp / "dist" / "junit.xml").read_text()
    assert '<testcase classname="pipeline.release.stages" name="build"' in junit and "<failure" not in junit


def test_login_then_release_through_the_docker_config(released, own, tmp_path, offline_base):
    """The embedded default's way: auth = "docker"; `pipeline login` puts the credentials in the docker config."""
    docker_config = tmp_path / "docker-config"
    cfg = write_project(tmp_path, own, offline_base, auth="docker")
    env = base_env(DOCKER_CONFIG=str(docker_config))
    before = pipeline(["release", "--config", str(cfg)], tmp_path, env)
    assert before.returncode == 3 and "authentication required" in before.stderr
    assert "pipeline login" in before.stderr
    login = pipeline(["login", "--config", str(cfg), "--registry", "own", "--username", own.user,
                      "--password-stdin"], tmp_path, env, stdin=own.password + "\n", timeout=120)
    assert login.returncode == 0, login.stderr
    assert "logged in as alice" in login.stdout
    assert_hidden(login, own.password)
    auths = json.loads((docker_config / "config.json").read_text())["auths"]
    assert own.host in auths
    status = pipeline(["login", "--config", str(cfg), "--format", "json"], tmp_path, env)
    assert json.loads(status.stdout)["registries"][0]["action"] == "already in the docker config"
    proc = pipeline(["release", "--config", str(cfg), "--format", "json"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["candidate"]["reused"] is True  # same build inputs as the first release
    assert_hidden(proc, own.password)


def test_wrong_password_is_a_one_line_error(released, own, tmp_path, offline_base):
    wrong = "not-the-password-" + secrets.token_hex(6)
    cfg = write_project(tmp_path, own, offline_base, auth="env")
    env = base_env(DOCKER_CONFIG=str(tmp_path / "dc"), OWN_USER=own.user, OWN_PASSWORD=wrong)
    login = pipeline(["login", "--config", str(cfg), "--registry", "own"], tmp_path, env, timeout=120)
    assert login.returncode == 3
    assert login.stderr.count("\n") == 1 and login.stderr.startswith("pipeline: error: login own")
    assert "401" in login.stderr or "unauthorized" in login.stderr.lower()
    release = pipeline(["release", "--config", str(cfg)], tmp_path, env)
    assert release.returncode == 3
    errors = [ln for ln in release.stderr.splitlines() if ln.startswith("pipeline: error:")]
    assert len(errors) == 1 and "authentication failed for user 'alice'" in errors[0]
    assert_hidden(login, wrong, own.password)
    assert_hidden(release, wrong, own.password)


# --------------------------------------------------------------------------- pull secret


def test_pull_secret_lets_plain_docker_pull_the_release(released, own, tmp_path):
    _, cfg, manifest, _ = released
    out = tmp_path / "regcred.yaml"
    env = base_env(OWN_USER=own.user, OWN_PASSWORD=own.password)
    proc = pipeline(["--log-format", "json", "pull-secret", "--config", str(cfg), "--registry", "own",
                     "--namespace", "apps", "--service-account", "default", "--output", str(out)], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    secret, sa = list(yaml.safe_load_all(out.read_text()))
    assert sa["imagePullSecrets"] == [{"name": "regcred"}]
    encoded = secret["data"][".dockerconfigjson"]
    assert_hidden(proc, own.password, encoded)
    image = f"{own.host}/team/app:1.4.0"
    anonymous = tmp_path / "anonymous"
    anonymous.mkdir()
    (anonymous / "config.json").write_text("{}")
    denied = subprocess.run(["docker", "--config", str(anonymous), "pull", "-q", image], capture_output=True, text=True,
                            timeout=300)
    assert denied.returncode != 0  # without the secret the registry says no
    dockercfg = tmp_path / "from-secret"
    dockercfg.mkdir(mode=0o700)
    (dockercfg / "config.json").write_bytes(base64.b64decode(encoded))
    pulled = subprocess.run(["docker", "pull", "-q", image], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "DOCKER_CONFIG": str(dockercfg)})
    try:
        assert pulled.returncode == 0, pulled.stderr
        inspect = subprocess.run(["docker", "image", "inspect", image, "--format", "{{json .RepoDigests}}"],
                                 capture_output=True, text=True, timeout=60)
        assert manifest["digest"] in inspect.stdout, (inspect.stdout, inspect.stderr, pulled.stdout)
    finally:
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, timeout=120)
    shutil.rmtree(dockercfg)
