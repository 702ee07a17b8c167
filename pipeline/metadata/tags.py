"""Tags stage: docker/metadata-action-compatible tags, labels and annotations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline.context import Context
from pipeline.errors import ConfigError
from pipeline.metadata.claims import Claims
from pipeline.metadata.rules import TagResult, TagRuleError, compute, parse_flavor, parse_rules


@dataclass(frozen=True)
class TagsOutput:
    result: TagResult
    images: tuple[str, ...]

    @property
    def refs(self) -> list[str]:
        return self.result.refs(self.images)


#: the distribution spec's tag grammar: ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``
MAX_TAG = 128


def compute_tags(ctx: Context) -> TagsOutput:
    """The one place config + CI context become tags (used by `tags`, `plan` and `release`); computed
    once per run (the stages that skip without release tags ask too)."""
    found: TagsOutput | None = ctx.shared.get("tags.computed")
    if found is None:
        found = ctx.shared["tags.computed"] = _compute(ctx)
    return found


def _compute(ctx: Context) -> TagsOutput:
    cfg = ctx.config
    try:
        rules = parse_rules(cfg.tags.rules)
        flavor = parse_flavor(cfg.tags.flavor)
        result = compute(rules, flavor, ctx.ci, ctx.tag_options(), labels=cfg.tags.labels,
                         annotations=cfg.tags.annotations)
    except TagRuleError as exc:
        where = f"tags.{exc.field}" + (f"[{exc.index}]" if exc.index is not None else "")
        line = f" in \"{exc.line}\"" if exc.line else ""
        raise ConfigError(f"{ctx.config_path}: {where}: {exc}{line}") from None
    too_long = next((t for t in result.tags if len(t) > MAX_TAG), None)
    if too_long is not None:
        raise ConfigError(f"tags: '{too_long[:40]}…' ({len(too_long)} characters, from {ctx.ci.ref or 'this checkout'})"
                          f" is longer than the {MAX_TAG} characters a registry accepts in a tag; shorten the ref, or"
                          " give the tag rule a pattern or value that is shorter")
    return TagsOutput(result=result, images=tuple(cfg.images()))


class Tags:
    name: ClassVar[str] = "tags"
    description: ClassVar[str] = "Compute release tags, OCI labels and annotations from the config and CI context."
    tools: ClassVar[tuple[str, ...]] = ()

    def skip_reason(self, ctx: Context) -> str | None:
        return None

    def describe(self, ctx: Context) -> str:
        out = compute_tags(ctx)
        if not out.result.tags:
            return f"no rule matches {ctx.ci.ref or 'this checkout'}: no release tags (release stops here)"
        return f"tags {', '.join(out.result.tags)} for {ctx.ci.ref or 'this checkout'}"

    def run(self, ctx: Context) -> TagsOutput:
        return compute_tags(ctx)


def claims_of(ctx: Context) -> Claims:
    """This release's tags, with the rules to ask which of them a newer release claims."""
    cfg = ctx.config
    return Claims(parse_rules(cfg.tags.rules), parse_flavor(cfg.tags.flavor), ctx.ci, ctx.tag_options(),
                  compute_tags(ctx).result)
