"""Overhead of a release over the raw script a user would write, for a tiny two-platform image.

Prints one JSON object. Needs the toolchain (``python -m pipeline doctor --install --current``:
buildx, the registry binary, crane). Two fresh registries (x also holds staging); every run is a
new version with new build inputs, so both sides really build and upload:

* pipeline: ``python -m pipeline release`` (tags, build, staging, copy, tag, verify, report; scan and
  sign off), the whole process, interpreter start included;
* raw: ``docker buildx build --push`` to x, ``crane copy`` to y, ``crane tag`` per further tag and
  registry (what a CI script without this tool does; it checks nothing afterwards).

Pairs alternate which side goes first. Target (issue 11): the median pipeline run takes at most
0.3 s more than the median raw run. ``outside_stages_s`` is the pipeline's wall time minus its
stages (interpreter start, imports, config, context).

    python benchmarks/overhead.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import (RAW_TAGS, ROOT, env, median, raw_release, registries, stage_seconds, timed, tiny_context, tool,
                    write_config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    crane = tool("crane")
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp_s:
        tmp = Path(tmp_s)
        ctx, dist = tiny_context(tmp / "ctx"), tmp / "dist"
        with registries(("x", "y"), tmp / "registries") as regs:
            hosts = {n: r.host for n, r in regs.items()}
            cfg = write_config(tmp / "pipeline.toml", name="app", context=ctx, release=hosts, dist=dist)
            runs = iter(range(10_000))

            stages: dict[str, list[float]] = {}

            def ours() -> tuple[float, float]:
                n = next(runs)
                (ctx / "version.txt").write_text(f"pipeline {n}\n")
                run = timed([sys.executable, "-m", "pipeline", "release", "--config", str(cfg), "--format", "json"],
                            env(f"1.2.{n}"), tmp, what="pipeline release")
                seconds = stage_seconds(dist)
                for name, value in seconds.items():
                    stages.setdefault(name, []).append(value)
                return run.seconds, run.seconds - sum(seconds.values())

            def raw() -> float:
                n = next(runs)
                (ctx / "version.txt").write_text(f"raw {n}\n")
                return raw_release(crane, hosts, ctx, f"1.2.{n}", tmp)

            ours(), raw()                                        # warm the builder and the page cache
            stages.clear()
            pipeline_s: list[float] = []
            outside_s: list[float] = []
            raw_s: list[float] = []
            for i in range(args.pairs):
                for side in ((ours, raw) if i % 2 == 0 else (raw, ours)):
                    if side is ours:
                        wall, outside = ours()
                        pipeline_s.append(wall)
                        outside_s.append(outside)
                    else:
                        raw_s.append(raw())
    extra = round(median(pipeline_s) - median(raw_s), 3)
    print(json.dumps({
        "benchmark": "release_overhead_tiny_image",
        "image": "2 platforms, FROM scratch, two small files", "registries": 2, "tags": 1 + len(RAW_TAGS),
        "pairs": args.pairs,
        "pipeline_median_s": median(pipeline_s), "pipeline_runs_s": [round(v, 3) for v in pipeline_s],
        "pipeline_outside_stages_median_s": median(outside_s),
        "pipeline_stage_median_s": {name: median(values) for name, values in stages.items()},
        "raw_median_s": median(raw_s), "raw_runs_s": [round(v, 3) for v in raw_s],
        "raw_script": "docker buildx build --push; crane copy; crane tag per tag and registry",
        "pipeline_minus_raw_s": extra,
        "target": "pipeline_minus_raw_s <= 0.3",
        "meets_target": extra <= 0.3,
    }, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
