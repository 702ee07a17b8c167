"""buildx: the argv of a build is a pure function of a BuildSpec; builders are inspected with the CLI.

Builds run through the one subprocess chokepoint (``proc.stream``) so progress
is shown live on a terminal and as plain lines in CI, and errors become one
line naming the Dockerfile, platform or registry.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ToolError
from pipeline.tools import proc

if TYPE_CHECKING:
    from pipeline.tools.docker import EngineInfo


@dataclass(frozen=True)
class BuildSpec:
    context: str
    dockerfile: str
    platforms: tuple[str, ...]
    tags: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    builder: str | None = None
    output: str | None = None     # e.g. type=oci,dest=DIR,tar=false (a local layout); None: buildx's default
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    provenance: bool = False
    progress: str = "auto"
    metadata_file: str = ""
    build_contexts: tuple[tuple[str, str], ...] = ()   # (name, value): FROM name → oci-layout://DIR@digest …
    secrets: tuple[tuple[str, str], ...] = ()          # (id, a 0600 file holding it): --secret id=…,src=…


def build_argv(spec: BuildSpec) -> list[str]:
    """``docker buildx build …`` for a spec. Pure: tested by equality."""
    argv = ["docker", "buildx", "build"]
    if spec.builder:
        argv += ["--builder", spec.builder]
    argv += ["--file", spec.dockerfile, "--platform", ",".join(spec.platforms)]
    argv += [f"--progress={spec.progress}", f"--provenance={'mode=max' if spec.provenance else 'false'}"]
    if spec.target:
        argv += ["--target", spec.target]
    for key, value in spec.build_args:
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in spec.labels:
        argv += ["--label", f"{key}={value}"]
    for key, value in spec.annotations:
        argv += ["--annotation", f"{key}={value}"]
    for name, value in spec.build_contexts:
        argv += ["--build-context", f"{name}={value}"]
    for secret_id, src in spec.secrets:           # a file, never env=: that would put it in buildx's environment
        argv += ["--secret", f"id={secret_id},src={src}"]
    for tag in spec.tags:
        argv += ["--tag", tag]
    for cache in spec.cache_from:
        argv += ["--cache-from", cache]
    for cache in spec.cache_to:
        argv += ["--cache-to", cache]
    if spec.metadata_file:
        argv += ["--metadata-file", spec.metadata_file]
    if spec.output:
        argv += ["--output", spec.output]
    argv.append(spec.context)
    return argv


MULTI_PLATFORM_DRIVERS = ("docker-container", "remote", "kubernetes")


@dataclass(frozen=True)
class BuilderInfo:
    """A buildx builder: its name, driver and the platforms its nodes offer."""

    name: str
    driver: str
    platforms: tuple[str, ...] = field(default_factory=tuple)


def parse_buildx_inspect(text: str) -> BuilderInfo:
    """``docker buildx inspect``: builder name, driver and the platforms its nodes offer."""
    name = driver = ""
    platforms: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Name" and not name:
            name = value
        elif key == "Driver" and not driver:
            driver = value
        elif key == "Platforms":
            for p in value.split(","):
                p = p.strip().rstrip("*").strip()
                if p and p not in platforms:
                    platforms.append(p)
    return BuilderInfo(name, driver, tuple(platforms))


def multi_platform_reason(driver: str, engine: EngineInfo | None) -> tuple[bool, str]:
    """Can this builder build several platforms in one call? (yes/no, and why)."""
    if driver in MULTI_PLATFORM_DRIVERS:
        return True, f"{driver} driver"
    if driver == "docker":
        if engine is not None and engine.containerd_snapshotter:
            return True, "docker driver on the containerd image store"
        return False, ("docker driver without the containerd image store: set "
                       "features.containerd-snapshotter in daemon.json, or use --mode split")
    return False, f"unknown builder driver {driver or '?'}"


def inspect_builder(builder: str | None = None, env: Mapping[str, str] | None = None) -> BuilderInfo:
    """Name, driver and platforms of a buildx builder: one ``docker buildx inspect``."""
    if proc.which("docker") is None:
        raise ToolError("build: the docker client is not installed; run 'pipeline doctor --install'", tool="docker")
    argv = ["docker", "buildx", "inspect", *([builder] if builder else [])]
    r = proc.run(direct(argv, env), env=env, check=False, timeout=120, what="docker buildx inspect")
    found = parse_buildx_inspect(r.stdout) if r.returncode == 0 else None
    # buildx 0.13 exits 0 when the builder's node cannot be reached: an ``Error:`` line and no platforms
    node_errors = [value.strip() for key, _, value in (line.partition(":") for line in r.stdout.splitlines())
                   if key.strip() == "Error" and value.strip()]
    if found is None or (not found.platforms and node_errors):
        text = " ".join((node_errors[0] if found is not None else r.stderr or r.stdout).split())
        if "is not a docker command" in text or "unknown command" in text.lower():
            raise ToolError("build: docker buildx is not installed; run 'pipeline doctor --install'",
                            tool="buildx")
        if "Cannot connect" in text or "docker daemon" in text.lower():
            raise ToolError("build: the docker engine is not running; run 'pipeline doctor --install' "
                            "or start dockerd", tool="docker")
        raise ToolError(f"build: cannot inspect buildx builder {builder or '(default)'}: {text[-300:]}",
                        tool="buildx")
    assert found is not None
    return found


#: The docker client's variables that choose the engine and the builder (all an inspection needs).
CLIENT_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH",
              "BUILDX_BUILDER", "BUILDX_CONFIG", "HOME", "PATH", "XDG_RUNTIME_DIR")


@dataclass(frozen=True)
class BuilderFacts:
    """What a release needs to know about its builder: ``buildx inspect``, and ``docker info`` (its image
    store decides what the docker driver can export), or the error either gave."""

    info: BuilderInfo | None
    engine: EngineInfo | None
    error: ToolError | None = None


BUILDER_FACTS = "buildx.builder_facts"   # the key in a release's ``ctx.shared``


def start_inspection(shared: dict[str, Any], builder: str | None,
                     env: Mapping[str, str]) -> Future[BuilderFacts]:
    """Inspect the builder and the engine in the background, at once, adding only the docker client's own
    variables (not the release's private docker config); the future goes in ``shared`` (a release's
    ``ctx.shared``). The CLI starts it before it imports the stages, so the 0.15 s overlaps the start-up."""
    future = inspect_in_background(builder, {k: v for k, v in env.items() if k in CLIENT_ENV})
    shared[BUILDER_FACTS] = future
    return future


def inspect_in_background(builder: str | None, env: Mapping[str, str] | None = None) -> Future[BuilderFacts]:
    """``buildx inspect`` and ``docker info`` at once, in daemon threads (a release that needs no build, or
    ends early, does not wait for them at exit); the future gives both."""
    from pipeline.tools.docker import engine_info

    engine: Future[EngineInfo | None] = _in_daemon(engine_info)
    facts: Future[BuilderFacts] = Future()

    def both() -> BuilderFacts:
        try:
            found = inspect_builder(builder, env)
        except ToolError as exc:
            return BuilderFacts(None, engine.result(), exc)
        return BuilderFacts(found, engine.result())

    _in_daemon(both, facts)
    return facts


def _in_daemon(fn: Callable[[], Any], future: Future[Any] | None = None) -> Future[Any]:
    future = future if future is not None else Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:   # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=run, name="inspect", daemon=True).start()
    return future


def exports_oci(driver: str, engine: EngineInfo | None) -> bool:
    """Can this builder write an OCI layout (``--output type=oci``)? The docker driver only on the
    containerd image store; the classic store refuses every file exporter and can only push."""
    if driver in MULTI_PLATFORM_DRIVERS:
        return True
    return driver == "docker" and engine is not None and engine.containerd_snapshotter


_CACHE_HINTS = ("buildcache", "cache manifest", "cache importer", "importing cache", "cache-from", "failed to fetch"
                " cache", "cache export")


def cache_failure(output: str) -> bool:
    """Does a failed build's error point at the build cache (so that building without it may pass)? Only
    the error buildx ends with counts: the log of every build with ``--cache-from`` says "importing cache
    manifest", and "failed to compute cache key" is a COPY of a missing file."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip().startswith("ERROR")]
    final = (lines[-1] if lines else "").lower()
    return any(h in final for h in _CACHE_HINTS)


