"""`pipeline prune` on real registries (issue 6 acceptance).

A few hundred synthetic images and tags (no docker builds: manifests, configs and layers pushed
with the registry client, see tests/support/imagegen.py) in three repositories of the ``hub``
registry (deletes enabled) and one of ``ecr`` (deletes disabled): releases (multi-platform
indexes with cosign-style signatures, attestations and a Sigstore bundle), pull-request images,
nightlies, staging candidates (with split builds' tagged platform manifests and ``buildcache``)
and an orphaned signature. Each image's push time comes from a chosen source: release manifests,
the ``org.opencontainers.image.created`` annotation, or the config's ``created`` (with decoys
that would change the outcome if the wrong source won).

The expected keep/expire sets are written down from the rules directly; the preview must match
them exactly, ``--apply`` must delete exactly those (checked by listing and HEAD with raw HTTP, and
skopeo pulling kept indexes with all platforms), keep every signature of a kept image, and refuse
to delete anything at all while one registry cannot delete.
"""

from __future__ import annotations

import io
import json
import secrets
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.cli import main
from pipeline.errors import EXIT_INFRA
from pipeline.tools.registry import Credentials, Registry
from tests.support.imagegen import ImageGen, Pushed

ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json, "
          "application/vnd.docker.distribution.manifest.v2+json")
KEEP_RELEASES, PR_DAYS, NIGHTLY_DAYS, ANY_COUNT, KEEP_CANDIDATES = 5, 7, 30, 58, 4
PRS, NIGHTLIES, CANDIDATES = 40, 80, 30


@pytest.fixture(scope="module", autouse=True)
def toolchain(registries, require_tool):
    for tool in ("docker-registry", "skopeo"):
        require_tool(tool)


def client_for(reg: Any) -> Registry:
    creds = Credentials(reg.username, reg.password) if reg.auth else None
    return Registry(reg.host, name=reg.name, insecure=True, credentials=creds)


def raw(reg: Any) -> httpx.Client:
    return httpx.Client(base_url=reg.url, headers={**reg.auth_header(), "Accept": ACCEPT}, timeout=30)


def listing(reg: Any, repo: str) -> set[str]:
    with raw(reg) as c:
        r = c.get(f"/v2/{repo}/tags/list", params={"n": 10000})
        return set() if r.status_code == 404 else set(r.json().get("tags") or [])


def exists(reg: Any, repo: str, ref: str) -> bool:
    with raw(reg) as c:
        r = c.head(f"/v2/{repo}/manifests/{ref}")
        assert r.status_code in (200, 404), r.status_code
        return r.status_code == 200


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


@dataclass
class Repo:
    name: str
    expire: set[str] = field(default_factory=set)          # image digests the preview must expire
    keep: set[str] = field(default_factory=set)            # image digests it must keep
    gone: set[str] = field(default_factory=set)            # every manifest digest --apply must delete
    stays: set[str] = field(default_factory=set)           # manifest digests that must survive
    kept_tags: set[str] = field(default_factory=set)
    sources: dict[str, str] = field(default_factory=dict)  # digest -> expected age source
    indexes: dict[str, str] = field(default_factory=dict)  # kept index tag -> digest (pull check)
    sigs: dict[str, str] = field(default_factory=dict)     # kept .sig tag -> manifest digest


@dataclass
class World:
    tmp: Path
    ns: str
    config: Path
    repos: dict[str, Repo]
    ecr_repo: Repo
    now: datetime


def _image(repo: Repo, pushed: Pushed, tags: list[str], *, expire: bool, source: str) -> None:
    (repo.expire if expire else repo.keep).add(pushed.digest)
    repo.sources[pushed.digest] = source
    if expire:
        repo.gone.add(pushed.digest)
        repo.gone.update(d for d in pushed.platforms.values() if d != pushed.digest)
    else:
        repo.stays.add(pushed.digest)
        repo.stays.update(pushed.platforms.values())
        repo.kept_tags.update(tags)


def _sign(g: ImageGen, repo: Repo, subject: str, *, expire: bool) -> None:
    sig = g.signature(subject)
    tag = subject.replace(":", "-") + ".sig"
    if expire:
        repo.gone.add(sig.digest)
    else:
        repo.stays.add(sig.digest)
        repo.kept_tags.add(tag)
        repo.sigs[tag] = sig.digest


