"""Registry access: credential sources (env, GHCR, Docker Hub, ECR), token refresh, `pipeline login`,
the tool docker config, and the local registry's TLS trust set-up and restart settings."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest

from pipeline import config
from pipeline.access import registries
from pipeline.cli import main
from pipeline.setup import localregistry
from pipeline.tools import ecr as tools_ecr
from pipeline.tools.registry import Credentials

ECR_HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
CONFIG = f"""
[image]
name = "app"
[[registries]]
name = "ghcr"
url = "ghcr.io/acme"
auth = "ghcr"
[[registries]]
name = "hub"
url = "docker.io/acme"
auth = "dockerhub"
password_env = "HUB_PAT"
[[registries]]
name = "ecr"
url = "{ECR_HOST}"
auth = "ecr"
[[registries]]
name = "local"
url = "localhost:5000"
[[registries]]
name = "anon"
url = "127.0.0.1:5001"
auth = "none"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> config.Config:
    p = tmp_path / "pipeline.toml"
    p.write_text(CONFIG)
    return config.load(p, {})


@pytest.fixture
def ecr_tokens(monkeypatch):
    """Fake ECR: each call hands out a new token; the list records (region, registry id)."""
    calls: list[tuple[str, str | None]] = []
    clock = {"now": 1_000_000.0}

    def token(region, registry_id, env, **kw):
        calls.append((region, registry_id))
        return Credentials("AWS", f"ecr-token-{len(calls)}-" + "x" * 12, expires_at=clock["now"] + 12 * 3600)

    monkeypatch.setattr(tools_ecr, "login_token", token)
    return calls, clock


def test_credential_sources_and_defaults(cfg, ecr_tokens):
    env = {"GITHUB_ACTOR": "octo", "GITHUB_TOKEN": "ghs_" + "a" * 20, "DOCKERHUB_USERNAME": "acme",
           "HUB_PAT": "dckr_pat_" + "b" * 20}
    by = {r.name: r for r in cfg.registries}
    assert registries.resolve_credentials(by["ghcr"], env) == Credentials("octo", env["GITHUB_TOKEN"])
    assert registries.resolve_credentials(by["hub"], env) == Credentials("acme", env["HUB_PAT"])
    assert registries.resolve_credentials(by["anon"], env) is None
    ecr = registries.resolve_credentials(by["ecr"], env)
    assert ecr.username == "AWS" and ecr_tokens[0] == [("eu-west-1", "123456789012")]
    assert by["hub"].credential_env == ("DOCKERHUB_USERNAME", "HUB_PAT")
    assert registries.credential_source(by["ghcr"]) == "$GITHUB_ACTOR / $GITHUB_TOKEN"
    assert registries.credential_source(by["local"]).startswith("docker config")


def test_missing_env_names_the_variable(cfg):
    from pipeline.tools.registry import RegistryError

    with pytest.raises(RegistryError, match="GITHUB_TOKEN is not set"):
        registries.resolve_credentials(cfg.registry("ghcr"), {"GITHUB_ACTOR": "octo"})


def test_ecr_token_is_refreshed_an_hour_before_it_expires(cfg, ecr_tokens):
    calls, clock = ecr_tokens
    access = registries.Access(cfg, {}, clock=lambda: clock["now"])
    reg = cfg.registry("ecr")
    first = access.credentials(reg)
    client = access.client(reg)
    assert access.credentials(reg) is first and len(calls) == 1
    clock["now"] += 10.5 * 3600  # 1.5 h left: still fine
    assert access.credentials(reg) is first
    clock["now"] += 0.6 * 3600   # 0.9 h left: fetch a new one
    second = access.credentials(reg)
    assert second is not first and len(calls) == 2
    assert access.client(reg) is client and client.credentials is second
    access.close()


