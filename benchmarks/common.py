"""What the release benchmarks share: fresh local registries, a project, the environment, timed runs.

Every benchmark runs both sides in the same process tree, on the same machine, against registries
started here (the distribution binary, plain HTTP on loopback), and prints one JSON object.
The environment is a GitHub Actions tag push; bytecode caching is on (as for an installed wheel,
which pip compiles), whatever the calling shell says.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.setup import localregistry  # noqa: E402

PLATFORMS = ("linux/amd64", "linux/arm64")
TAG_RULES = ('"type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}", '
             '"type=semver,pattern={{major}}"')
#: ``python -c`` that runs the pipeline CLI and then records its own peak RSS (KiB) in $BENCH_RSS_FILE.
RSS_WRAPPER = ("import os, resource, sys\n"
               "from pipeline.cli import main\n"
               "code = main(sys.argv[1:])\n"
               "open(os.environ['BENCH_RSS_FILE'], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
               "sys.exit(code)\n")


def env(version: str = "1.2.3", **extra: str) -> dict[str, str]:
    """A GitHub Actions push of tag ``v<version>``."""
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "GITLAB_", "CI", "JENKINS", "COSIGN_", "TRIVY_", "PIPELINE_"))}
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out.update({"GITHUB_ACTIONS": "true", "GITHUB_REF": f"refs/tags/v{version}", "GITHUB_EVENT_NAME": "push",
                "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567", "GITHUB_REPOSITORY": "bench/app",
                "SOURCE_DATE_EPOCH": "1700000000", "PYTHONPATH": str(ROOT)})
    out.update(extra)
    return out


def tool(name: str) -> str:
    """A binary from the current toolchain (``doctor --install --current``) first, then PATH."""
    for candidate in (Path("/opt/pipeline-toolchain/current/bin") / name,):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"benchmark needs {name}: run `python -m pipeline doctor --install --current`")
    return found


@contextlib.contextmanager
def registries(names: Sequence[str], state_root: Path) -> Iterator[dict[str, localregistry.RegistryInstance]]:
    """Fresh, empty registries (one process each); stopped and deleted on exit."""
    started: dict[str, localregistry.RegistryInstance] = {}
    try:
        for name in names:
            shutil.rmtree(state_root / name, ignore_errors=True)
            started[name] = localregistry.start(name, port=0, state_root=state_root)
        yield started
    finally:
        for name in started:
            localregistry.stop(name, state_root=state_root)
            shutil.rmtree(state_root / name, ignore_errors=True)


def write_config(path: Path, *, name: str, context: Path, release: dict[str, str], dist: Path,
                 staging_repository: str = "staging/app", build_args: dict[str, str] | None = None,
                 extra: str = "") -> Path:
    """A release of ``context``'s Dockerfile for both platforms to ``release`` (name → host; the first
    one also holds staging), scan and sign off."""
    regs = "".join(f'[[registries]]\nname = "{n}"\nurl = "{h}"\nauth = "none"\n' for n, h in release.items())
    args = "".join(f'{k} = "{v}"\n' for k, v in (build_args or {}).items())
    path.write_text(f"""
[image]
name = "{name}"
context = "{context}"
dockerfile = "{context / 'Dockerfile'}"
platforms = {json.dumps(list(PLATFORMS))}
[image.build_args]
{args}
[tags]
rules = [{TAG_RULES}]
{regs}
[staging]
registry = "{next(iter(release))}"
repository = "{staging_repository}"
[scan]
enabled = false
[sign]
enabled = false
[report]
dir = "{dist}"
{extra}
""")
    return path


#: A tiny two-platform image: no base, no RUN, so both sides build in well under a second.
TINY_DOCKERFILE = "FROM scratch\nARG TARGETARCH\nCOPY app-${TARGETARCH}.txt /app.txt\nCOPY version.txt /version.txt\n"
RAW_TAGS = ("1.2", "1", "latest")


def tiny_context(ctx: Path) -> Path:
    """The build context of :data:`TINY_DOCKERFILE` (``version.txt`` is what a run changes)."""
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(TINY_DOCKERFILE)
    for arch in ("amd64", "arm64"):
        (ctx / f"app-{arch}.txt").write_text(f"app for {arch}\n")
    (ctx / "version.txt").write_text("first\n")
    return ctx


def raw_release(crane: str, hosts: dict[str, str], ctx: Path, version: str, cwd: Path, *,
                repository: str = "app") -> float:
    """The script a user writes without this tool: ``docker buildx build --push`` to the first registry,
    ``crane copy`` to the others, ``crane tag`` per further tag and registry. Its wall time."""
    environ = env(version)
    first, *others = [f"{h}/{repository}" for h in hosts.values()]
    start = time.perf_counter()
    timed(["docker", "buildx", "build", "--platform", ",".join(PLATFORMS), "--provenance=false",
           "--output", "type=image,push=true,oci-mediatypes=true", "-t", f"{first}:{version}",
           "-f", str(ctx / "Dockerfile"), str(ctx)], environ, cwd, what="buildx build --push")
    for image in others:
        timed([crane, "copy", "--insecure", f"{first}:{version}", f"{image}:{version}"], environ, cwd,
              what="crane copy")
    for image in (first, *others):
        for tag in RAW_TAGS:
            timed([crane, "tag", "--insecure", f"{image}:{version}", tag], environ, cwd, what="crane tag")
    return time.perf_counter() - start


@dataclass
class Run:
    seconds: float
    stdout: str
    stderr: str


def timed(argv: Sequence[str], environ: dict[str, str], cwd: Path, *, what: str = "") -> Run:
    start = time.perf_counter()
    proc = subprocess.run(list(argv), env=environ, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{what or ' '.join(argv[:4])} failed (exit {proc.returncode}): {proc.stderr[-3000:]}")
    return Run(elapsed, proc.stdout, proc.stderr)


def pipeline_argv(*args: str) -> list[str]:
    """``python -m pipeline …`` wrapped so that the process records its peak RSS (see :data:`RSS_WRAPPER`)."""
    return [sys.executable, "-c", RSS_WRAPPER, *args]


def stage_seconds(dist: Path) -> dict[str, float]:
    """Per-stage wall times of the last release (``dist/release.json``)."""
    report = json.loads((dist / "release.json").read_text())
    return {s["stage"]: float(s.get("seconds") or 0.0) for s in report["stages"]}


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def incompressible(path: Path, size: int, seed: int) -> None:
    """``size`` bytes that gzip cannot shrink, reproducible per ``seed``."""
    import random

    rng = random.Random(seed)
    with path.open("wb") as out:
        left = size
        while left:
            n = min(left, 8 << 20)
            out.write(rng.randbytes(n))
            left -= n
