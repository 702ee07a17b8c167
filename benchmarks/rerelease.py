"""Re-releasing an unchanged commit: pipeline vs re-running buildx (what build-push-action does).

Prints one JSON object. Needs the toolchain (`pipeline doctor --install`).
Both sides run in the same process tree, against the same local registry,
with the build cache warm: the figure is the cost of a CI re-run of a release.

    python benchmarks/rerelease.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.setup import localregistry  # noqa: E402
from pipeline.setup.offline_base import ensure_offline_base  # noqa: E402

DOCKERFILE = """ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN echo "$(uname -m)" > /arch
COPY app.txt /app.txt
"""


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rerelease-") as tmp_s:
        tmp = Path(tmp_s)
        state = tmp / "state"
        inst = localregistry.start("bench", port=0, state_root=state)
        try:
            base = ensure_offline_base(inst.host)
            ctx = tmp / "ctx"
            ctx.mkdir()
            (ctx / "Dockerfile").write_text(DOCKERFILE)
            (ctx / "app.txt").write_text("bench\n")
            cfg = tmp / "pipeline.toml"
            cfg.write_text(f"""
[image]
name = "bench/app"
context = "{ctx}"
dockerfile = "{ctx / 'Dockerfile'}"
platforms = ["linux/amd64", "linux/arm64"]
[image.build_args]
BASE_IMAGE = "{base}"
[tags]
rules = ["type=semver,pattern={{{{version}}}}", "type=semver,pattern={{{{major}}}}.{{{{minor}}}}",
         "type=semver,pattern={{{{major}}}}"]
[[registries]]
name = "local"
url = "{inst.host}"
auth = "none"
[scan]
enabled = false
[sign]
enabled = false
[report]
dir = "{tmp / 'dist'}"
""")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITLAB_", "CI"))}
            env.update({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/tags/v1.2.3", "GITHUB_EVENT_NAME": "push",
                        "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567", "SOURCE_DATE_EPOCH": "1700000000",
                        "PYTHONPATH": str(ROOT)})
            release = [sys.executable, "-m", "pipeline", "release", "--config", str(cfg), "--format", "json"]
            first = timed(release, env, tmp)
            pipeline_runs = [timed(release, env, tmp) for _ in range(args.runs)]
            interpreter = [timed([sys.executable, "-c", "import pipeline.cli"], env, tmp) for _ in range(args.runs)]
            image = f"{inst.host}/bench/app"
            buildx = ["docker", "buildx", "build", "--platform", "linux/amd64,linux/arm64", "--build-arg",
                      f"BASE_IMAGE={base}", "--provenance=false", "--output", "type=image,push=true,oci-mediatypes=true",
                      "-t", f"{image}:1.2.3", "-t", f"{image}:1.2", "-t", f"{image}:1", "-t", f"{image}:latest",
                      "-f", str(ctx / "Dockerfile"), str(ctx)]
            timed(buildx, env, tmp)  # warm its cache exactly like a previous run would have
            buildx_runs = [timed(buildx, env, tmp) for _ in range(args.runs)]
        finally:
            localregistry.stop("bench", state_root=state)
    print(json.dumps({
        "benchmark": "rerelease_unchanged_commit",
        "platforms": 2, "registries": 1, "runs": args.runs,
        "pipeline_first_release_s": round(first, 3),
        "pipeline_rerelease_median_s": round(statistics.median(pipeline_runs), 3),
        "interpreter_start_median_s": round(statistics.median(interpreter), 3),
        "pipeline_rerelease_minus_start_s": round(statistics.median(pipeline_runs) - statistics.median(interpreter), 3),
        "alternative": "docker buildx build --push (build-push-action re-run, warm cache)",
        "alternative_median_s": round(statistics.median(buildx_runs), 3),
        "target": "rerelease <= 2 s plus interpreter start",
        "meets_target": statistics.median(pipeline_runs) - statistics.median(interpreter) <= 2.0,
    }, indent=2))


if __name__ == "__main__":
    main()
