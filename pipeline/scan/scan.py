"""Scan stage, the gate: Trivy on every platform of the staged index, by digest; the policy decides.

Between staging and copy: each platform manifest (``staging/repo@sha256:…``) is
scanned (or its scan for the same DB taken from the cache), the policy judges each
report, every CI's report is written under ``dist/scan/``, and one failing platform
stops the release with a PolicyError (exit 1) that names CVE, package and platform.
Release registries have seen nothing at that point; the tag stage refuses to run
without this stage's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from pipeline import log
from pipeline.access.registries import Access
from pipeline.build.build import BuildOutput
from pipeline.context import Context
from pipeline.errors import PolicyError, ToolError
from pipeline.scan import db as scandb
from pipeline.scan.policy import Policy, evaluate, load_policy
from pipeline.scan.reports import PlatformResult, failure_message, markdown, table, write_all
from pipeline.scan.results import ReportError, ScanCache, parse_report
from pipeline.tools import trivy


@dataclass(frozen=True)
class PlatformScan:
    image: str
    verdict: str
    cached: bool
    counts: dict[str, int]
    blocking: list[dict[str, str]]
    suppressed: list[dict[str, Any]]
    expired: list[dict[str, Any]]


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
    logger = log.get(stage="scan")
    return load_policy(ctx.config.scan, warn=lambda m: logger.warning("trivyignore.line_skipped", detail=m))


def today() -> datetime:
    """Exceptions expire by the wall clock (never SOURCE_DATE_EPOCH, which is the build's time)."""
    return datetime.now(timezone.utc)


class Scan:
    name: ClassVar[str] = "scan"
    description: ClassVar[str] = "Scan every platform of the staged digest with Trivy and apply the gate policy."
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
        return (f"trivy on {what} by manifest digest ({'; '.join(rules)}; exceptions from "
                f"{s.exceptions_file or 'none'}; {db}); reports in {ctx.dist / 'scan'}")

    def run(self, ctx: Context) -> ScanOutput:
        build: BuildOutput = ctx.outputs["build"]
        cfg = ctx.config
        policy = policy_for(ctx)                         # config errors before any network step
        logger = log.get(stage=self.name)
        started = datetime.now(timezone.utc)
        with Access(cfg, ctx.env) as access:
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
            tool_env = access.tool_env()
            version = trivy.version()
            cache = ScanCache(Path(db.cache_dir) / "pipeline-scans")
            now = today()
            results: list[PlatformResult] = []
            raw: dict[str, bytes] = {}
            for platform, digest in build.platforms.items():
                image = f"{reg.host}/{build.repository}@{digest}"
                key = ScanCache.key(digest, db, version, scanners)
                data = cache.get(key)
                cached = data is not None
                if data is None:
                    logger.info("image.scan_started", platform=platform, image=image)
                    data = trivy.scan(image, cache_dir=db.cache_dir, env=tool_env, insecure=reg.allow_http,
                                      timeout_seconds=cfg.scan.timeout_seconds,
                                      java_db_repositories=cfg.scan.java_db_repository,
                                      skip_java_db_update=cfg.scan.skip_db_update, scanners=scanners)
                    cache.put(key, data)
                else:
                    logger.info("image.scan_reused", platform=platform, image=image, db=db.updated_at)
                try:
                    report = parse_report(data)
                except ReportError as exc:
                    raise ToolError(f"trivy scan of {image}: unreadable report ({exc})", tool="trivy") from None
                verdict = evaluate(report, policy, now)
                logger.info("image.scanned", platform=platform, verdict=verdict.verdict,
                            blocking=len(verdict.blocking), suppressed=len(verdict.suppressed), cached=cached)
                results.append(PlatformResult(platform, image, report, verdict, cached))
                raw[platform] = data
        paths = write_all(ctx.dist / "scan", results, raw, start=started, end=datetime.now(timezone.utc),
                          db=db.to_dict(), artifact_uri=cfg.image.dockerfile, trivy_version=version)
        self._show(ctx, results)
        output = ScanOutput(
            build.digest, "fail" if any(not r.verdict.passed for r in results) else "pass",
            {r.platform: PlatformScan(r.image, r.verdict.verdict, r.cached, dict(r.verdict.counts),
                                      r.verdict.to_dict()["blocking"], r.verdict.to_dict()["suppressed"],
                                      r.verdict.to_dict()["expired"]) for r in results},
            db.to_dict(), paths, vulnerabilities_scanned="vuln" in scanners)
        logger.info("scan.reported", verdict=output.verdict, dir=str(ctx.dist / "scan"))
        if output.verdict == "fail":
            ctx.outputs["scan_gate"] = output          # for release.json; "scan" stays unset (no tags)
            raise PolicyError(failure_message(results) + f" (reports in {ctx.dist / 'scan'})")
        return output

    def _show(self, ctx: Context, results: list[PlatformResult]) -> None:
        if ctx.progress:
            ctx.progress(table(results))
        summary = ctx.env.get("GITHUB_STEP_SUMMARY")
        if summary:
            with Path(summary).open("a", encoding="utf-8") as fh:
                fh.write(markdown(results))