def build_app(g: ImageGen, repo: Repo, now: datetime, releases: list[dict[str, Any]], hub_name: str) -> None:
    decoy = now - timedelta(hours=5)   # newer than every release: wrong if the config won over the manifest
    shared: Pushed | None = None
    for k in range(14):
        age = now - timedelta(days=(13 - k) * 3 + 1.5)
        from_release = k % 2 == 0
        created = decoy if from_release else age
        # the newest release reuses v1.8.0's amd64 manifest: deleting v1.8.0 must not touch it
        amd = shared if k == 13 and shared else g.manifest(created=created, platform="linux/amd64")
        arm = g.manifest(created=created, platform="linux/arm64")
        idx = g.index([amd, arm])
        if k == 8:
            shared = amd
        tags = [f"v1.{k}.0"] + (["latest"] if k == 13 else [])
        g.tag(idx, *tags)
        expire = k < 14 - KEEP_RELEASES
        _image(repo, idx, tags, expire=expire, source="release" if from_release else "created")
        _sign(g, repo, idx.digest, expire=expire)
        if k % 3 == 0:
            att = g.attestation(arm.digest)
            (repo.gone if expire else repo.stays).add(att.digest)
            if not expire:
                repo.kept_tags.add(arm.digest.replace(":", "-") + ".att")
        if not expire:
            repo.indexes[tags[0]] = idx.digest
        if from_release:
            releases.append({"digest": idx.digest, "released_at": iso(age), "platforms": idx.platforms,
                             "registries": [{"name": hub_name, "repository": repo.name, "digest": idx.digest,
                                             "platforms": idx.platforms}]})
    assert shared is not None
    repo.gone.discard(shared.digest)              # listed by the expired v1.8.0 and the kept v1.13.0
    att = g.attestation(shared.digest)            # so its attestation follows the kept one
    repo.stays.add(att.digest)
    repo.kept_tags.add(shared.digest.replace(":", "-") + ".att")
    # pull-request images: older than PR_DAYS expire; a reproducible build (1980) has no push time
    for n in range(1, PRS + 1):
        age = n * 0.3 + 0.5                     # never within two hours of PR_DAYS
        img = g.manifest(created=now - timedelta(days=age))
        g.tag(img, f"pr-{n}")
        _image(repo, img, [f"pr-{n}"], expire=age > PR_DAYS, source="created")
    repro = g.manifest(created="1980-01-01T00:00:01Z")
    g.tag(repro, "pr-99")
    _image(repo, repro, ["pr-99"], expire=False, source="unknown")
    # six old images only the `any` rule sees: 61 images in the repo, so the 3 oldest are past ANY_COUNT
    for i, letter in enumerate("abcdef"):
        img = g.manifest(created=now - timedelta(days=50.5 + i))
        g.tag(img, f"tool-{letter}")
        _image(repo, img, [f"tool-{letter}"], expire=i >= 3, source="created")
    subject = g.manifest(created=now)             # untagged (not listable): its bundle is kept
    ref, fallback = g.bundle(subject)
    repo.stays |= {ref.digest, fallback.digest}
    repo.kept_tags.add(subject.digest.replace(":", "-"))


def build_tools(g: ImageGen, repo: Repo, now: datetime) -> None:
    for k in range(1, NIGHTLIES + 1):
        days = k * 0.5 + 0.25                   # never within six hours of NIGHTLY_DAYS
        age = now - timedelta(days=days)
        if k % 2 == 0:   # the annotation knows; the config says 1970 (ignored as implausible)
            img = g.manifest(created="1970-01-01T00:00:00Z",
                             annotations={"org.opencontainers.image.created": iso(age)})
            source = "annotation"
        else:
            img = g.manifest(created=age)
            source = "created"
        g.tag(img, f"nightly-{k}")
        expire = days > NIGHTLY_DAYS
        _image(repo, img, [f"nightly-{k}"], expire=expire, source=source)
        if k % 5 == 0:
            _sign(g, repo, img.digest, expire=expire)
        if k in (10, 70):
            ref, fallback = g.bundle(img)
            if expire:
                repo.gone |= {ref.digest, fallback.digest}
            else:
                repo.stays |= {ref.digest, fallback.digest}
                repo.kept_tags.add(img.digest.replace(":", "-"))
    orphan = g.signature("sha256:" + secrets.token_hex(32))   # its subject never existed
    repo.gone.add(orphan.digest)


