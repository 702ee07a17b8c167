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
                              "blocking": s.blocking, "suppressed": s.suppressed, "expired": s.expired}
                          for p, s in out.platforms.items()}}
    lines = [f"{p}: {s.verdict} ({len(s.blocking)} blocking, {len(s.suppressed)} suppressed"
             f"{', cached scan' if s.cached else ''})" for p, s in out.platforms.items()]
    lines.append(f"reports: {Path(next(iter(out.reports.values()), 'dist/scan/x')).parent}")
    return data, "\n".join(lines)
