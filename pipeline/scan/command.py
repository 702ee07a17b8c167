"""What ``pipeline scan`` does besides running the stages: judge a report file, fetch or mirror the DB.

The CLI parses arguments and maps errors; these functions do the work and return
plain data plus a text rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline import config, log
from pipeline.access.registries import Access
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.scan import db as scandb
from pipeline.scan import results
from pipeline.scan.policy import evaluate, load_policy
from pipeline.scan.reports import PlatformResult, table


def load_for_report(path: str | None, env: Mapping[str, str]) -> config.ScanConfig:
    """The ``[scan]`` policy: from the config when one is given or exists, else the defaults."""
    cfg_path = Path(path or env.get("PIPELINE_CONFIG") or config.DEFAULT_PATH)
    if path is None and not env.get("PIPELINE_CONFIG") and not cfg_path.exists():
        return config.ScanConfig()
    return config.load(cfg_path, env).scan


def judge_report(report_path: str, scan_cfg: config.ScanConfig,
                 now: datetime | None = None) -> tuple[dict[str, Any], str]:
    """Apply the policy to a Trivy JSON report produced elsewhere: (verdict dict, text)."""
    try:
        data = Path(report_path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--report {report_path}: cannot read: {exc.strerror}") from None
    try:
        report = results.parse_report(data)
    except results.ReportError as exc:
        raise ConfigError(f"--report {report_path}: {exc}") from None
    logger = log.get(stage="scan")
    policy = load_policy(scan_cfg, warn=lambda m: logger.warning("trivyignore.line_skipped", detail=m))
    verdict = evaluate(report, policy, now or datetime.now(timezone.utc))
    result = PlatformResult(report.artifact_name or report_path, report.artifact_name or report_path, report,
                            verdict)
    return verdict.to_dict(), table([result])


def download_db(cfg: Config, env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    with Access(cfg, env) as access:
        info = scandb.prepare(cfg, env, access)
    data = info.to_dict()
    return data, (f"vulnerability DB ready in {Path(info.cache_dir) / 'db'} (updated {info.updated_at},"
                  f" next update {info.next_update}, from {info.source})")


def mirror_db(cfg: Config, env: Mapping[str, str], dest: str) -> tuple[dict[str, Any], str]:
    result = scandb.mirror(cfg, env, dest)
    data = {"destination": result.destination, "digest": result.digest, "source": result.source}
    return data, f"mirrored the vulnerability DB from {result.source} to {result.destination} ({result.digest})"


def stage_summary(outputs: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """``pipeline scan`` output from the scan stage's output (pass) or its failure record."""
    out = outputs.get("scan") or outputs.get("scan_gate")
    if out is None:
        return {"verdict": None}, "no scan ran (see the errors above)"
    data = {"verdict": out.verdict, "digest": out.digest, "db": out.db, "reports": out.reports,
            "platforms": {p: {"image": s.image, "verdict": s.verdict, "cached": s.cached, "counts": s.counts,
                              "blocking": s.blocking, "suppressed": s.suppressed, "expired": s.expired,
                              "expiring": s.expiring}
                          for p, s in out.platforms.items()}}
    lines = [f"{p}: {s.verdict} ({len(s.blocking)} blocking, {len(s.suppressed)} suppressed"
             f"{', cached scan' if s.cached else ''})" for p, s in out.platforms.items()]
    lines.append(f"reports: {Path(next(iter(out.reports.values()), 'dist/scan/x')).parent}")
    return data, "\n".join(lines)


def vex_export(cfg: Config, dist: Path, now: datetime) -> tuple[dict[str, Any], list[str]]:
    """``pipeline vex export``: the exceptions file as OpenVEX, with the package purls of the last gate's and
    rescan's Trivy reports (``dist/scan``, ``dist/rescan/trivy``) and the released image's digests
    (``dist/release.json``); (document, warnings)."""
    from pipeline.scan import vex
    from pipeline.scan.policy import findings as report_findings

    policy = load_policy(cfg.scan)
    if not policy.exceptions:
        raise ConfigError(f"scan.exceptions_file: {cfg.scan.exceptions_file or '(not set)'} holds no [[exceptions]];"
                          " nothing to export")
    found = []
    for path in sorted([*(dist / "scan").glob("linux-*.json"), *(dist / "rescan" / "trivy").glob("*.json")]):
        try:
            found += report_findings(results.parse_report(path.read_bytes()))
        except (OSError, results.ReportError):
            continue
    images: list[str] = []
    try:
        import json

        release = json.loads((dist / "release.json").read_text())
        for reg in release.get("registries") or []:
            for digest in [reg.get("digest")] + list((reg.get("platforms") or {}).values()):
                if digest:
                    images.append(vex.image_purl(reg["repository"], digest, reg["url"].split("/", 1)[0]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    warnings = []
    if not found:
        warnings.append(f"no scan reports in {dist / 'scan'} or {dist / 'rescan'}: the statements name only the"
                        " exceptions' own purls (run a release, 'pipeline scan' or 'pipeline rescan' first for the"
                        " packages Trivy found)")
    live = [ex for ex in policy.exceptions if not ex.expired(now.date())]
    for ex in policy.exceptions:
        if ex.expired(now.date()):       # other tools do not read our expiry note: a lapsed one is left out
            warnings.append(f"{ex.source}: {ex.id} expired on {ex.expires.isoformat()}: not exported")
    if not live:
        raise ConfigError(f"scan.exceptions_file: every exception in {cfg.scan.exceptions_file} has expired;"
                          " nothing to export")
    document = vex.export(live, found, list(dict.fromkeys(images)), now,
                          author=f"pipeline ({cfg.scan.exceptions_file})")
    for st, ex in zip(document["statements"], live, strict=True):
        if not st["products"]:
            warnings.append(f"{ex.source}: {ex.id}: no package purl known (no scan found it and the exception"
                            " has no purl); Trivy will not apply this statement")
    return document, warnings
