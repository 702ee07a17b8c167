"""Report stage: dist/release.json and the human / CI summaries. Runs even after a failure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pipeline import log
from pipeline.ci_files import outputs as ciout
from pipeline.context import Context
from pipeline.report import markdown_summary, release_manifest, write_manifest


@dataclass(frozen=True)
class ReportOutput:
    manifest: str
    summary: str


class Report:
    name: ClassVar[str] = "report"
    description: ClassVar[str] = "Write dist/release.json and the CI summaries."
    tools: ClassVar[tuple[str, ...]] = ()
    always: ClassVar[bool] = True   # the runner runs it after a failure too

    def skip_reason(self, ctx: Context) -> str | None:
        return None

    def describe(self, ctx: Context) -> str:
        extra = " and the GitHub step summary" if ctx.env.get("GITHUB_STEP_SUMMARY") else ""
        extra += ", $GITHUB_OUTPUT" if ctx.env.get("GITHUB_OUTPUT") else ""
        return (f"write {ctx.dist / 'release.json'}{extra}, {ctx.dist / ciout.DOTENV_FILE} (GitLab dotenv)"
                f" and {ctx.dist / ciout.JUNIT_FILE} (JUnit)")

    def run(self, ctx: Context) -> ReportOutput:
        data = release_manifest(ctx, list(ctx.results))
        path = write_manifest(data, ctx.dist)
        summary = markdown_summary(data)
        (ctx.dist / "release-summary.md").write_text(summary)
        step_summary = ctx.env.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with Path(step_summary).open("a", encoding="utf-8") as fh:
                fh.write(summary)
        native = ciout.write(data, ctx.dist, ctx.env)
        log.get(stage=self.name).info("report.written", path=str(path), **native)
        return ReportOutput(str(path), summary)