def build_staging(g: ImageGen, repo: Repo, now: datetime) -> None:
    """Ten candidates (indexes); the newest also `buildcache`, the sixth also a release tag; split builds
    tagged two platform manifests. The arm64 manifest of the kept k=3 is old enough to fall past the
    candidate count, but a kept index lists it: kept."""
    ranked: list[tuple[float, Pushed, str]] = []      # candidate-only images: (age, image, tag)
    protected: set[str] = set()
    for k in range(1, CANDIDATES + 1):
        age = k + 0.5
        arm_age = {3: 5.6, 9: 9.6}.get(k, age + 0.1)
        amd = g.manifest(created=now - timedelta(days=age), platform="linux/amd64")
        arm = g.manifest(created=now - timedelta(days=arm_age), platform="linux/arm64")
        idx = g.index([amd, arm])
        tag = f"candidate-{secrets.token_hex(4)[:7]}-{secrets.token_hex(6)}"
        tags = [tag] + (["buildcache"] if k == 1 else []) + (["1.0.0"] if k == 6 else [])
        g.tag(idx, *tags)
        if len(tags) > 1:
            _image(repo, idx, tags, expire=False, source="created")
            repo.indexes[tags[1]] = idx.digest
        else:
            ranked.append((age, idx, tag))
        if k in (3, 9):
            g.tag(arm, f"{tag}-linux-arm64")
            ranked.append((arm_age, arm, f"{tag}-linux-arm64"))
    ranked.sort(key=lambda x: x[0])
    kept_indexes = {img.digest for _, img, _ in ranked[:KEEP_CANDIDATES]}
    protected = {d for _, img, _ in ranked if img.digest in kept_indexes for d in img.platforms.values()}
    for i, (_age, img, tag) in enumerate(ranked):
        _image(repo, img, [tag], expire=i >= KEEP_CANDIDATES and img.digest not in protected, source="created")
        if img.digest in kept_indexes and len(img.platforms) > 1:
            repo.indexes[tag] = img.digest
    assert any(img.digest in protected for _, img, _ in ranked[KEEP_CANDIDATES:]), "k=3's arm64 is not exercised"


@pytest.fixture(scope="module")
def world(tmp_path_factory, registries) -> World:
    tmp = tmp_path_factory.mktemp("prune")
    ns = f"p{secrets.token_hex(3)}"
    now = datetime.now(timezone.utc)
    hub, ecr = registries["hub"], registries["ecr"]
    repos = {name: Repo(f"{ns}/{name}") for name in ("app", "tools", "staging")}
    releases: list[dict[str, Any]] = []
    with client_for(hub) as c:
        build_app(ImageGen(c, repos["app"].name), repos["app"], now, releases, "hub")
        build_tools(ImageGen(c, repos["tools"].name), repos["tools"], now)
        build_staging(ImageGen(c, repos["staging"].name), repos["staging"], now)
    ecr_repo = Repo(f"{ns}/app")
    with client_for(ecr) as c:
        g = ImageGen(c, ecr_repo.name)
        for k in range(7):
            img = g.manifest(created=now - timedelta(days=k + 0.5))
            g.tag(img, f"v2.{k}.0")
            _image(ecr_repo, img, [f"v2.{k}.0"], expire=k >= KEEP_RELEASES, source="created")
    (tmp / "releases").mkdir()
    for i, rel in enumerate(releases):
        (tmp / "releases" / f"r{i}.json").write_text(json.dumps(rel))
    cfg = tmp / "pipeline.toml"
    rule = ('[[lifecycle.rules]]\nrulePriority = {p}\ndescription = "{d}"\nselection = {{ {s} }}\n'
            'action = {{ type = "expire" }}\n')
    rules = "".join([
        rule.format(p=1, d="keep the newest releases", s='tagStatus = "tagged", tagPatternList = ["v*"], '
                    f'countType = "imageCountMoreThan", countNumber = {KEEP_RELEASES}'),
        rule.format(p=2, d="pull requests", s='tagStatus = "tagged", tagPrefixList = ["pr-"], '
                    f'countType = "sinceImagePushed", countUnit = "days", countNumber = {PR_DAYS}'),
        rule.format(p=3, d="nightlies", s='tagStatus = "tagged", tagPatternList = ["nightly-*"], '
                    f'countType = "sinceImagePushed", countUnit = "days", countNumber = {NIGHTLY_DAYS}'),
        rule.format(p=9, d="cap", s=f'tagStatus = "any", countType = "imageCountMoreThan", countNumber = {ANY_COUNT}'),
    ])
    cfg.write_text(f"""
[image]
name = "{ns}/app"
{hub.toml}
{ecr.toml}
[staging]
registry = "hub"
repository = "{ns}/staging"
[lifecycle]
enabled = ENABLED
keep_candidates = {KEEP_CANDIDATES}
repositories = ["{ns}/app", "{ns}/tools"]
release_manifests = ["{tmp / 'releases'}/*.json"]
age_sources = ["release", "annotation", "created"]
{rules}
[retry]
attempts = 2
initial_seconds = 0.1
max_seconds = 0.5
[report]
dir = "{tmp / 'dist'}"
""".replace("ENABLED", "true"))
    return World(tmp, ns, cfg, repos, ecr_repo, now)


