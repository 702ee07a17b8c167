"""Thin sessions: each one is a single `python -m pipeline <command>` call.

`nox` alone runs the tests. Release-type sessions are `default=False`.
Venvs are reused and the package is reinstalled only when pyproject.toml
changes, so `nox -s plan` on a warm venv starts fast (`nox -R` skips even the check).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

ROOT = Path(__file__).parent


def _install(session: nox.Session, *extras: str) -> None:
    """Install the package (editable) once per pyproject.toml content and extras."""
    spec = ".[" + ",".join(extras) + "]" if extras else "."
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + spec.encode()).hexdigest()[:16]
    stamp = Path(session.virtualenv.location) / ".pipeline-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    session.install("-e", spec)
    stamp.write_text(digest)


def _pipeline(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "pipeline", *args, *session.posargs)


def _bootstrap(session: nox.Session, *extra: str) -> None:
    """Install missing tools (root on Debian/Ubuntu) and start dockerd; elsewhere print instructions."""
    session.run("python", "-m", "pipeline", "doctor", "--install", *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests against the real toolchain (set-up included)."""
    _install(session, "test")
    if os.environ.get("PIPELINE_SKIP_BOOTSTRAP") != "1":
        _bootstrap(session, "--current", "--tests")   # today's tool lines (cosign 3, crane), gitlab-ci-local
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


# Thin sessions: `nox -s NAME -- ARGS` runs `python -m pipeline COMMAND ARGS`.
THIN = {
    "tags": ("tags", "Print the release tags for this checkout / CI context."),
    "plan": ("plan", "Show every release stage and what it would do."),
    "doctor": ("doctor", "Check the external tools (pass --install to install them)."),
    "registry": ("registry", "A self-hosted registry: nox -s registry -- start|stop|status|adduser NAME."),
    "login": ("login", "Log the docker config in to every configured registry (passwords through stdin)."),
    "pull-secret": ("pull-secret", "A Kubernetes pull secret: nox -s pull-secret -- --registry NAME [--output F]."),
    "ci-init": ("ci-init", "Write CI files that call these sessions: nox -s ci-init -- github|gitlab|jenkins."),
    "prune": ("prune", "Preview the [lifecycle] rules on every registry (nox -s prune -- --apply deletes)."),
    "inventory": ("inventory", "Every image in every registry: a table and dist/inventory.html."),
    "vex": ("vex", "The [scan] exceptions as OpenVEX: nox -s vex -- export [--output FILE]."),
    "mirror": ("mirror", "Base images into the [mirror] registry, pinned in the lock (-- --check | --update)."),
}


def _thin(name: str, command: str, doc: str) -> None:
    def run(session: nox.Session) -> None:
        _install(session)
        _pipeline(session, command)

    run.__doc__ = doc
    nox.session(name=name, default=False)(run)


for _name, (_command, _doc) in THIN.items():
    _thin(_name, _command, _doc)


@nox.session(default=False)
def release(session: nox.Session) -> None:
    """The main job: build, scan, copy, sign and tag the image in every registry."""
    _install(session)
    _bootstrap(session)
    _pipeline(session, "release")


@nox.session(default=False)
def rescan(session: nox.Session) -> None:
    """The released images judged again with today's DB (exit 1 when one now fails); the scheduled CI job."""
    _install(session)
    _bootstrap(session)          # trivy, as the release's scan has it
    _pipeline(session, "rescan")


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Split mode, one CI runner per platform: nox -s build -- --platform P --digest-out DIR."""
    _install(session)
    _bootstrap(session)
    _pipeline(session, "build")


@nox.session(default=False)
def ecr(session: nox.Session) -> None:
    """ECR set-up (boto3): nox -s ecr -- ensure | policy [--apply]."""
    _install(session, "ecr")
    _pipeline(session, "ecr")
