"""A release project for integration tests, and independent ways to check what it published.

One place for what every end-to-end test needs: a config + Dockerfile in a temp
dir, the environment GitHub Actions would give, the two ways to run the tool
(in-process through ``cli.main``, or as a separate process as CI runs it), and
checks with raw HTTP or skopeo that never go through our registry code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
SHA = "1f0c0ffee1f0c0ffee1f0c0ffee1f0c0ffee1f0c"
PLATFORMS = ("linux/amd64", "linux/arm64")
RELEASE_TAGS = ["1.2.3", "1.2", "1", "latest"]
SEMVER_RULES = ('"type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}", '
                '"type=semver,pattern={{major}}", "type=ref,event=branch", "type=ref,event=pr"')
ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


def github_env(ref: str = "refs/tags/v1.2.3", sha: str = SHA, **extra: str) -> dict[str, str]:
    """This process's environment as a GitHub Actions push would give it (no stray CI, COSIGN_ or TRIVY_ vars)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "JENKINS", "COSIGN_", "TRIVY_"))}
    env.update({"GITHUB_ACTIONS": "true", "GITHUB_REF": ref, "GITHUB_SHA": sha, "GITHUB_EVENT_NAME": "push",
                "GITHUB_REPOSITORY": "acme/app", "GITHUB_SERVER_URL": "https://github.com",
                "SOURCE_DATE_EPOCH": "1700000000", "PYTHONPATH": str(ROOT)})
    env.pop("CI", None)  # only changes buildx's progress style
    env.update(extra)
    return env


def write_project(tmp: Path, registries: Mapping[str, Any], offline_base: str, *, name: str, dockerfile: str,
                  release: Iterable[str] = ("ghcr", "ecr", "hub"), mode: str = "single",
                  platforms: Iterable[str] = PLATFORMS, rules: str = SEMVER_RULES,
                  scan: str = "enabled = false", sign: str = "enabled = false", extra: str = "",
                  files: Mapping[str, str] | None = None, staging: str = "ecr") -> Path:
    """``tmp/ctx`` (Dockerfile + files) and ``tmp/pipeline.toml`` (staging in ``staging``); the config path.

    ``registries`` maps names to objects with a ``toml`` ``[[registries]]`` entry (the session fixture's)."""
    ctx = tmp / "ctx"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "app.txt").write_text(f"{name}\n")
    for rel, text in (files or {}).items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(text)
    regs = "\n".join(registries[r].toml for r in release)
    cfg = tmp / "pipeline.toml"
    cfg.write_text(f"""
[image]
name = "{name}"
context = "{ctx}"
dockerfile = "{ctx / 'Dockerfile'}"
platforms = {json.dumps(list(platforms))}
[image.build_args]
BASE_IMAGE = "{offline_base}"

[tags]
rules = [{rules}]

{regs}
[staging]
registry = "{staging}"
repository = "staging/{name}"

[build]
mode = "{mode}"

[scan]
{scan}

[sign]
{sign}

[retry]
attempts = 2
initial_seconds = 0.1
max_seconds = 0.5

[report]
dir = "{tmp / 'dist'}"
{extra}
""")
    return cfg


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    def error_line(self) -> str:
        lines = [ln for ln in self.err.splitlines() if ln.startswith("pipeline: error:")]
        assert len(lines) == 1, self.err[-3000:]
        return lines[0]


def run_main(args: list[str], env: Mapping[str, str]) -> Run:
    """In-process, through the same entry point as the console script."""
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(args, env=dict(env), stdout=out, stderr=err)
    return Run(code, out.getvalue(), err.getvalue())


def run_process(args: list[str], env: Mapping[str, str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m pipeline …`` as a separate process, as CI runs it (a kill ends only it)."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=dict(env), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def digest_of(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def http(reg: Any) -> httpx.Client:
    """Raw HTTP to a test registry, with its credentials (never our registry client)."""
    return httpx.Client(base_url=reg.url, headers={**reg.auth_header(), "Accept": ACCEPT}, timeout=30)


def http_tags(reg: Any, repo: str) -> list[str]:
    with http(reg) as client:
        r = client.get(f"/v2/{repo}/tags/list")
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return r.json().get("tags") or []


def http_manifest(reg: Any, repo: str, ref: str) -> tuple[bytes, str] | None:
    """(body, digest of the body) or None when missing."""
    with http(reg) as client:
        r = client.get(f"/v2/{repo}/manifests/{ref}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.content, digest_of(r.content)


def skopeo_raw(reg: Any, ref: str) -> bytes | None:
    """The manifest as skopeo (an independent client) sees it; None when missing."""
    authfile = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    r = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--authfile", str(authfile),
                        f"docker://{reg.host}/{ref}"], capture_output=True, timeout=120)
    return r.stdout if r.returncode == 0 else None