def prune(world: World, *args: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["prune", "--config", str(world.config), "--format", "json", *args], stdout=out, stderr=err)
    return code, (json.loads(out.getvalue()) if out.getvalue().strip() else None), err.getvalue()


def verdicts(report: dict[str, Any], registry: str, repo: str) -> dict[str, dict[str, Any]]:
    entry = next(r for r in report["repositories"] if r["registry"] == registry and r["repository"] == repo)
    return {i["digest"]: i for i in entry["images"]}


@pytest.fixture(scope="module")
def preview(world) -> dict[str, Any]:
    code, report, err = prune(world)
    assert code == 0, err[-3000:]
    return report


def test_the_world_is_big_enough(world, registries):
    tags = sum(len(listing(registries["hub"], r.name)) for r in world.repos.values())
    images = sum(len(r.expire) + len(r.keep) for r in world.repos.values())
    assert tags >= 200 and images >= 150, (tags, images)


def test_preview_matches_the_expected_sets_exactly(world, preview):
    assert preview["applied"] is False and preview["deleted"] == []
    for name, repo in [*(("hub", r) for r in world.repos.values()), ("ecr", world.ecr_repo)]:
        got = verdicts(preview, name, repo.name)
        images = {d: v for d, v in got.items() if not v["kind"].startswith("orphan")}
        assert set(images) == repo.expire | repo.keep, f"{name} {repo.name}"
        wrong = {d[:19]: (v["verdict"], v["tags"], v["rule"], v["age_source"]) for d, v in images.items()
                 if (v["verdict"] == "expire") != (d in repo.expire)}
        assert not wrong, f"{name} {repo.name}: {wrong}"


def test_preview_names_the_age_source_and_the_claiming_rule(world, preview):
    for repo in world.repos.values():
        got = verdicts(preview, "hub", repo.name)
        for digest, source in repo.sources.items():
            if digest in got:
                assert got[digest]["age_source"] == source, (repo.name, got[digest]["tags"])
    app = verdicts(preview, "hub", world.repos["app"].name)
    by_tag = {v["tags"][0]: v for v in app.values() if v["tags"]}
    assert by_tag["v1.0.0"]["rule"].startswith("#1 tagged v*") and by_tag["v1.0.0"]["approximate"] is False
    assert by_tag["pr-12"]["rule"].startswith("#2") and by_tag["pr-12"]["approximate"] is True
    assert by_tag["tool-f"]["rule"].startswith("#9 any") and by_tag["tool-f"]["verdict"] == "expire"
    assert by_tag["pr-99"]["age_days"] is None and by_tag["pr-99"]["verdict"] == "keep"
    staging = verdicts(preview, "hub", world.repos["staging"].name)
    assert any(v["rule"] and v["rule"].startswith("built-in") for v in staging.values())
    tools = verdicts(preview, "hub", world.repos["tools"].name)
    assert [v["kind"] for v in tools.values() if v["kind"].startswith("orphan")] == ["orphan sig"]