def test_tool_docker_config_is_rewritten_when_a_token_is_refreshed(cfg, ecr_tokens, tmp_path):
    calls, clock = ecr_tokens
    user = tmp_path / "user-docker"
    user.mkdir()
    (user / "config.json").write_text(json.dumps({"credsStore": "desktop", "auths": {"other.io": {}}}))
    env = {"DOCKER_CONFIG": str(user), "GITHUB_ACTOR": "octo", "GITHUB_TOKEN": "ghs_" + "c" * 20,
           "DOCKERHUB_USERNAME": "acme", "HUB_PAT": "dckr_pat_" + "d" * 20}
    with registries.Access(cfg, env, clock=lambda: clock["now"]) as access:
        d = access.tool_docker_config()
        data = json.loads((d / "config.json").read_text())
        auths = data["auths"]
        assert base64.b64decode(auths["ghcr.io"]["auth"]).decode() == f"octo:{env['GITHUB_TOKEN']}"
        assert "https://index.docker.io/v1/" in auths and "other.io" in auths
        assert base64.b64decode(auths[ECR_HOST]["auth"]).decode().startswith("AWS:ecr-token-1-")
        # credsStore would hide "auths" for these hosts from docker/buildx/cosign: an empty helper selects the file
        assert data["credHelpers"] == {"ghcr.io": "", "https://index.docker.io/v1/": "", ECR_HOST: ""}
        assert oct((d / "config.json").stat().st_mode & 0o777) == "0o600"
        clock["now"] += 11.5 * 3600
        assert access.tool_docker_config() == d
        data = json.loads((d / "config.json").read_text())
        assert base64.b64decode(data["auths"][ECR_HOST]["auth"]).decode().startswith("AWS:ecr-token-2-")
    assert not d.exists()
    assert json.loads((user / "config.json").read_text()) == {"credsStore": "desktop", "auths": {"other.io": {}}}


