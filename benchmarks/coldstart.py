"""Cold start of ``pipeline plan``: a new process that prints every stage, beside ``buildx bake --print``.

Prints one JSON object. Runs in this checkout with its embedded default (``config/pipeline.toml``,
``Dockerfile.example``) as a tag push on GitHub Actions; nothing is built or contacted. The
alternative is what a buildx user runs to see what would be built: ``docker buildx bake --print``
for the same Dockerfile and platforms. ``python -c pass`` is the floor of any Python tool, and
``python + one pydantic model`` (a one-field model defined and one dict validated, plugins off as in
the pipeline) the floor of any tool whose configuration pydantic validates, as design.md has it.
Runs alternate; bytecode caching is on, as for an installed wheel.

Target (issue 11): the median ``pipeline plan`` ≤ 0.25 s.

    python benchmarks/coldstart.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import ROOT, env, median, timed


ONE_MODEL = ("import os\nos.environ['PYDANTIC_DISABLE_PLUGINS'] = '__all__'\nfrom pydantic import BaseModel\n"
             "class Section(BaseModel):\n    name: str = 'x'\nSection.model_validate({'name': 'y'})\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    environ = env()
    plan = [sys.executable, "-m", "pipeline", "plan"]
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp_s:
        bake = Path(tmp_s) / "docker-bake.hcl"
        bake.write_text(f'target "default" {{\n  context = "{ROOT}"\n  dockerfile = "Dockerfile.example"\n'
                        '  platforms = ["linux/amd64", "linux/arm64"]\n  tags = ["localhost:5000/example:1.2.3"]\n}\n')
        sides = {
            "pipeline plan": plan,
            "docker buildx bake --print": ["docker", "buildx", "bake", "--print", "-f", str(bake)],
            "python -c pass": [sys.executable, "-c", "pass"],
            "python + one pydantic model": [sys.executable, "-c", ONE_MODEL],
        }
        for argv in sides.values():
            timed(argv, environ, ROOT)                       # bytecode written, page cache warm
        times: dict[str, list[float]] = {name: [] for name in sides}
        names = list(sides)
        for i in range(args.runs):
            for name in names[i % len(names):] + names[:i % len(names)]:
                times[name].append(timed(sides[name], environ, ROOT, what=name).seconds)
    ours = median(times["pipeline plan"])
    print(json.dumps({
        "benchmark": "plan_cold_start",
        "runs": args.runs,
        **{f"{name}_median_s": median(values) for name, values in times.items()},
        "pipeline_plan_runs_s": [round(v, 3) for v in times["pipeline plan"]],
        "target": "pipeline plan <= 0.25 s",
        "meets_target": ours <= 0.25,
    }, indent=2))


if __name__ == "__main__":
    main()