def unsupported_platforms(wanted: Sequence[str], supported: Sequence[str]) -> list[str]:
    """Platforms the builder does not list (``linux/arm64`` matches ``linux/arm64/v8``)."""
    norm = {p.removesuffix("/v8") for p in supported} | set(supported)
    return [p for p in wanted if p not in norm and p.removesuffix("/v8") not in norm]


_LOCATION = re.compile(r"^(\S*[Dd]ockerfile\S*):(\d+)$")


def summarize_failure(output: str, dockerfile: str) -> str:
    """One line from a failed build's output: ``<dockerfile>:<line>: <the ERROR line>``."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    error = next((ln for ln in reversed(lines) if ln.startswith("ERROR:")), "")
    if not error:
        error = lines[-1] if lines else "build failed"
    error = re.sub(r"^ERROR:\s*", "", error)
    line_no = next((m.group(2) for ln in reversed(lines) if (m := _LOCATION.match(ln))), None)
    if "exec format error" in output:
        error += " (the builder cannot run this platform: install qemu-user-static/binfmt or use a native builder)"
    where = f"{dockerfile}:{line_no}" if line_no else dockerfile
    return f"{where}: {error}"[:600]


#: Where the docker CLI looks for plugins after its config dir (cli/cli-plugins/manager, unix defaults).
SYSTEM_PLUGIN_DIRS = ("/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
                      "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")


def plugin_path(env: Mapping[str, str] | None = None) -> str | None:
    """The ``docker-buildx`` binary the docker CLI would run: ``cliPluginsExtraDirs`` from its config,
    then ``$DOCKER_CONFIG/cli-plugins``, then the system directories; None when there is none."""
    merged = {**os.environ, **(env or {})}
    config_dir = Path(merged.get("DOCKER_CONFIG") or Path(merged.get("HOME") or Path.home()) / ".docker")
    try:
        extra = json.loads((config_dir / "config.json").read_text()).get("cliPluginsExtraDirs") or []
    except (OSError, ValueError, AttributeError):
        extra = []
    for directory in (*[str(d) for d in extra if isinstance(d, str)], str(config_dir / "cli-plugins"),
                      *SYSTEM_PLUGIN_DIRS):
        candidate = Path(directory) / "docker-buildx"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def direct(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``docker buildx …`` run as the buildx plugin itself (standalone mode, which buildx supports): the
    docker CLI would first ask every installed plugin for its metadata, 50 ms per call. Not when
    ``docker`` is a wrapper script (podman's shim, a site's own wrapper): then it decides."""
    argv = list(argv)
    if argv[:2] == ["docker", "buildx"] and not _docker_is_a_script() and (plugin := plugin_path(env)):
        return [plugin, *argv[2:]]
    return argv


