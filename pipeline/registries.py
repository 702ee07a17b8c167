"""Registry access for one run: a client per configured registry, and a docker config for child tools.

Credentials come from the source each ``[[registries]]`` entry names: the
docker config and its credential helpers (default), environment variables, or
ECR. Child tools (buildx, cosign, trivy) read credentials from a docker config;
:class:`Access` writes a private one (0700 temp dir) that adds the env/ECR
credentials to the user's, so secrets never appear on a command line and the
user's own config is never modified.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import log
from pipeline.config import Config, RegistryConfig
from pipeline.errors import ConfigError
from pipeline.retry import RetryPolicy
from pipeline.tools import proc
from pipeline.tools.registry import (
    Credentials,
    Registry,
    credentials_from_docker_config,
    credentials_from_env,
    docker_config_dir,
)


def resolve_credentials(reg: RegistryConfig, env: Mapping[str, str]) -> Credentials | None:
    if reg.auth == "none":
        return None
    if reg.auth == "env" or (reg.username_env and reg.password_env):
        assert reg.username_env and reg.password_env
        return credentials_from_env(reg.name, reg.username_env, reg.password_env, env)
    if reg.auth == "ecr":
        region = reg.aws_region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError(f"registries[{reg.name}].aws_region: needed for auth = \"ecr\" (or set AWS_REGION)")
        out = proc.run(["aws", "ecr", "get-login-password", "--region", region], what=f"ECR login for {reg.name}")
        token = out.stdout.strip()
        log.register_secret(token)
        return Credentials("AWS", token)
    return credentials_from_docker_config(reg.host, env)


class Access:
    """Clients and the tool docker config for one command; use as a context manager."""

    def __init__(self, config: Config, env: Mapping[str, str]) -> None:
        self.config = config
        self.env = env
        self.policy = RetryPolicy.from_config(config.retry)
        self._clients: dict[str, Registry] = {}
        self._creds: dict[str, Credentials | None] = {}
        self._tool_dir: Path | None = None

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
        if reg.name not in self._creds:
            self._creds[reg.name] = resolve_credentials(reg, self.env)
        return self._creds[reg.name]

    def client(self, reg: RegistryConfig) -> Registry:
        if reg.name not in self._clients:
            self._clients[reg.name] = Registry(reg.host, name=reg.name, insecure=reg.allow_http,
                                               credentials=self.credentials(reg), policy=self.policy)
        return self._clients[reg.name]

    def tool_env(self) -> dict[str, str]:
        """Environment for child tools: DOCKER_CONFIG pointing at the private config."""
        return {"DOCKER_CONFIG": str(self.tool_docker_config())}

    def tool_docker_config(self) -> Path:
        if self._tool_dir:
            return self._tool_dir
        user_dir = docker_config_dir(self.env)
        data: dict[str, Any] = {}
        try:
            data = json.loads((user_dir / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
        auths = dict(data.get("auths") or {})
        for reg in self.config.registries:
            if reg.auth in ("env", "ecr") or (reg.username_env and reg.password_env):
                creds = self.credentials(reg)
                if creds:
                    raw = f"{creds.username}:{creds.password}".encode()
                    auths[reg.host] = {"auth": base64.b64encode(raw).decode()}
        data["auths"] = auths
        tmp = Path(tempfile.mkdtemp(prefix="pipeline-docker-"))
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
    from pipeline.tools import localregistry

    started: list[str] = []
    for reg in config.registries:
        if not reg.serve:
            continue
        hostname, _, port_text = reg.host.rpartition(":")
        port = int(port_text) if port_text.isdigit() else 80
        if localregistry.listening(hostname or "127.0.0.1", port):
            continue
        instance = localregistry.start(reg.name, port=port)
        log.get().info("registry.started", registry=reg.name, address=instance.host,
                       data=str(instance.data_dir), note="serve = true and nothing listened there")
        started.append(reg.name)
    return started
