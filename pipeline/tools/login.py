"""``docker login`` through stdin, and ``kubectl`` for pull secrets: the argv builders (pure) and runners.

Passwords and tokens go to the tool on stdin (``--password-stdin``, ``apply -f -``), never
on a command line; user names are not secrets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.errors import ToolError
from pipeline.tools import proc
from pipeline.tools.registry import DOCKER_HUB_HOSTS, Credentials


def login_server(host: str) -> str:
    """What to pass ``docker login``: Docker Hub under its canonical name, other hosts as they are."""
    return "docker.io" if host in DOCKER_HUB_HOSTS else host


def docker_login_argv(server: str, username: str) -> list[str]:
    return ["docker", "login", "--username", username, "--password-stdin", server]


def docker_login(server: str, creds: Credentials, docker_config: Path, *, what: str) -> None:
    """Store ``creds`` for ``server`` in the docker config at ``docker_config`` (its credential store, if any)."""
    if creds.identity_token and not creds.password:
        raise ToolError(f"{what}: the credentials are an identity token, which docker login cannot store;"
                             " use a username and password/token", tool="docker")
    proc.run(docker_login_argv(server, creds.username), input=creds.password + "\n",   # its credential store
             env={"DOCKER_CONFIG": str(docker_config)}, what=what, timeout=120, inherit_all=True)  # needs them


def kubectl_apply_argv(namespace: str | None = None) -> list[str]:
    argv = ["kubectl", "apply", "-f", "-"]
    return argv + ["--namespace", namespace] if namespace else argv


def kubectl_patch_sa_argv(service_account: str, namespace: str, patch: str) -> list[str]:
    """A strategic-merge patch: ``imagePullSecrets`` merges by name, other pull secrets stay."""
    return ["kubectl", "patch", "serviceaccount", service_account, "--namespace", namespace,
            "--type", "strategic", "--patch", patch]


def kubectl_run(argv: Sequence[str], *, input: str | None = None, env: Mapping[str, str] | None = None,
                what: str) -> str:
    # kubectl authenticates with the user's kubeconfig and its exec plugins (cloud SDKs): their environment
    return proc.run(list(argv), input=input, env=env, what=what, timeout=120, inherit_all=True).stdout


__all__ = ["docker_login", "docker_login_argv", "kubectl_apply_argv", "kubectl_patch_sa_argv", "kubectl_run",
           "login_server"]
