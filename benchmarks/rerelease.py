"""A no-op re-release (an unchanged commit, 2 registries): pipeline vs re-running the raw script.

Prints one JSON object. Needs the toolchain (``python -m pipeline doctor --install --current``:
buildx, the registry binary, crane). Two fresh registries (x also holds staging); the release runs
once (not timed), then both sides re-run it, alternating:

* pipeline: ``python -m pipeline release`` again (the local layout and the staging candidate have
  the same build inputs, every blob, manifest and tag is already in place: nothing is uploaded,
  nothing signed twice), the whole process;
* raw: ``docker buildx build --push`` (build cache warm), ``crane copy``, ``crane tag`` per tag and
  registry, as a CI re-run of that script does.

Target (issue 11): the pipeline re-release ≤ 1.0 s (median).

    python benchmarks/rerelease.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import ROOT, env, median, raw_release, registries, stage_seconds, timed, tiny_context, tool, write_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    crane = tool("crane")
    with tempfile.TemporaryDirectory(prefix="bench-rerelease-") as tmp_s:
        tmp = Path(tmp_s)
        ctx, dist = tiny_context(tmp / "ctx"), tmp / "dist"
        with registries(("x", "y"), tmp / "registries") as regs:
            hosts = {n: r.host for n, r in regs.items()}
            cfg = write_config(tmp / "pipeline.toml", name="app", context=ctx, release=hosts, dist=dist)
            release = [sys.executable, "-m", "pipeline", "release", "--config", str(cfg), "--format", "json"]
            first = timed(release, env(), tmp, what="pipeline release").seconds

            def ours() -> tuple[float, dict[str, float]]:
                run = timed(release, env(), tmp, what="pipeline re-release")
                report = json.loads(run.stdout)
                uploaded = sum((r.get("copy") or {}).get("blobs_uploaded", 0) for r in report["registries"])
                if uploaded:
                    raise SystemExit(f"the re-release uploaded {uploaded} blobs: it is not a no-op")
                return run.seconds, stage_seconds(dist)

            def raw() -> float:
                return raw_release(crane, hosts, ctx, "1.2.3", tmp, repository="raw")

            raw()                                                   # the raw script's first release
            pipeline_s: list[float] = []
            stages: dict[str, list[float]] = {}
            raw_s: list[float] = []
            for i in range(args.runs):
                for side in (("ours", "raw") if i % 2 == 0 else ("raw", "ours")):
                    if side == "ours":
                        seconds, per_stage = ours()
                        pipeline_s.append(seconds)
                        for name, value in per_stage.items():
                            stages.setdefault(name, []).append(value)
                    else:
                        raw_s.append(raw())
    ours_median = median(pipeline_s)
    print(json.dumps({
        "benchmark": "rerelease_unchanged_commit",
        "platforms": 2, "registries": 2, "runs": args.runs,
        "pipeline_first_release_s": round(first, 3),
        "pipeline_rerelease_median_s": ours_median, "pipeline_runs_s": [round(v, 3) for v in pipeline_s],
        "pipeline_stage_median_s": {name: median(values) for name, values in stages.items()},
        "alternative": "docker buildx build --push (warm cache) + crane copy + crane tag, re-run",
        "alternative_median_s": median(raw_s),
        "target": "pipeline_rerelease_median_s <= 1.0",
        "meets_target": ours_median <= 1.0,
    }, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
