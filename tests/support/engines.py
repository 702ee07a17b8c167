"""A second dockerd beside the main one, for tests that need an engine configured otherwise.

Its own socket, data-root, exec-root and containerd namespaces, no iptables, the daemon.json a test
gives — and a bridge of its own: with ``--bridge none`` dockerd deletes docker0 at start, the main
engine's bridge, and every container the main engine starts afterwards fails ("adding interface …
to bridge docker0 failed: Device does not exist").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from pipeline.setup import toolchain
from pipeline.tools import docker, proc


@dataclass(frozen=True)
class Engine:
    host: str                  # unix:///…/docker.sock
    info: docker.EngineInfo
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def docker(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "--host", self.host, *args], capture_output=True, text=True, timeout=timeout)


def _unavailable(name: str, detail: str) -> NoReturn:
    raise RuntimeError(f"{name}: {detail}")


def _bridge(name: str, cidr: str, missing: Callable[[str, str], NoReturn], tag: str) -> None:
    """Made once per machine and kept (idempotent: a half-made one from a killed run is completed)."""
    if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0:
        made = subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], capture_output=True, text=True)
        if made.returncode != 0:
            missing(tag, f"ip link add {name}: {made.stderr.strip()}")
    addresses = subprocess.run(["ip", "-o", "addr", "show", "dev", name], capture_output=True, text=True)
    if cidr not in addresses.stdout:
        subprocess.run(["ip", "addr", "add", cidr, "dev", name], capture_output=True)
    subprocess.run(["ip", "link", "set", name, "up"], capture_output=True)


@contextlib.contextmanager
def second_engine(tag: str, bridge: str, cidr: str, daemon_json: str, *, current: bool = False,
                  missing: Callable[[str, str], NoReturn] = _unavailable) -> Iterator[Engine]:
    """Start the engine, yield it once it answers, stop it and remove its state."""
    name = f"{tag}-engine"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        missing(name, "a second dockerd needs root")
    dockerd = proc.which("dockerd")
    if current:      # Debian unstable's engine (docker 28) runs here; the main one stays 26
        dockerd = str(toolchain.current_bin() / "dockerd")
        if not Path(dockerd).exists():
            missing(name, f"{dockerd} is missing (pipeline doctor --install --current)")
    if dockerd is None:
        missing(name, "dockerd is not installed")
    had_docker0 = subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
    _bridge(bridge, cidr, missing, name)
    # a short path: a unix socket's path is limited to 108 bytes
    home = Path(tempfile.mkdtemp(prefix=f"pl-{tag}-", dir="/tmp"))
    (home / "daemon.json").write_text(daemon_json)
    sock = home / "docker.sock"
    log_file = open(home / "dockerd.log", "wb")   # noqa: SIM115 (open while the daemon runs)
    daemon = subprocess.Popen(
        [dockerd, "--host", f"unix://{sock}", "--data-root", str(home / "data"), "--exec-root", str(home / "exec"),
         "--pidfile", str(home / "docker.pid"), "--bridge", bridge, "--iptables=false", "--ip6tables=false",
         "--config-file", str(home / "daemon.json"), "--containerd-namespace", f"pl-{tag}",
         "--containerd-plugins-namespace", f"pl-{tag}-p"],
        stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    host = f"unix://{sock}"
    info = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.poll() is None:
            try:
                r = subprocess.run(["docker", "--host", host, "info", "--format", "{{json .}}"],
                                   capture_output=True, text=True, timeout=30)
            except subprocess.TimeoutExpired:
                continue
            if r.returncode == 0:
                info = docker.parse_docker_info(r.stdout)
                break
            time.sleep(0.5)
        if info is None:
            missing(name, f"the second dockerd did not answer: "
                          f"{(home / 'dockerd.log').read_text(errors='replace')[-1500:]}")
        if had_docker0:
            assert subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0, \
                "starting the second engine removed the main engine's bridge docker0"
        yield Engine(host, info, home)
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=30)
        log_file.close()
        subprocess.run(["umount", "-R", str(home / "data")], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
