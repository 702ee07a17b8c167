"""Registry access for one run: a client per configured registry, and a docker config for child tools.

Credentials come from the source each ``[[registries]]`` entry names: the
docker config and its credential helpers (default), environment variables
(``env``; ``ghcr`` and ``dockerhub`` are env with well-known default names), or
ECR (a 12-hour token, refreshed an hour before it expires). The project's client
carries every image byte; buildx, the one child tool that still reads a registry
(its build cache, the base image), reads credentials from a docker config:
:class:`Access` writes a private one (0700 temp dir) that adds the env/ECR
credentials to the user's, so secrets never appear on a command line and the
user's own config is never modified.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline import log
from pipeline.config import Config, RegistryConfig
from pipeline.errors import ConfigError
from pipeline.retry import RetryPolicy
from pipeline.tools import proc
from pipeline.tools.registry import (
    DOCKER_HUB_HOSTS,
    DOCKER_HUB_KEY,
    Credentials,
    Registry,
    credentials_from_docker_config,
    credentials_from_env,
    docker_config_dir,
)

#: Refresh credentials that expire (ECR tokens: 12 h) this long before they do.
REFRESH_MARGIN_S = 3600.0


def ecr_region(reg: RegistryConfig, env: Mapping[str, str]) -> str:
    region = reg.ecr_region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        raise ConfigError(f"registries[{reg.name}].aws_region: needed for auth = \"ecr\" (or set AWS_REGION)")
    return region


def credential_source(reg: RegistryConfig) -> str:
    """Where ``reg``'s credentials come from, in words (for plans, login and errors)."""
    if reg.auth == "none":
        return "none (anonymous)"
    if reg.auth == "ecr":
        return "ECR token (boto3 or aws ecr get-login-password)"
    names = reg.credential_env
    if names:
        return f"${names[0]} / ${names[1]}"
    return "docker config (credential helpers included)"


def resolve_credentials(reg: RegistryConfig, env: Mapping[str, str],
                        policy: RetryPolicy | None = None) -> Credentials | None:
    if reg.auth == "none":
        return None
    names = reg.credential_env
    if names:
        return credentials_from_env(reg.name, names[0], names[1], env)
    if reg.auth == "ecr":
        from pipeline.tools import ecr

        return ecr.login_token(ecr_region(reg, env), reg.ecr_account, env, policy=policy,
                               what=f"ECR login for {reg.name}")
    return credentials_from_docker_config(reg.host, env)


def needs_refresh(creds: Credentials | None, now: float) -> bool:
    return creds is not None and creds.expires_at is not None and creds.expires_at - REFRESH_MARGIN_S <= now


TOOL_CONFIG_PREFIX = "pipeline-docker-"