def _docker_is_a_script() -> bool:
    found = proc.which("docker")
    if found is None:
        return False
    try:
        with open(found, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return True


def run_build(spec: BuildSpec, *, env: Mapping[str, str] | None = None, on_line: Callable[[str], None] | None = None,
              timeout: float = 3600, on_start: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run the build; return the parsed ``--metadata-file`` (``containerimage.digest`` etc.)."""
    with tempfile.TemporaryDirectory(prefix="pipeline-build-") as tmp:
        meta = Path(tmp) / "metadata.json"
        spec = BuildSpec(**{**spec.__dict__, "metadata_file": str(meta)})
        try:
            proc.stream(direct(build_argv(spec), env), env=env, on_line=on_line, timeout=timeout, what="build",
                        on_start=on_start)
        except ToolError as exc:
            if exc.returncode is None:
                raise
            if "is not a docker command" in exc.stderr:
                raise ToolError("build: docker buildx is not installed; run 'pipeline doctor --install'",
                                tool="buildx") from None
            raise ToolError(f"build: {summarize_failure(exc.stderr, spec.dockerfile)}", tool="buildx",
                            returncode=exc.returncode, stderr=exc.stderr) from None
        try:
            return json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            raise ToolError("build: buildx wrote no metadata file (is buildx older than 0.6?)", tool="buildx") from None
