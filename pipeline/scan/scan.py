"""Scan stage, the gate: Trivy on every platform of the local image, before any byte is uploaded.

Between build and staging: each platform manifest of the build's local OCI layout is scanned
from a per-platform view of that layout (an ``index.json`` naming only that manifest, the
blobs shared: Trivy ``--input`` takes the first manifest of a multi-platform index whatever
``--platform`` says), or its scan for the same DB taken from the cache. The vulnerability DB
(and the Java DB, when an image has JARs) is fetched by the project's registry client, so
Trivy itself sends nothing to the network. The policy judges each report, every CI's report
is written under ``dist/scan/``, and one failing platform stops the release with a
PolicyError (exit 1) that names CVE, package and platform. No registry, staging included,
has seen a byte of the candidate at that point; the tag stage refuses to run without this
stage's output.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline import log
from pipeline.build.build import BuildOutput
from pipeline.context import Context
from pipeline.errors import PolicyError, ToolError
from pipeline.scan import db as scandb
from pipeline.refs import platform_key
from pipeline.tools import trivy
from pipeline.tools.oci import Layout

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.access.registries import Access
    from pipeline.config import Config
    from pipeline.scan.policy import Policy
    from pipeline.scan.reports import PlatformResult


@dataclass(frozen=True)
class PlatformScan:
    image: str
    verdict: str
    cached: bool
    counts: dict[str, int]
    blocking: list[dict[str, str]]
    suppressed: list[dict[str, Any]]
    expired: list[dict[str, Any]]
    expiring: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ScanOutput:
    digest: str
    verdict: str                                  # pass | fail
    platforms: dict[str, PlatformScan]
    db: dict[str, Any]
    reports: dict[str, str] = field(default_factory=dict)    # kind -> path under dist/scan
    vulnerabilities_scanned: bool = True          # False only with scan.vuln_db_required = false and no DB


def no_db(cache_dir: str, reason: str) -> trivy.DBInfo:
    """Stands in for the DB when vulnerabilities are knowingly not scanned (secrets only)."""
    return trivy.DBInfo(cache_dir=cache_dir, version=0, updated_at="", next_update="", downloaded_at="", size=0,
                        source=f"none: {reason[:200]}")


def policy_for(ctx: Context) -> Policy:
    from pipeline.scan.policy import load_policy

    logger = log.get(stage="scan")
    return load_policy(ctx.config.scan, warn=lambda m: logger.warning("trivyignore.line_skipped", detail=m))


def today() -> datetime:
    """Exceptions expire by the wall clock (never SOURCE_DATE_EPOCH, which is the build's time)."""
    return datetime.now(timezone.utc)


def scan_layout(cfg: Config, env: Mapping[str, str], access: Access, layout: Path, cache_dir: str,
                scanners: tuple[str, ...], image: str) -> bytes:
    """Trivy on one platform's local layout; the Java DB is fetched (our client) and the scan run again when
    the image needs it. The gate and the rescan both scan through here."""
    timeout = cfg.scan.timeout_seconds
    try:
        return trivy.scan(layout, cache_dir=cache_dir, timeout_seconds=timeout, scanners=scanners, what=image)
    except trivy.JavaDBNeeded:
        log.get(stage="scan").info("java_db.needed", image=image)
        scandb.prepare_java(cfg, env, access)
        return trivy.scan(layout, cache_dir=cache_dir, timeout_seconds=timeout, scanners=scanners, what=image)


class Scan:
    name: ClassVar[str] = "scan"
    description: ClassVar[str] = "Scan every platform of the local image with Trivy and apply the gate policy."
    tools: ClassVar[tuple[str, ...]] = ("trivy",)

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.config.scan.enabled:
            return "scan.enabled = false"
        return None

    def describe(self, ctx: Context) -> str:
        s = ctx.config.scan
        build: BuildOutput | None = ctx.outputs.get("build")
        what = (", ".join(build.platforms) if build else ", ".join(ctx.config.image.platforms))
        rules = [f"fail on {s.fail_on} and above"]
        if s.ignore_unfixed:
            rules.append("unfixed ignored")
        if s.ignore_statuses:
            rules.append(f"statuses {', '.join(s.ignore_statuses)} ignored")
        if s.max_allowed:
            rules.append("max " + ", ".join(f"{k}={v}" for k, v in s.max_allowed.items()))
        rules.append("secrets fail" if s.fail_on_secrets else "secrets reported only")
        db = "cached DB only" if s.skip_db_update else f"DB from {', '.join(scandb.repositories(ctx.config))}"
        if not s.vuln_db_required:
            db += ", else secrets only (vuln_db_required = false)"
        return (f"trivy on {what} by manifest digest, from the local image before any upload ({'; '.join(rules)}; exceptions from "
                f"{s.exceptions_file or 'none'}; {db}); reports in {ctx.dist / 'scan'}")

    def run(self, ctx: Context) -> ScanOutput:
        # the gate's own modules load here: listing the stage (pipeline plan) needs none of them
        from pipeline.scan.policy import evaluate
        from pipeline.scan.reports import PlatformResult, failure_message, write_all
        from pipeline.scan.results import ReportError, ScanCache, parse_report

        build: BuildOutput = ctx.outputs["build"]
        cfg = ctx.config
        policy = policy_for(ctx)                         # config errors before any network step
        logger = log.get(stage=self.name)
        started = datetime.now(timezone.utc)
        with ctx.registry_access() as access:
            scanners: tuple[str, ...] = tuple(trivy.SCANNERS)
            try:
                db = scandb.prepare(cfg, ctx.env, access)
            except trivy.NoDatabaseError as exc:
                if cfg.scan.vuln_db_required:
                    raise
                db = no_db(scandb.cache_dir(cfg, ctx.env), str(exc))
                scanners = ("secret",)
                logger.warning("scan.vulnerabilities_skipped", reason=str(exc)[:300],
                               note="scan.vuln_db_required = false: only secrets are scanned; this image's"
                                    " vulnerabilities are NOT checked (the release report says so)")
            reg = cfg.registry(build.registry)
            cache = ScanCache(Path(db.cache_dir) / "pipeline-scans")
            version = trivy.version(str(cache.root))
            now = today()
            results: list[PlatformResult] = []
            raw: dict[str, bytes] = {}
            layout = Layout(build.layout)
            with tempfile.TemporaryDirectory(prefix="pipeline-scan-") as views:
                for platform, digest in build.platforms.items():
                    image = f"{reg.host}/{build.repository}@{digest}"
                    key = ScanCache.key(digest, db, version, scanners)
                    data = cache.get(key)
                    cached = data is not None
                    if data is None:
                        view = layout.view(digest, Path(views) / platform_key(platform))
                        logger.info("image.scan_started", platform=platform, image=image, layout=str(layout.path))
                        data = self._scan(ctx, access, view.path, db.cache_dir, scanners, image)
                        cache.put(key, data)
                    else:
                        logger.info("image.scan_reused", platform=platform, image=image, db=db.updated_at)
                    try:
                        report = parse_report(data)
                    except ReportError as exc:
                        raise ToolError(f"trivy scan of {image}: unreadable report ({exc})", tool="trivy") from None
                    verdict = evaluate(report, policy, now, (build.digest, digest))
                    for ex in verdict.expiring:
                        logger.warning("exception.expiring", id=ex.id, expires=ex.expires.isoformat(),
                                       days_left=(ex.expires - now.date()).days, platform=platform, source=ex.source,
                                       note=f"the exception for {ex.id} lapses on {ex.expires.isoformat()}: from then"
                                            " on it blocks releases; fix the finding or extend the exception")
                    logger.info("image.scanned", platform=platform, verdict=verdict.verdict,
                                blocking=len(verdict.blocking), suppressed=len(verdict.suppressed), cached=cached)
                    results.append(PlatformResult(platform, image, report, verdict, cached))
                    raw[platform] = data
        if not results:
            raise ToolError(f"scan: {build.repository}@{build.digest} has no platform image to scan (only"
                            " attestations?); a gate that scanned nothing cannot pass", tool="trivy")
        paths = write_all(ctx.dist / "scan", results, raw, start=started, end=datetime.now(timezone.utc),
                          db=db.to_dict(), artifact_uri=cfg.image.dockerfile, trivy_version=version)
        self._show(ctx, results)
        output = ScanOutput(
            build.digest, "fail" if any(not r.verdict.passed for r in results) else "pass",
            {r.platform: PlatformScan(r.image, r.verdict.verdict, r.cached, dict(r.verdict.counts),
                                      r.verdict.to_dict()["blocking"], r.verdict.to_dict()["suppressed"],
                                      r.verdict.to_dict()["expired"], r.verdict.to_dict()["expiring"])
             for r in results},
            db.to_dict(), paths, vulnerabilities_scanned="vuln" in scanners)
        logger.info("scan.reported", verdict=output.verdict, dir=str(ctx.dist / "scan"))
        if output.verdict == "fail":
            ctx.outputs["scan_gate"] = output          # for release.json; "scan" stays unset (no tags)
            raise PolicyError(failure_message(results) + f" (reports in {ctx.dist / 'scan'})")
        return output

    def _scan(self, ctx: Context, access: Access, view: Path, cache_dir: str, scanners: tuple[str, ...],
              image: str) -> bytes:
        return scan_layout(ctx.config, ctx.env, access, view, cache_dir, scanners, image)

    def _show(self, ctx: Context, results: list[PlatformResult]) -> None:
        from pipeline.scan.reports import markdown, table

        if ctx.progress:
            ctx.progress(table(results))
        summary = ctx.env.get("GITHUB_STEP_SUMMARY")
        if summary:
            with Path(summary).open("a", encoding="utf-8") as fh:
                fh.write(markdown(results))