def remove_stale_tool_configs(root: Path | None = None) -> list[Path]:
    """Private docker configs (they hold credentials) left by a process that was killed: removed by the
    next one, found by the pid in their name."""
    root = root or Path(tempfile.gettempdir())
    removed = []
    for path in root.glob(f"{TOOL_CONFIG_PREFIX}*"):
        pid = path.name[len(TOOL_CONFIG_PREFIX):].split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not proc.pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class Access:
    """Clients and the tool docker config for one command; use as a context manager."""

    def __init__(self, config: Config, env: Mapping[str, str], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.env = env
        self.policy = RetryPolicy.from_config(config.retry)
        self._clients: dict[str, Registry] = {}
        self._creds: dict[str, Credentials | None] = {}
        self._tool_dir: Path | None = None
        self._tool_written: dict[str, Credentials | None] = {}
        self._clock = clock
        self._lock = threading.RLock()     # a run's stages and their threads share one Access

    def __enter__(self) -> Access:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._tool_dir:
            shutil.rmtree(self._tool_dir, ignore_errors=True)
            self._tool_dir = None

    def credentials(self, reg: RegistryConfig) -> Credentials | None:
        """The registry's credentials, resolved once and fetched again before they expire."""
        with self._lock:
            return self._credentials(reg)

    def _credentials(self, reg: RegistryConfig) -> Credentials | None:
        if reg.name not in self._creds or needs_refresh(self._creds[reg.name], self._clock()):
            refreshing = reg.name in self._creds
            self._creds[reg.name] = resolve_credentials(reg, self.env, self.policy)
            if refreshing:
                log.get().info("credentials.refreshed", registry=reg.name, source=credential_source(reg))
        return self._creds[reg.name]

    def client(self, reg: RegistryConfig) -> Registry:
        with self._lock:
            return self._client(reg)

    def _client(self, reg: RegistryConfig) -> Registry:
        creds = self._credentials(reg)
        if reg.name not in self._clients:
            self._clients[reg.name] = Registry(reg.host, name=reg.name, insecure=reg.allow_http,
                                               credentials=creds, policy=self.policy)
        elif self._clients[reg.name].credentials is not creds:
            self._clients[reg.name].credentials = creds  # a refreshed token (basic auth: read per request)
        return self._clients[reg.name]

    def tool_env(self) -> dict[str, str]:
        """Environment for child tools: DOCKER_CONFIG pointing at the private config."""
        return {"DOCKER_CONFIG": str(self.tool_docker_config())}

    def tool_docker_config(self) -> Path:
        """The private docker config dir; rewritten in place when a credential was refreshed."""
        with self._lock:
            return self._tool_docker_config()

    def _tool_docker_config(self) -> Path:
        managed = [reg for reg in self.config.registries if reg.auth == "ecr" or reg.credential_env]
        current = {reg.name: self._credentials(reg) for reg in managed}
        if self._tool_dir and all(current[n] is self._tool_written.get(n) for n in current):
            return self._tool_dir
        user_dir = docker_config_dir(self.env)
        data: dict[str, Any] = {}
        try:
            data = json.loads((user_dir / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
        auths = dict(data.get("auths") or {})
        for reg in managed:
            creds = current[reg.name]
            if creds:
                raw = f"{creds.username}:{creds.password}".encode()
                key = DOCKER_HUB_KEY if reg.host in DOCKER_HUB_HOSTS else reg.host
                auths[key] = {"auth": base64.b64encode(raw).decode()}
                # A credential helper (credHelpers, or credsStore for every host) would win over "auths" in
                # the docker CLI's lookup; an empty helper name for the host selects the file store instead.
                helpers = {k: v for k, v in (data.get("credHelpers") or {}).items() if k not in (key, reg.host)}
                if data.get("credsStore"):
                    helpers[key] = ""
                data["credHelpers"] = helpers
        data["auths"] = auths
        self._tool_written = current
        if self._tool_dir:
            cfg = self._tool_dir / "config.json"
            tmp_cfg = cfg.with_name("config.json.tmp")
            tmp_cfg.touch(mode=0o600)
            tmp_cfg.write_text(json.dumps(data))
            tmp_cfg.replace(cfg)
            return self._tool_dir
        remove_stale_tool_configs()
        tmp = Path(tempfile.mkdtemp(prefix=f"{TOOL_CONFIG_PREFIX}{os.getpid()}-"))
        tmp.chmod(0o700)
        cfg = tmp / "config.json"
        cfg.touch(mode=0o600)
        cfg.write_text(json.dumps(data))
        # buildx keeps builder state next to the config; share the user's so builders stay known.
        for sub in ("buildx", "cli-plugins", "contexts"):
            if (user_dir / sub).exists():
                (tmp / sub).symlink_to(user_dir / sub)
        self._tool_dir = tmp
        return tmp


def serve_local(config: Config) -> list[str]:
    """Start the local registries marked ``serve = true`` when nothing listens at their address."""
    from pipeline.setup import localregistry

    started: list[str] = []
    for reg in config.registries:
        if not reg.serve:
            continue
        hostname, _, port_text = reg.host.rpartition(":")
        port = int(port_text) if port_text.isdigit() else 80
        if localregistry.listening(hostname or "127.0.0.1", port):
            continue
        # started before (e.g. `pipeline registry start --auth`): start it again the same way
        last = localregistry.last_instance(reg.name)
        same = last is not None and last.port == port
        instance = localregistry.start(
            reg.name, port=port, htpasswd=last.htpasswd if same and last else None,
            tls=bool(same and last and last.tls), delete=last.delete if same and last else True,
            data_dir=last.data_dir if same and last else None, bind=last.bind if same and last else "127.0.0.1")
        log.get().info("registry.started", registry=reg.name, address=instance.host, auth=instance.auth,
                       data=str(instance.data_dir), note="serve = true and nothing listened there")
        started.append(reg.name)
    return started


# --------------------------------------------------------------------------- pipeline login


def select(config: Config, names: list[str] | None) -> list[RegistryConfig]:
    """The named registries (every one when ``names`` is empty); an unknown name is a config error."""
    return [config.registry(n) for n in names] if names else list(config.registries)


def login(config: Config, env: Mapping[str, str], names: list[str] | None = None,
          manual: Credentials | None = None) -> list[dict[str, Any]]:
    """``docker login`` (password on stdin) for every selected registry whose credentials pipeline resolves.

    ``auth = "docker"`` registries already live in the docker config: they are reported (logged in
    or not) unless ``manual`` credentials are given for exactly one of them. Returns one entry per
    registry: ``{"registry", "host", "source", "action", "expires_at"?}``.
    """
    from pipeline.tools.login import docker_login, login_server

    regs = select(config, names)
    if manual is not None and len(regs) != 1:
        raise ConfigError("pipeline login: --username/--password-stdin log in to one registry; name it with"
                          " --registry NAME")
    docker_dir = docker_config_dir(env)
    results: list[dict[str, Any]] = []
    with Access(config, env) as access:
        for reg in regs:
            entry: dict[str, Any] = {"registry": reg.name, "host": reg.host, "source": credential_source(reg)}
            creds = manual
            if creds is None:
                if reg.auth == "none":
                    results.append({**entry, "action": "skipped: auth = none"})
                    continue
                if reg.auth == "docker" and not reg.credential_env:
                    have = credentials_from_docker_config(reg.host, env)
                    results.append({**entry, "action": "already in the docker config" if have else
                                    "not logged in: pipeline login --registry "
                                    f"{reg.name} --username USER --password-stdin (or docker login)"})
                    continue
                creds = access.credentials(reg)
            else:
                entry["source"] = "--username / --password-stdin"
            assert creds is not None
            docker_login(login_server(reg.host), creds, docker_dir, what=f"login {reg.name} ({reg.host})")
            entry["action"] = f"logged in as {creds.username}"
            if creds.expires_at:
                entry["expires_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(creds.expires_at))
            log.get().info("registry.logged_in", registry=reg.name, host=reg.host, user=creds.username,
                           docker_config=str(docker_dir))
            results.append(entry)
    return results