def test_preview_deletes_nothing_and_lists_the_deletions(world, preview, registries):
    for repo in world.repos.values():
        listed = {d["digest"] for r in preview["repositories"] if r["repository"] == repo.name
                  and r["registry"] == "hub" for d in r["deletions"]}
        assert listed == repo.gone, repo.name
        assert all(exists(registries["hub"], repo.name, d) for d in repo.gone)


def test_a_registry_that_cannot_delete_stops_everything(world, registries):
    before = {r.name: listing(registries["hub"], r.name) for r in world.repos.values()}
    ecr_before = listing(registries["ecr"], world.ecr_repo.name)
    code, report, err = prune(world, "--apply")
    assert code == EXIT_INFRA and report is None
    line = next(ln for ln in err.splitlines() if ln.startswith("pipeline: error:"))
    assert "nothing was deleted" in line and "ecr" in line and "storage.delete.enabled" in line
    assert "--registry" in line
    assert {r.name: listing(registries["hub"], r.name) for r in world.repos.values()} == before
    assert listing(registries["ecr"], world.ecr_repo.name) == ecr_before


@pytest.fixture(scope="module")
def applied(world, preview, registries) -> dict[str, Any]:
    sigs_before = {}
    with raw(registries["hub"]) as c:
        for repo in world.repos.values():
            for tag in repo.sigs:
                sigs_before[(repo.name, tag)] = c.get(f"/v2/{repo.name}/manifests/{tag}").content
    code, report, err = prune(world, "--apply", "--registry", "hub")
    assert code == 0, err[-3000:]
    report["_sigs_before"] = sigs_before
    return report


def test_apply_deletes_exactly_the_expired_images(world, applied, registries):
    hub = registries["hub"]
    assert applied["applied"] is True and applied["leftovers"] == []
    assert {d["outcome"] for d in applied["deleted"]} == {"deleted"}
    for repo in world.repos.values():
        deleted = {d["digest"] for d in applied["deleted"] if d["repository"] == repo.name}
        assert deleted == repo.gone, repo.name
        assert listing(hub, repo.name) == repo.kept_tags, repo.name        # independent listing
        assert not [d for d in repo.gone if exists(hub, repo.name, d)], repo.name
        assert not [d for d in repo.stays if not exists(hub, repo.name, d)], repo.name
    assert any("garbage-collect" in h for h in applied["hints"])


def test_kept_indexes_pull_with_all_platforms(world, applied, registries, docker_config):
    hub = registries["hub"]
    for repo in world.repos.values():
        for tag, digest in repo.indexes.items():
            ref = f"{hub.host}/{repo.name}@{digest}"
            dest = world.tmp / "pulled" / repo.name.replace("/", "_") / tag
            dest.parent.mkdir(parents=True, exist_ok=True)
            r = subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false", "--authfile",
                                str(docker_config / "config.json"), f"docker://{ref}", f"oci:{dest}"],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, f"{ref}: {r.stderr}"
            index = json.loads((dest / "index.json").read_text())
            top = json.loads((dest / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
            assert {f"{m['platform']['os']}/{m['platform']['architecture']}" for m in top["manifests"]} == \
                {"linux/amd64", "linux/arm64"}


def test_signatures_of_kept_images_are_untouched(world, applied, registries):
    with raw(registries["hub"]) as c:
        for (repo, tag), body in applied["_sigs_before"].items():
            r = c.get(f"/v2/{repo}/manifests/{tag}")
            assert r.status_code == 200 and r.content == body, (repo, tag)


def test_a_second_preview_finds_nothing_left_to_do(world, applied):
    code, report, err = prune(world, "--registry", "hub")
    assert code == 0, err[-2000:]
    assert report["summary"]["manifests_to_delete"] == 0 and report["summary"]["expire"] == 0
    for repo in world.repos.values():
        assert set(verdicts(report, "hub", repo.name)) == repo.keep


def test_text_preview_is_a_table_with_a_summary(world):
    out, err = io.StringIO(), io.StringIO()
    code = main(["prune", "--config", str(world.config), "--registry", "ecr"], stdout=out, stderr=err)
    text = out.getvalue()
    assert code == 0, err.getvalue()[-2000:]
    assert f"ecr: {world.ecr_repo.name}" in text and "EXPIRE" in text and "#1 tagged v*: keep 5" in text
    assert "preview (dry run; --apply deletes): 7 images" in text and "keep 5, expire 2" in text
