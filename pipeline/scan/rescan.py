"""``pipeline rescan``: released images judged again with today's vulnerability DB, by the gate's own policy.

Which images: every release registry's image repository (``[[registries]]``, or ``--registry``), read
with the hygiene walker: each image (a digest with its tags; an index with its platforms), never a
staging candidate (``staging.tag_prefix``, ``buildcache``), never a cosign signature or attestation, never
the base-image mirror's repositories; the newest ``rescan.keep`` per repository (push times as prune
knows them: the release history in ``dist/`` first). Each platform manifest is scanned once per
(platform digest, DB build, Trivy version): the gate's scan cache is shared, so an image the gate
scanned with the same DB runs no Trivy, and a second rescan with the same DB runs none at all. Only
when the cache lacks a platform is it fetched by our client into a local layout (``.pipeline/rescan``)
and scanned there, offline, with the DB our client fetched.

The verdict is the gate's (fail_on, ignore files, exceptions, VEX); findings not blocking at release
time (``dist`` release manifests' ``outputs.scan``) are marked ``new``. Exit codes: 1 when any image
now fails (registries that could not be read are reported too), else 3 when the DB or a registry could
not be had, else 0. Reports (SARIF, markdown, JUnit, GitLab, verdict JSON) go to ``dist/rescan``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import log
from pipeline.config import Config, RegistryConfig
from pipeline.errors import PipelineError
from pipeline.scan import db as scandb
from pipeline.tools import trivy

if TYPE_CHECKING:
    from pipeline.access.registries import Access
    from pipeline.sign.sign import Kit, Verdict  # noqa: F401
    from pipeline.hygiene.walker import ReleaseFacts
    from pipeline.scan.reports import PlatformResult

RESCAN_DIR = Path(".pipeline/rescan")


@dataclass(frozen=True)
class Target:
    registry: RegistryConfig
    repository: str
    tags: tuple[str, ...]
    digest: str                    # the image (index or single manifest)
    platforms: dict[str, str]      # platform -> manifest digest


@dataclass
class Rescanned:
    """One platform of one released image, judged again."""

    registry: str
    repository: str
    tags: tuple[str, ...]
    digest: str
    platform: str
    manifest: str
    verdict: str
    blocking: list[dict[str, str]]
    new: list[str]                 # blocking ids that did not block at release time (when that is known)
    expiring: list[dict[str, Any]]
    suppressed: int
    cached: bool

    @property
    def image(self) -> str:
        """``registry/repository:tag`` with its most specific tag (``1.2.3`` rather than ``1.2`` or ``latest``)."""
        tag = max(self.tags, key=lambda t: (t.count("."), len(t), t)) if self.tags else "(untagged)"
        return f"{self.registry}/{self.repository}:{tag}"

    def to_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "repository": self.repository, "tags": list(self.tags),
                "digest": self.digest, "platform": self.platform, "manifest": self.manifest, "verdict": self.verdict,
                "blocking": self.blocking, "new": self.new, "expiring": self.expiring, "suppressed": self.suppressed,
                "cached": self.cached}


@dataclass
class RescanResult:
    images: list[Rescanned] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)    # registry -> why
    db: dict[str, Any] = field(default_factory=dict)
    db_error: str | None = None
    trivy_runs: int = 0
    reports: dict[str, str] = field(default_factory=dict)
    attested: list[dict[str, Any]] = field(default_factory=list)   # with --attest: one per registry platform

    @property
    def failed(self) -> list[Rescanned]:
        return [r for r in self.images if r.verdict != "pass"]

    @property
    def exit_code(self) -> int:
        if self.failed:
            return 1
        if self.unreadable or self.db_error or any(a["action"] == "failed" for a in self.attested):
            return 3
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": "fail" if self.failed else ("incomplete" if self.exit_code == 3 else "pass"),
                "images": [r.to_dict() for r in self.images], "unreadable": self.unreadable, "db": self.db,
                "db_error": self.db_error, "trivy_runs": self.trivy_runs, "reports": self.reports,
                "attested": self.attested}

    def failure_message(self) -> str:
        parts = [f"{r.image}@{r.digest} {r.platform}: " + ", ".join(
            f"{b['id']} ({b['severity']}) in {b['package'] or 'a secret'} {b['installed']}".rstrip()
            + (f", fixed in {b['fixed']}" if b.get("fixed") else "") for b in r.blocking) for r in self.failed]
        text = "released images now fail the gate: " + "; ".join(parts)
        if self.unreadable:
            text += "; not read: " + "; ".join(f"{k}: {v}" for k, v in self.unreadable.items())
        return text


# --------------------------------------------------------------------------- which images


def targets(cfg: Config, access: Access, only: list[str], now: datetime,
            facts: ReleaseFacts) -> tuple[list[Target], dict[str, str]]:
    """The released images to rescan, newest ``rescan.keep`` per repository; (targets, unreadable registries:
    a registry that cannot be read, or whose repository holds no released image)."""
    from pipeline.access.registries import select
    from pipeline.hygiene.walker import Walker

    found: list[Target] = []
    unreadable: dict[str, str] = {}
    for reg in select(cfg, only or None):
        repo = reg.repository(cfg.image.name)
        if cfg.is_mirror_repository(reg.name, repo):
            continue
        try:
            walker = Walker(access.client(reg), registry=reg.name, facts=facts, now=now,
                            age_sources=cfg.lifecycle.age_sources)
            snap = walker.walk(repo)
            images = []
            for img in snap.images.values():
                tags = tuple(t for t in img.tags if not t.startswith(cfg.staging.tag_prefix) and t != "buildcache")
                if not tags:
                    continue           # candidates and build cache are not released images
                if img.is_index:
                    platforms = dict(img.platforms)
                else:
                    body, _, _ = access.client(reg).manifest_get(repo, img.digest)
                    platforms = {walker.manifest_platform(repo, json.loads(body)) or "(single)": img.digest}
                images.append((img.pushed_at, Target(reg, repo, tags, img.digest, platforms)))
        except PipelineError as exc:      # unreachable, credentials (ECR, env, helpers): this registry only
            unreadable[reg.name] = str(exc)
            continue
        if not images:
            unreadable[reg.name] = (f"{reg.url}/{repo}: no released image (no tag but candidates); check image.name"
                                    " or that this registry gets releases")
            continue
        far_future = datetime.max.replace(tzinfo=timezone.utc)
        images.sort(key=lambda x: x[0] or far_future, reverse=True)     # unknown age: the newest
        found += [t for _, t in images[:cfg.rescan.keep]]
    return found, unreadable


# --------------------------------------------------------------------------- the rescan


def rescan(cfg: Config, env: Mapping[str, str], access: Access, *, only: list[str], dist: Path,
           now: datetime, attest: bool = False) -> RescanResult:
    """Every released image judged again with the current DB; with ``attest`` the signing key is checked
    first, as the sign stage checks it (an unreadable key, a public key of another pair, a password that
    cannot open a key whose public key is derived from it fail the command, exit 3, before a single image
    is scanned), and each new verdict is attested."""
    if not attest:
        return _rescan(cfg, env, access, only=only, dist=dist, now=now, attest_with=None)
    from pipeline.sign import keys
    from pipeline.sign.sign import signing_kit
    from pipeline.tools import cosign

    with keys.temporary_dir() as work:
        kit = signing_kit(cfg, env, cosign.installed_major(), Path(work))
        return _rescan(cfg, env, access, only=only, dist=dist, now=now, attest_with=(kit, Path(work)))


def _rescan(cfg: Config, env: Mapping[str, str], access: Access, *, only: list[str], dist: Path,
            now: datetime, attest_with: tuple[Kit, Path] | None) -> RescanResult:
    from pipeline.scan.policy import evaluate, load_policy
    from pipeline.scan.reports import PlatformResult, write_all
    from pipeline.scan.results import ReportError, ScanCache, parse_report
    from pipeline.sign.sign import Verdict

    import shutil

    logger = log.get(stage="rescan")
    policy = load_policy(cfg.scan, warn=lambda m: logger.warning("trivyignore.line_skipped", detail=m))
    result = RescanResult()
    shutil.rmtree(dist / "rescan", ignore_errors=True)       # no report of an earlier run passes for this one
    try:
        db = scandb.prepare(cfg, env, access)
    except (trivy.NoDatabaseError, PipelineError) as exc:
        result.db_error = str(exc)
        logger.error("rescan.no_db", error=str(exc)[:300])
        return result
    result.db = db.to_dict()
    from pipeline.hygiene.walker import load_release_facts

    facts = load_release_facts(cfg.lifecycle.release_manifests)   # push times and release-time verdicts
    found, result.unreadable = targets(cfg, access, only, now, facts)
    cache = ScanCache(Path(db.cache_dir) / "pipeline-scans")
    version = trivy.version(str(cache.root))
    scanners = tuple(trivy.SCANNERS)
    shown: list[PlatformResult] = []
    to_attest: list[Verdict] = []
    raw_dir = dist / "rescan" / "trivy"      # Trivy's own JSON per platform digest (what vex export reads too)
    for t in found:
        for platform, manifest in t.platforms.items():
            key = ScanCache.key(manifest, db, version, scanners)
            data = cache.get(key)
            cached = data is not None
            if data is None:
                try:
                    data = _scan(cfg, env, access, t, manifest, db.cache_dir, scanners)
                except PipelineError as exc:
                    result.unreadable[f"{t.registry.name}/{t.repository}@{manifest}"] = str(exc)
                    continue
                cache.put(key, data)
                result.trivy_runs += 1
            try:
                report = parse_report(data)
            except ReportError as exc:
                result.unreadable[f"{t.registry.name}/{t.repository}@{manifest}"] = f"unreadable report ({exc})"
                continue
            raw_dir.mkdir(parents=True, exist_ok=True)
            raw = raw_dir / f"{manifest.split(':', 1)[1][:32]}.json"
            raw.write_bytes(data)
            verdict = evaluate(report, policy, now, (t.digest, manifest))
            then = facts.seen.get((t.digest, platform))
            blocking = [f.item() for f in verdict.blocking]
            new = sorted({b["id"] for b in blocking} - then) if then is not None else []
            item = Rescanned(t.registry.name, t.repository, t.tags, t.digest, platform, manifest,
                             verdict.verdict, blocking, new, [e.to_dict() for e in verdict.expiring],
                             len(verdict.suppressed), cached)
            result.images.append(item)
            logger.info("image.rescanned", image=item.image, digest=t.digest, platform=item.platform,
                        verdict=verdict.verdict, blocking=len(blocking), new=",".join(new), cached=cached)
            for ex in verdict.expiring:
                logger.warning("exception.expiring", id=ex.id, expires=ex.expires.isoformat(), image=item.image,
                               note=f"the exception for {ex.id} lapses on {ex.expires.isoformat()}")
            to_attest.append(Verdict(t.registry, t.repository, platform, manifest, raw, verdict.verdict,
                                     tuple(b["id"] for b in blocking), dict(verdict.counts)))
            shown.append(PlatformResult(f"{item.image} {item.platform}",
                                        f"{t.registry.host}/{t.repository}@{manifest}", report, verdict, cached))
    if attest_with is not None and to_attest:
        result.attested = _attest(cfg, env, access, to_attest, str(result.db.get("updated_at", "")), *attest_with)
    if shown:
        result.reports = write_all(dist / "rescan", shown, {}, start=now, end=datetime.now(timezone.utc),
                                   db=result.db, artifact_uri=cfg.image.dockerfile, trivy_version=version)
    return result


def _attest(cfg: Config, env: Mapping[str, str], access: Access, verdicts: list[Verdict],
            db_built: str, kit: Kit, work: Path) -> list[dict[str, Any]]:
    from pipeline.sign.sign import Signed, attest_verdicts

    out: list[dict[str, Any]] = []
    made = attest_verdicts(cfg, env, access, verdicts, db_built, work, kit=kit)
    for done in made:
        if isinstance(done, Signed):
            out.append({"registry": done.registry, "ref": done.ref, "platform": done.platform,
                        "action": "attested" if done.action == "signed" else "present", "error": None})
        else:
            v, error = done
            out.append({"registry": v.registry.name, "ref": f"{v.registry.host}/{v.repository}@{v.manifest}",
                        "platform": v.platform, "action": "failed", "error": error})
    return out


def _scan(cfg: Config, env: Mapping[str, str], access: Access, t: Target, manifest: str, cache_dir: str,
          scanners: tuple[str, ...]) -> bytes:
    """Fetch one platform manifest's image into a local layout with our client and scan it there."""
    import shutil

    from pipeline.scan.scan import scan_layout
    from pipeline.tools import transfer
    from pipeline.tools.oci import Layout

    dest = RESCAN_DIR / manifest.split(":", 1)[1][:32]
    layout = Layout(dest) if Layout(dest).exists() else Layout.create(dest)
    what = f"{t.registry.host}/{t.repository}@{manifest}"
    try:
        if not layout.has(manifest) or layout.missing(manifest):
            transfer.pull(access.client(t.registry), t.repository, manifest, layout,
                          concurrency=cfg.copy_.concurrency)
        layout.set_root(layout.descriptor(manifest))
        return scan_layout(cfg, env, access, dest, cache_dir, scanners, what)
    finally:
        shutil.rmtree(dest, ignore_errors=True)     # the result is cached; the image bytes need not stay