# --------------------------------------------------------------------------- pipeline login


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """A `docker` that records argv and stdin (and fails for the password 'wrong')."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "docker-calls"
    script = bindir / "docker"
    script.write_text("#!/bin/sh\n"
                      f"echo \"ARGV $* DOCKER_CONFIG=$DOCKER_CONFIG\" >> {record}\n"
                      f"read pw; echo \"STDIN $pw\" >> {record}\n"
                      "if [ \"$pw\" = wrong ]; then echo 'Error response from daemon: login attempt to"
                      " http://127.0.0.1:5000/v2/ failed with status: 401 Unauthorized' >&2; exit 1; fi\n"
                      "echo 'Login Succeeded'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return record


def run(args: list[str], env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    import sys

    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return main(args, env=env, stdout=out, stderr=err), out.getvalue(), err.getvalue()
    finally:
        sys.stdin = old


def test_login_every_registry_through_stdin(cfg, tmp_path, fake_docker, ecr_tokens):
    token = "ghs_" + "e" * 20
    env = {"DOCKER_CONFIG": str(tmp_path / "dc"), "GITHUB_ACTOR": "octo", "GITHUB_TOKEN": token,
           "DOCKERHUB_USERNAME": "acme", "HUB_PAT": "dckr_pat_" + "f" * 20}
    code, out, err = run(["login", "--config", str(tmp_path / "pipeline.toml"), "--format", "json"], env)
    assert code == 0, err
    by = {r["registry"]: r for r in json.loads(out)["registries"]}
    assert by["ghcr"]["action"] == "logged in as octo" and by["hub"]["action"] == "logged in as acme"
    assert by["ecr"]["action"] == "logged in as AWS" and "expires_at" in by["ecr"]
    assert by["local"]["action"].startswith("not logged in: pipeline login --registry local")
    assert by["anon"]["action"] == "skipped: auth = none"
    calls = fake_docker.read_text().splitlines()
    argv = [c for c in calls if c.startswith("ARGV")]
    assert argv[0] == f"ARGV login --username octo --password-stdin ghcr.io DOCKER_CONFIG={tmp_path / 'dc'}"
    assert argv[1].startswith("ARGV login --username acme --password-stdin docker.io ")
    assert argv[2].startswith(f"ARGV login --username AWS --password-stdin {ECR_HOST} ")
    assert f"STDIN {token}" in calls and all(token not in a for a in argv)
    assert token not in err and token not in out


def test_login_by_hand_for_a_docker_auth_registry(cfg, tmp_path, fake_docker):
    env = {"DOCKER_CONFIG": str(tmp_path / "dc")}
    code, out, err = run(["login", "--config", str(tmp_path / "pipeline.toml"), "--registry", "local",
                          "--username", "alice", "--password-stdin"], env, stdin="hunter2-hunter2\n")
    assert code == 0, err
    assert "local" in out and "logged in as alice" in out and "hunter2" not in out + err
    assert "ARGV login --username alice --password-stdin localhost:5000" in fake_docker.read_text()


def test_login_wrong_password_is_one_line(cfg, tmp_path, fake_docker):
    env = {"DOCKER_CONFIG": str(tmp_path / "dc")}
    code, out, err = run(["login", "--config", str(tmp_path / "pipeline.toml"), "--registry", "local",
                          "--username", "alice", "--password-stdin"], env, stdin="wrong\n")
    assert code == 3
    assert err.count("\n") == 1 and err.startswith("pipeline: error: login local (localhost:5000): docker failed:")
    assert "401 Unauthorized" in err


def test_login_usage_errors(cfg, tmp_path):
    cfgp = str(tmp_path / "pipeline.toml")
    code, _, err = run(["login", "--config", cfgp, "--username", "a"], {})
    assert code == 2 and "go together" in err
    code, _, err = run(["login", "--config", cfgp, "--username", "a", "--password-stdin"], {}, stdin="pw\n")
    assert code == 2 and "--registry NAME" in err
    code, _, err = run(["login", "--config", cfgp, "--registry", "local", "--username", "a", "--password-stdin"], {},
                       stdin="\n")
    assert code == 2 and "no password" in err


# --------------------------------------------------------------------------- local registry: TLS trust, restart


def _instance(tmp_path: Path, **kw) -> localregistry.RegistryInstance:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    base = dict(name="local", host="127.0.0.1:5443", port=5443, data_dir=tmp_path / "data", state_dir=tmp_path,
                pid=1, auth=True, delete=True, tls=True, backend="binary", ca_cert=cert)
    base.update(kw)
    return localregistry.RegistryInstance(**base)


def test_trust_certificate_writes_certs_d_for_every_client_name(tmp_path):
    inst = _instance(tmp_path)
    assert localregistry.certs_d_hosts(inst) == ["127.0.0.1:5443", "localhost:5443"]
    written = localregistry.trust_certificate(inst, tmp_path / "certs.d")
    assert [p.relative_to(tmp_path / "certs.d").as_posix() for p in written] == ["127.0.0.1:5443/ca.crt",
                                                                                 "localhost:5443/ca.crt"]
    assert written[0].read_text() == inst.ca_cert.read_text()
    with pytest.raises(Exception, match="does not serve TLS"):
        localregistry.trust_certificate(_instance(tmp_path, tls=False), tmp_path / "x")


def test_serve_local_restarts_with_the_last_settings(tmp_path, monkeypatch):
    p = tmp_path / "pipeline.toml"
    p.write_text("[image]\nname = 'a'\n[[registries]]\nname = 'local'\nurl = 'localhost:5443'\nserve = true\n")
    cfg = config.load(p, {})
    last = _instance(tmp_path, htpasswd=tmp_path / "htpasswd")
    started: list[dict] = []
    monkeypatch.setattr(localregistry, "listening", lambda host, port, timeout=0.5: False)
    monkeypatch.setattr(localregistry, "last_instance", lambda name, **kw: last)
    monkeypatch.setattr(localregistry, "start", lambda name, **kw: started.append(kw) or last)
    assert registries.serve_local(cfg) == ["local"]
    assert started[0]["htpasswd"] == tmp_path / "htpasswd" and started[0]["tls"] is True
    assert started[0]["data_dir"] == tmp_path / "data" and started[0]["port"] == 5443
    monkeypatch.setattr(localregistry, "last_instance", lambda name, **kw: None)
    registries.serve_local(cfg)
    assert started[1]["htpasswd"] is None and started[1]["tls"] is False


def test_a_killed_runs_private_docker_config_is_removed_by_the_next_one(tmp_path):
    """The private docker config holds registry credentials: a run killed with -9 cannot remove it, so the
    next run does (its pid in the name says whose it is)."""
    import os
    import subprocess
    import sys

    from pipeline.access.registries import TOOL_CONFIG_PREFIX, remove_stale_tool_configs

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = tmp_path / f"{TOOL_CONFIG_PREFIX}{dead.stdout.strip()}-abc"
    alive = tmp_path / f"{TOOL_CONFIG_PREFIX}{os.getppid()}-def"
    mine = tmp_path / f"{TOOL_CONFIG_PREFIX}{os.getpid()}-ghi"
    for path in (stale, alive, mine):
        path.mkdir()
        (path / "config.json").write_text('{"auths": {"r": {"auth": "c2VjcmV0"}}}')
    assert remove_stale_tool_configs(tmp_path) == [stale]
    assert not stale.exists() and alive.exists() and mine.exists()
