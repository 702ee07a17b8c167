"""Fan-out of a two-platform image (one incompressible 96 MiB layer per platform) to 3 registries.

Prints one JSON object. Needs the toolchain (``python -m pipeline doctor --install --current``: buildx,
the registry binary, crane) and skopeo. Each measurement gets three fresh, empty registries (a, b, c);
registry a also holds staging:

* pipeline: ``pipeline release`` (build reused from the local layout, scan and sign off); the figure
  is the ``copy`` stage from ``dist/release.json``: the three release repositories, uploaded from the
  local layout (registry a's mounts from staging). The ``staging`` stage before it, the counterpart of
  the push the alternatives get for free, is reported beside it. Peak RSS is the pipeline process's
  own (``ru_maxrss``);
* crane: the candidate is put in staging first (not timed, a head start crane gets for free), then
  three ``crane copy`` run in parallel from staging to a, b and c;
* skopeo: the same head start, then three sequential ``skopeo copy --all`` from staging.

Rounds alternate the order of the sides. Targets (issue 11): pipeline ≤ 0.8 × crane and
≤ 0.5 × skopeo; peak RSS ≤ 100 MiB.

    python benchmarks/fanout.py [--rounds 3] [--mib 96]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (ROOT, env, incompressible, median, pipeline_argv, registries, stage_seconds, timed, tool,
                    write_config)

from pipeline.tools import transfer
from pipeline.tools.oci import Layout
from pipeline.tools.registry import Registry

DOCKERFILE = "FROM scratch\nARG TARGETARCH\nCOPY blob-${TARGETARCH} /blob\n"
NAMES = ("a", "b", "c")


def seed_staging(layout: Layout, digest: str, host: str) -> None:
    with Registry(host, insecure=True) as client:
        transfer.push(layout, digest, client, "staging/app")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mib", type=int, default=96)
    parser.add_argument("--log", type=Path, help="write the last release's JSON log here")
    args = parser.parse_args()
    crane, skopeo = tool("crane"), tool("skopeo")
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp_s:
        tmp = Path(tmp_s)
        ctx = tmp / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        for seed, arch in enumerate(("amd64", "arm64")):
            incompressible(ctx / f"blob-{arch}", args.mib << 20, seed)
        state, dist = tmp / "registries", tmp / "dist"
        environ = {**env(), "BENCH_RSS_FILE": str(tmp / "rss"), "PIPELINE_LOG_FORMAT": "json"}

        def release(hosts: dict[str, str]) -> tuple[float, float, int, float]:
            cfg = write_config(tmp / "pipeline.toml", name="app", context=ctx, release=hosts, dist=dist)
            run = timed(pipeline_argv("release", "--config", str(cfg), "--format", "json"), environ, tmp,
                        what="pipeline release")
            if args.log:
                args.log.write_text(run.stderr)
            seconds = stage_seconds(dist)
            return seconds["copy"], run.seconds, int((tmp / "rss").read_text()), seconds["staging"]

        with registries(NAMES, state) as regs:                       # the build, once, outside any figure
            release({n: r.host for n, r in regs.items()})
        report = json.loads((dist / "release.json").read_text())
        digest = report["digest"]
        layout = Layout(next((tmp / ".pipeline" / "images").iterdir()))

        def pipeline_side() -> dict[str, float]:
            with registries(NAMES, state) as regs:
                copy, wall, rss, staging = release({n: r.host for n, r in regs.items()})
            return {"seconds": copy, "release_wall_s": wall, "rss_kib": rss, "staging_s": staging}

        def crane_side() -> dict[str, float]:
            with registries(NAMES, state) as regs:
                src = f"{regs['a'].host}/staging/app@{digest}"
                seed_staging(layout, digest, regs["a"].host)
                start = time.perf_counter()
                procs = [subprocess.Popen([crane, "copy", "--insecure", src, f"{r.host}/app:1.2.3"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for r in regs.values()]
                for p in procs:
                    _, err = p.communicate()
                    if p.returncode:
                        raise SystemExit(f"crane copy failed: {err.decode()[-2000:]}")
                return {"seconds": time.perf_counter() - start}

        def skopeo_side() -> dict[str, float]:
            with registries(NAMES, state) as regs:
                src = f"docker://{regs['a'].host}/staging/app@{digest}"
                seed_staging(layout, digest, regs["a"].host)
                start = time.perf_counter()
                for r in regs.values():
                    timed([skopeo, "copy", "--all", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                           src, f"docker://{r.host}/app:1.2.3"], environ, tmp, what="skopeo copy")
                return {"seconds": time.perf_counter() - start}

        sides = {"pipeline": pipeline_side, "crane": crane_side, "skopeo": skopeo_side}
        results: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
        order = list(sides)
        for i in range(args.rounds):
            for name in order[i % 3:] + order[:i % 3]:
                results[name].append(sides[name]())

    ours = median([r["seconds"] for r in results["pipeline"]])
    crane_s = median([r["seconds"] for r in results["crane"]])
    skopeo_s = median([r["seconds"] for r in results["skopeo"]])
    rss_mib = round(max(r["rss_kib"] for r in results["pipeline"]) / 1024, 1)
    print(json.dumps({
        "benchmark": "fanout_3_registries",
        "image": f"2 platforms x 1 incompressible {args.mib} MiB layer", "registries": 3, "rounds": args.rounds,
        "pipeline_copy_stage_median_s": ours,
        "pipeline_copy_stage_s": [round(r["seconds"], 3) for r in results["pipeline"]],
        "pipeline_staging_stage_median_s": median([r["staging_s"] for r in results["pipeline"]]),
        "pipeline_release_wall_median_s": median([r["release_wall_s"] for r in results["pipeline"]]),
        "pipeline_peak_rss_mib": rss_mib,
        "crane_parallel_copy_median_s": crane_s,
        "skopeo_sequential_copy_median_s": skopeo_s,
        "ratio_vs_crane": round(ours / crane_s, 3),
        "ratio_vs_skopeo": round(ours / skopeo_s, 3),
        "crane_version": subprocess.run([crane, "version"], capture_output=True, text=True).stdout.strip(),
        "skopeo_version": subprocess.run([skopeo, "--version"], capture_output=True, text=True).stdout.strip(),
        "targets": "copy <= 0.8 x crane, <= 0.5 x skopeo, peak RSS <= 100 MiB",
        "meets_targets": ours <= 0.8 * crane_s and ours <= 0.5 * skopeo_s and rss_mib <= 100,
    }, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