def text(result: RescanResult) -> str:
    lines = []
    for r in result.images:
        mark = "PASS" if r.verdict == "pass" else "FAIL"
        line = f"{mark}  {r.image}  {r.platform}  {r.digest[:19]}"
        if r.blocking:
            line += "  " + ", ".join(f"{b['id']} ({b['severity']}) {b['package']}" for b in r.blocking)
        if r.new:
            line += f"  new since the release: {', '.join(r.new)}"
        lines.append(line)
        for e in r.expiring:
            lines.append(f"      EXPIRING exception {e['id']} on {e['expires']}")
    for where, why in result.unreadable.items():
        lines.append(f"NOT READ  {where}: {why}")
    for a in result.attested:
        if a["action"] == "failed":
            lines.append(f"NOT ATTESTED  {a['ref']} {a['platform']}: {a['error']}")
    if result.attested:
        done = sum(1 for a in result.attested if a["action"] == "attested")
        same = sum(1 for a in result.attested if a["action"] == "present")
        lines.append(f"attested {done} verdict(s); {same} already attested with this DB")
    if result.db_error:
        lines.append(f"NO DB  {result.db_error}")
    lines.append(f"{len(result.images)} platform image(s), {len(result.failed)} failing, {result.trivy_runs} Trivy"
                 f" run(s){'; reports in ' + str(Path(next(iter(result.reports.values()))).parent) if result.reports else ''}")
    return "\n".join(lines)


__all__ = ["RescanResult", "Rescanned", "Target", "rescan", "targets", "text"]
