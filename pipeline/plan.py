"""The ordered release plan and the one runner for every stage.

The runner does skipping, logging, timing and error mapping for all stages;
``plan`` and ``release`` use the same stage objects, so the plan is computed
from the code that runs, never from a separate dry-run path.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from pipeline import log
from pipeline.build.build import Build
from pipeline.build.mirror import Mirror
from pipeline.context import Context
from pipeline.errors import EXIT_INFRA, PipelineError
from pipeline.metadata.tags import Tags
from pipeline.scan.scan import Scan
from pipeline.sign.sign import Sign
from pipeline.sign.verify import Verify
from pipeline.stage import Stage, StageResult
from pipeline.stages.copy import Copy
from pipeline.stages.report import Report
from pipeline.stages.staging import Staging
from pipeline.stages.tag import Tag

RELEASE: tuple[Stage, ...] = (
    Tags(),
    Mirror(),
    Build(),
    Scan(),
    Staging(),
    Copy(),
    Sign(),
    Tag(),
    Verify(),
    Report(),
)


@dataclass(frozen=True)
class PlanLine:
    stage: str
    action: str          # "run" | "skip"
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"stage": self.stage, "action": self.action, "detail": self.detail}


def plan(ctx: Context, stages: tuple[Stage, ...] = RELEASE) -> list[PlanLine]:
    """What each stage would do, or the sentence saying why it would skip."""
    lines: list[PlanLine] = []
    for stage in stages:
        reason = _skip(stage, ctx)
        if reason:
            lines.append(PlanLine(stage.name, "skip", reason))
        else:
            lines.append(PlanLine(stage.name, "run", stage.describe(ctx)))
    return lines


def _skip(stage: Stage, ctx: Context) -> str | None:
    if stage.name in ctx.options.skip:
        return f"skipped with --skip {stage.name}"
    return stage.skip_reason(ctx)


class Runner:
    """Runs stages in order; the first failure stops the release (later stages, tags included, never run)."""

    stop_on_failure: ClassVar[bool] = True

    def __init__(self, ctx: Context, *, after_stage: Callable[[str], None] | None = None) -> None:
        self.ctx = ctx
        self.results: list[StageResult] = []
        self.after_stage = after_stage   # called with each stage's name once it ran (pipeline.crashpoint)

    def run(self, stages: tuple[Stage, ...] = RELEASE) -> list[StageResult]:
        failed = False
        try:
            for stage in stages:
                if failed and not getattr(stage, "always", False):
                    continue
                result = self.run_one(stage)
                self.results.append(result)
                self.ctx.results.append(result)
                failed = failed or result.status == "failed"
                if self.after_stage is not None:
                    self.after_stage(stage.name)
        finally:
            self.ctx.close()      # the registry clients the stages shared
        return self.results

    def run_one(self, stage: Stage) -> StageResult:
        logger = log.get(stage=stage.name)
        reason = _skip(stage, self.ctx)
        if reason:
            logger.info("stage.skipped", reason=reason)
            return StageResult(stage.name, "skipped", reason)
        started = time.monotonic()
        logger.info("stage.started", plan=stage.describe(self.ctx))
        try:
            output = stage.run(self.ctx)
        except PipelineError as exc:
            seconds = time.monotonic() - started
            logger.error("stage.failed", error=str(exc), seconds=round(seconds, 3))
            return StageResult(stage.name, "failed", str(exc), seconds, exc.exit_code)
        except Exception as exc:  # a bug: the stage fails (exit 3) and the report still runs
            seconds = time.monotonic() - started
            first = log.scrub(str(exc)).splitlines()[0] if str(exc) else ""
            detail = (f"internal error in the {stage.name} stage: {type(exc).__name__}: {first} (set"
                      " PIPELINE_DEBUG=1 for the traceback, and please report it)")
            logger.error("stage.failed", error=detail, seconds=round(seconds, 3))
            if self.ctx.env.get("PIPELINE_DEBUG"):
                logger.error("stage.traceback", traceback=log.scrub(traceback.format_exc()))
            return StageResult(stage.name, "failed", detail, seconds, EXIT_INFRA)
        seconds = time.monotonic() - started
        self.ctx.outputs[stage.name] = output
        logger.info("stage.finished", seconds=round(seconds, 3))
        return StageResult(stage.name, "ok", "", seconds, 0, output)
