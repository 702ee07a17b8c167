"""The Docker engine: what it is (``docker info``) and containers through the docker SDK.

:func:`engine_info` tells the build and ``pipeline doctor`` which engine runs and whether it
has the containerd image store; the container functions run the ``registry:2`` image where
the registry binary is missing (``pipeline.setup.localregistry``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import log
from pipeline.errors import ToolError
from pipeline.tools import proc


@dataclass(frozen=True)
class EngineInfo:
    server_version: str | None
    driver: str
    containerd_snapshotter: bool
    errors: tuple[str, ...] = ()


def parse_docker_info(text: str) -> EngineInfo:
    """``docker info --format '{{json .}}'``: server version, storage driver, image store.

    With the containerd image store the driver is the snapshotter (``overlayfs``) and
    ``DriverStatus`` holds ``["driver-type", "io.containerd.snapshotter.v1"]``.
    """
    try:
        data = json.loads(text.strip().splitlines()[-1]) if text.strip() else {}
    except (json.JSONDecodeError, IndexError):
        data = {}
    status = data.get("DriverStatus") or []
    flat = " ".join(str(v) for pair in status for v in (pair if isinstance(pair, list) else [pair]))
    driver = str(data.get("Driver") or "")
    snapshotter = "io.containerd.snapshotter" in flat
    errors = tuple(str(e.get("Message", e)) if isinstance(e, dict) else str(e)
                   for e in (data.get("ServerErrors") or []))
    return EngineInfo(data.get("ServerVersion") or None, driver, snapshotter, errors)


def engine_info(timeout: float = 20) -> EngineInfo | None:
    """The running engine, or None when ``docker info`` does not answer."""
    if proc.which("docker") is None:
        return None
    try:
        r = proc.run(["docker", "info", "--format", "{{json .}}"], check=False, timeout=timeout,
                     what="docker info")
    except ToolError:
        return None
    info = parse_docker_info(r.stdout)
    if r.returncode != 0 or not info.server_version:
        return None
    return info



# --------------------------------------------------------------------------- containers (docker SDK)


def client(why: str) -> Any:
    """A docker SDK client; ``why`` completes the error sentence when there is none."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        raise ToolError(f"the docker SDK is not installed ({why})", tool="docker") from None
    try:
        return docker.from_env(timeout=60)
    except docker.errors.DockerException as exc:
        raise ToolError(f"the Docker engine is unreachable ({type(exc).__name__}; {why})", tool="docker") from None


def ensure_image(image: str, why: str) -> None:
    """``image`` is in the engine, pulled when missing."""
    import docker.errors  # type: ignore[import-untyped]

    c = client(why)
    try:
        c.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            c.images.pull(image)
        except docker.errors.DockerException as exc:
            raise ToolError(f"the {image} image is not available (pull failed: {type(exc).__name__}; {why})",
                            tool="docker") from None
    except docker.errors.DockerException as exc:
        raise ToolError(f"cannot inspect the {image} image ({type(exc).__name__})", tool="docker") from None


def run_container(image: str, name: str, *, volumes: Mapping[str, Mapping[str, str]],
                  ports: Mapping[str, tuple[str, int]], labels: Mapping[str, str], why: str) -> str:
    """Start ``image`` detached as container ``name`` (replacing one of that name); its id. No environment
    is given: what a container's environment holds, ``docker inspect`` shows to every user of the engine."""
    import docker.errors  # type: ignore[import-untyped]

    c = client(why)
    try:
        try:
            c.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        container = c.containers.run(image, name=name, detach=True, volumes=dict(volumes), ports=dict(ports),
                                     labels=dict(labels))
    except docker.errors.DockerException as exc:
        raise ToolError(f"cannot start the {image} container {name}: "
                        f"{log.scrub(str(exc)).splitlines()[0][:200]}", tool="docker") from None
    return str(container.id)


def container_running(container_id: str | None) -> bool:
    if not container_id:
        return False
    try:
        return client("checking a container").containers.get(container_id).status == "running"
    except Exception:  # noqa: BLE001 - not running is the answer to every failure here
        return False


def stop_container(container_id: str, *, timeout: float, keep_log: Path | None = None) -> bool:
    """Stop and remove a container (its output appended to ``keep_log``); whether it was running."""
    import docker.errors  # type: ignore[import-untyped]

    c = client("stopping a container")
    try:
        container = c.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    running = container.status == "running"
    try:
        if running:
            container.stop(timeout=int(timeout))
        if keep_log is not None:
            with open(keep_log, "ab") as fh:
                fh.write(container.logs())
        container.remove(force=True)
    except docker.errors.DockerException as exc:
        raise ToolError(f"cannot stop container {container_id[:12]} ({type(exc).__name__})", tool="docker") from None
    return running
