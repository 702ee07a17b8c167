"""Verify stage: every release tag in every registry resolves to the released digest.

Checked over the registry API (not assumed from what the tag stage did).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline import log
from pipeline.context import Context
from pipeline.errors import PolicyError
from pipeline.registries import Access
from pipeline.stages.copy import no_tags_reason


@dataclass(frozen=True)
class VerifyOutput:
    digest: str
    checked: dict[str, list[str]]   # registry -> tags that resolve to the digest


class Verify:
    name: ClassVar[str] = "verify"
    description: ClassVar[str] = "Check that every release tag resolves to the released digest in every registry."
    tools: ClassVar[tuple[str, ...]] = ()

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.config.verify.enabled:
            return "verify.enabled = false"
        if not ctx.config.tag.enabled:
            return "tag.enabled = false (nothing to verify)"
        return no_tags_reason(ctx)

    def describe(self, ctx: Context) -> str:
        return "resolve every release tag in every registry and compare it with the released digest"

    def run(self, ctx: Context) -> VerifyOutput:
        digest = ctx.outputs["build"].digest
        tags = ctx.outputs["tags"].result.tags
        problems: list[str] = []
        checked: dict[str, list[str]] = {}
        with Access(ctx.config, ctx.env) as access:
            for reg in ctx.config.release_registries:
                client = access.client(reg)
                repo = reg.repository(ctx.config.image.name)
                checked[reg.name] = []
                for tag in tags:
                    found = client.manifest_head(repo, tag)
                    if found is None:
                        problems.append(f"{reg.name}: {reg.url}/{ctx.config.image.name}:{tag} is missing")
                    elif found.digest != digest:
                        problems.append(f"{reg.name}: {reg.url}/{ctx.config.image.name}:{tag} points at "
                                        f"{found.digest[:19]}, not {digest[:19]}")
                    else:
                        checked[reg.name].append(tag)
        if problems:
            raise PolicyError(f"verification failed: {problems[0]}"
                              + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        log.get(stage=self.name).info("release.verified", digest=digest, registries=len(checked))
        return VerifyOutput(digest, checked)
