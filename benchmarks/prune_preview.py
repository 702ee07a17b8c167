"""Prune preview over 2,000 tags: pipeline vs a naive per-tag walk vs skopeo, measured in the same run.

Prints one JSON object. Needs only the distribution registry (``docker-registry``) and skopeo.
A local registry (started here, stopped at the end) gets ~2,000 tags generated with the registry
client: single-platform images, two-platform indexes with an alias tag each, and cosign-style
``.sig`` tags; each image's config ``created`` is its (approximate) age, so every side has to read
configs: the worst case for the preview (release manifests or a vendor API would skip that).

* pipeline: :class:`pipeline.hygiene.Walker` (one GET per image tag with the full Accept list, a HEAD per
  signature tag, the config of the first platform only, 8 in parallel) + :func:`pipeline.hygiene.plan`;
  again with release manifests as the age source (no config reads: images this tool released); and
  ``python -m pipeline prune --format json`` end to end (interpreter start included);
* naive: the same client, per tag in order: GET the manifest by tag, for an index GET its first
  platform manifest, GET the config blob; no de-duplication, no concurrency (what a first script does);
* skopeo: ``skopeo list-tags`` + ``skopeo inspect`` per tag (an independent client), timed on a sample
  and extrapolated to every tag (a full run takes minutes).

    python benchmarks/prune_preview.py [--tags 2000] [--skopeo-sample 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import log  # noqa: E402
from pipeline.hygiene import lifecycle  # noqa: E402
from pipeline.hygiene import walker as hygiene  # noqa: E402
from pipeline.setup import localregistry  # noqa: E402
from pipeline.tools.registry import INDEX_TYPES, Registry  # noqa: E402
from pipeline.tools.vendors import Distribution, parse_time  # noqa: E402
from tests.support.imagegen import ImageGen  # noqa: E402

REPO = "bench/app"
RULES = [
    {"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPatternList": ["r-*"],
                                      "countType": "imageCountMoreThan", "countNumber": 100},
     "action": {"type": "expire"}},
    {"rulePriority": 2, "selection": {"tagStatus": "tagged", "tagPrefixList": ["b-"], "countType": "sinceImagePushed",
                                      "countUnit": "days", "countNumber": 30}, "action": {"type": "expire"}},
    {"rulePriority": 3, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1200},
     "action": {"type": "expire"}},
]


def generate(client: Registry, total_tags: int, now: datetime) -> dict[str, int]:
    """~55% single images (1 tag), ~20% of tags on indexes (2 tags each), 15% .sig, 10% nightlies."""
    rng = random.Random(6)
    g = ImageGen(client, REPO)
    singles, indexes = int(total_tags * 0.45), int(total_tags * 0.10)
    nightlies = int(total_tags * 0.10)
    sigs = total_tags - singles - 2 * indexes - nightlies
    ages = lambda: now - timedelta(days=rng.uniform(0.1, 90))  # noqa: E731

    def single(i: int) -> str:
        img = g.manifest(created=ages())
        g.tag(img, f"b-{i}")
        return img.digest

    def multi(i: int) -> str:
        img = g.multi(created=ages())
        g.tag(img, f"r-{i}", f"r-{i}-alias")
        return img.digest

    def nightly(i: int) -> str:
        img = g.manifest(created=ages())
        g.tag(img, f"nightly-{i}")
        return img.digest

    with ThreadPoolExecutor(max_workers=8) as pool:
        subjects = list(pool.map(single, range(singles))) + list(pool.map(multi, range(indexes)))
        list(pool.map(nightly, range(nightlies)))
        list(pool.map(g.signature, subjects[:sigs]))
    return {"single_images": singles, "indexes": indexes, "nightlies": nightlies, "signatures": sigs}


def requests_since(inst: localregistry.RegistryInstance, offset: int) -> int:
    return sum(1 for line in localregistry.read_log_since(inst, offset) if localregistry.parse_access_line(line))


def naive(client: Registry, now: datetime) -> list[lifecycle.Image]:
    """Per tag, in order: manifest, first child (indexes), config. Signatures skipped by name only."""
    by_digest: dict[str, lifecycle.Image] = {}
    for tag in client.tags(REPO):
        if tag.startswith("sha256-"):
            continue
        body, media, digest = client.manifest_get(REPO, tag)
        m = json.loads(body)
        if media in INDEX_TYPES:
            child, _, _ = client.manifest_get(REPO, m["manifests"][0]["digest"])
            m = json.loads(child)
        created = parse_time(json.loads(client.blob_get(REPO, m["config"]["digest"])).get("created"))
        old = by_digest.get(digest)
        by_digest[digest] = lifecycle.Image(digest, (*(old.tags if old else ()), tag), hygiene.plausible(created, now))
    return list(by_digest.values())


def skopeo_sample(host: str, sample: int) -> tuple[float, int, int]:
    """(seconds, tags inspected, tags listed) for skopeo list-tags + inspect of ``sample`` tags."""
    start = time.perf_counter()
    r = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{host}/{REPO}"],
                       capture_output=True, text=True, check=True)
    tags = [t for t in json.loads(r.stdout)["Tags"] if not t.startswith("sha256-")]
    for tag in tags[:sample]:
        subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{host}/{REPO}:{tag}"],
                       capture_output=True, text=True, check=True)
    return time.perf_counter() - start, min(sample, len(tags)), len(tags)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tags", type=int, default=2000)
    parser.add_argument("--skopeo-sample", type=int, default=100)
    args = parser.parse_args()
    log.configure("text", level="warning")
    now = datetime.now(timezone.utc)
    policy = lifecycle.parse_rules(RULES, source="benchmark")
    with tempfile.TemporaryDirectory(prefix="bench-prune-") as tmp_s:
        tmp = Path(tmp_s)
        state = tmp / "state"
        inst = localregistry.start("bench-prune", port=0, state_root=state)
        try:
            with Registry(inst.host, name="bench", insecure=True) as client:
                t0 = time.perf_counter()
                shape = generate(client, args.tags, now)
                generate_s = time.perf_counter() - t0
                tags = client.tags(REPO)

                offset = localregistry.log_offset(inst)
                t0 = time.perf_counter()
                walker = hygiene.Walker(client, registry="bench", vendor=Distribution("bench", client),
                                        age_sources=("created",), now=now)
                snap = walker.walk(REPO)
                plan = hygiene.plan(snap, policy, now)
                pipeline_s = time.perf_counter() - t0
                pipeline_requests = requests_since(inst, offset)

                # the path for images this tool released: release manifests know the push time, no config reads
                releases = tmp / "releases"
                releases.mkdir()
                for img in plan.rows:
                    if img.pushed_at is not None:
                        (releases / f"{img.digest[7:19]}.json").write_text(json.dumps({
                            "digest": img.digest, "released_at": img.pushed_at.isoformat(),
                            "registries": [{"name": "bench", "repository": REPO, "digest": img.digest}]}))
                offset = localregistry.log_offset(inst)
                t0 = time.perf_counter()
                facts = hygiene.load_release_facts([str(releases / "*.json")])
                fast = hygiene.Walker(client, registry="bench", vendor=Distribution("bench", client), facts=facts,
                                      age_sources=("release", "created"), now=now).walk(REPO)
                fast_plan = hygiene.plan(fast, policy, now)
                release_s = time.perf_counter() - t0
                release_requests = requests_since(inst, offset)

                offset = localregistry.log_offset(inst)
                t0 = time.perf_counter()
                naive_images = naive(client, now)
                naive_eval = lifecycle.evaluate(policy, naive_images, now)
                naive_s = time.perf_counter() - t0
                naive_requests = requests_since(inst, offset)

            cfg = tmp / "pipeline.toml"
            cfg.write_text(_toml_config(inst.host))
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "pipeline", "prune", "--config", str(cfg), "--format", "json"],
                               capture_output=True, text=True, env=env, cwd=tmp)
            cli_s = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"pipeline prune failed: {r.stderr[-2000:]}")
            cli_summary = json.loads(r.stdout)["summary"]
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import pipeline.cli"], env=env, check=True)
            interpreter_s = time.perf_counter() - t0
            skopeo_s, inspected, listed = skopeo_sample(inst.host, args.skopeo_sample)
        finally:
            localregistry.stop("bench-prune", state_root=state)
    same = plan_expired(plan) == naive_eval.expired
    print(json.dumps({
        "benchmark": "prune_preview",
        "tags": len(tags), "images": len(snap.images), "attachments": len(snap.attachments), "shape": shape,
        "age_source": "config created (worst case: every image's config is read); then release manifests",
        "expire": len(plan.expired), "keep": len(plan.rows) - len(plan.expired),
        "manifests_to_delete": len(plan.deletions()),
        "generate_s": round(generate_s, 2),
        "pipeline_preview_s": round(pipeline_s, 3),
        "pipeline_requests": pipeline_requests,
        "pipeline_preview_release_source_s": round(release_s, 3),
        "pipeline_release_source_requests": release_requests,
        "same_expire_set_with_release_source": plan_expired(fast_plan) == plan_expired(plan),
        "pipeline_cli_s": round(cli_s, 3),
        "pipeline_cli_summary": cli_summary,
        "interpreter_start_s": round(interpreter_s, 3),
        "alternative": "naive per-tag walk with the same client (GET manifest, first child, config; sequential)",
        "alternative_s": round(naive_s, 3),
        "alternative_requests": naive_requests,
        "speedup_vs_naive": round(naive_s / pipeline_s, 2) if pipeline_s else None,
        "speedup_vs_naive_release_source": round(naive_s / release_s, 2) if release_s else None,
        "same_expire_set_as_naive": same,
        "skopeo_sampled_tags": inspected,
        "skopeo_sample_s": round(skopeo_s, 2),
        "skopeo_extrapolated_s": round(skopeo_s / max(inspected, 1) * listed, 1),
    }, indent=2))


def plan_expired(plan: hygiene.RepoPlan) -> set[str]:
    return {r.digest for r in plan.rows if r.verdict == "expire" and not r.kind.startswith("orphan")}


def _toml_config(host: str) -> str:
    rules = []
    for r in RULES:
        sel = ", ".join(f"{k} = {json.dumps(v)}" for k, v in r["selection"].items())
        rules.append(f"[[lifecycle.rules]]\nrulePriority = {r['rulePriority']}\nselection = {{ {sel} }}\n"
                     f"action = {{ type = \"expire\" }}\n")
    return (f'[image]\nname = "{REPO}"\n[[registries]]\nname = "bench"\nurl = "{host}"\nauth = "none"\n'
            f'[lifecycle]\nage_sources = ["created"]\nrelease_manifests = []\nkeep_candidates = 0\n'
            + "".join(rules))


if __name__ == "__main__":
    main()
