"""Releases for the fault, kill and concurrency tests: configs behind fault proxies, runs, independent checks.

A release here is a new version with new build inputs (a file that changes), so it really builds,
scans, uploads, signs and tags; it runs as a separate process with JSON logs (what a CI job does),
and what the registries hold afterwards is read independently of our registry client: raw HTTP to
the registries themselves (not through the proxies) and cosign run directly.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import project
from tests.support.faultproxy import FaultProxy
from tests.support.project import http_manifest, http_tags

SHA = "fa17fa17fa17fa17fa17fa17fa17fa17fa17fa17"
NAMES = ("ghcr", "ecr", "hub")
DOCKERFILE = """\
ARG BASE_IMAGE=registry-1.docker.io/library/busybox:1.36
FROM ${BASE_IMAGE}
ARG RELEASE=0
COPY release.txt /release.txt
RUN echo "release ${RELEASE} on $(uname -m)" > /built.txt
"""


def proxied(reg: Any, proxy: FaultProxy) -> str:
    """The registry's [[registries]] entry, reached through its proxy (same credentials)."""
    return reg.toml.replace(f'url = "{reg.host}"', f'url = "{proxy.host}"')


@dataclass(frozen=True)
class Rig:
    """What every fault test needs: the module's working dir, the registries, their proxies, the key, the DB."""

    workdir: Path
    registries: dict[str, Any]
    proxies: dict[str, FaultProxy]
    signing: dict[str, str]
    db: str


def write_config(rig: Rig, *, name: str, release: int, extra: str = "") -> Path:
    registries, proxies, signing, db = rig.registries, rig.proxies, rig.signing, rig.db
    case = rig.workdir / name.replace("/", "_") / f"r{release}"
    ctx = case / "ctx"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "release.txt").write_text(f"{name} release {release} {secrets.token_hex(4)}\n")
    (case / "exceptions.toml").write_text("")
    regs = "\n".join(proxied(registries[n], proxies[n]) for n in NAMES)
    cfg = case / "pipeline.toml"
    cfg.write_text(f"""
[image]
name = "{name}"
context = "{ctx}"
dockerfile = "{ctx / 'Dockerfile'}"
platforms = ["linux/amd64", "linux/arm64"]
offline_base = true
[image.build_args]
RELEASE = "{release}"

[tags]
rules = ["type=semver,pattern={{{{version}}}}", "type=semver,pattern={{{{major}}}}.{{{{minor}}}}"]

{regs}
[staging]
registry = "ecr"
repository = "staging/{name}"

[scan]
fail_on = "HIGH"
db_repository = ["{proxies['ecr'].host}/{db}"]
cache_dir = "{case / 'trivy'}"
exceptions_file = "{case / 'exceptions.toml'}"

[sign]
key = "{signing['key']}"
tlog_upload = false

[retry]
attempts = 15
initial_seconds = 0.2
max_seconds = 2
budget_seconds = 60

[report]
dir = "{case / 'dist'}"
{extra}
""")
    return cfg


def release_env(signing: dict[str, str], version: str) -> dict[str, str]:
    return project.github_env(f"refs/tags/v{version}", SHA, COSIGN_PASSWORD=signing["password"])


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    events: list[dict[str, Any]]

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.out)


def run_release(cfg: Path, env: dict[str, str], cwd: Path, *args: str, timeout: int = 900) -> Outcome:
    r = subprocess.run([sys.executable, "-m", "pipeline", "--log-format", "json", "release", "--config", str(cfg),
                        "--format", "json", *args], env=env, cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)
    events = []
    for line in r.stderr.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    return Outcome(r.returncode, r.stdout, r.stderr, events)


def version_tags(version: str) -> list[str]:
    major, minor, _ = version.split(".")
    return [version, f"{major}.{minor}"]


def assert_released(registries: dict[str, Any], name: str, version: str, pub: str) -> str:
    """Independently (raw HTTP to the registries themselves, cosign run directly): every tag of the
    version in every registry, one digest everywhere, signed by our key. Returns the digest."""
    digests = set()
    for n in NAMES:
        reg = registries[n]
        tags = http_tags(reg, name)
        for tag in version_tags(version):
            assert tag in tags, f"{n}: {name}:{tag} missing ({tags})"
            found = http_manifest(reg, name, tag)
            assert found is not None
            digests.add(found[1])
    assert len(digests) == 1, digests
    digest = digests.pop()
    for n in NAMES:
        r = subprocess.run(["cosign", "verify", "--key", pub, "--insecure-ignore-tlog=true",
                            "--allow-http-registry=true", "--allow-insecure-registry=true",
                            f"{registries[n].host}/{name}@{digest}"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{n}: {r.stderr[-2000:]}"
    return digest


def stats_of(proxies: dict[str, FaultProxy]) -> dict[str, Any]:
    requests = sum(p.stats()["requests"] for p in proxies.values())
    faults: Counter[str] = Counter()
    agents: Counter[str] = Counter()
    for p in proxies.values():
        s = p.stats()
        faults.update({k: v for k, v in s["faults"].items() if v})
        agents.update(s["by_agent"])
    return {"requests": requests, "faults": dict(sorted(faults.items())), "by_agent": dict(agents)}


def reset(proxies: dict[str, FaultProxy], rate: float = 0.0) -> None:
    for p in proxies.values():
        p.reset_stats()
        p.rate = rate
        p.dead = False


