"""Tag stage, last: put the index under every release tag in every registry.

It refuses to run unless every enabled earlier gate (build, scan, staging, copy, sign)
produced its output in this run: a release tag never lands on an unchecked
image. Tags already on the digest are skipped (idempotent re-run).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

from pipeline import log
from pipeline.build.build import BuildOutput
from pipeline.context import Context
from pipeline.errors import InfraError, PolicyError
from pipeline.metadata.tags import TagsOutput
from pipeline.stage import no_tags_reason
from pipeline.stages.copy import CopyOutput

#: (stage, config section whose ``enabled`` can turn it off; None: always on)
GATES = (("build", "build"), ("scan", "scan"), ("staging", None), ("copy", "copy_"), ("sign", "sign"))


@dataclass(frozen=True)
class TagOutput:
    digest: str
    written: dict[str, list[str]]      # registry -> tags put in this run
    present: dict[str, list[str]]      # registry -> tags that already pointed at the digest
    failed: dict[str, str]             # registries left out (best-effort copy failures)


def unmet_gates(ctx: Context) -> list[str]:
    """Enabled gates that have not passed in this run (so tagging must not happen)."""
    missing = []
    for stage, section in GATES:
        if _enabled(ctx, section) and stage not in ctx.outputs:
            why = "skipped with --skip" if stage in ctx.options.skip else "did not pass"
            missing.append(f"{stage} ({why})")
    return missing


def _enabled(ctx: Context, section: str | None) -> bool:
    return section is None or bool(getattr(ctx.config, section).enabled)


class Tag:
    name: ClassVar[str] = "tag"
    description: ClassVar[str] = "Write the release tags in every registry, last."
    tools: ClassVar[tuple[str, ...]] = ()

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.config.tag.enabled:
            return "tag.enabled = false"
        return no_tags_reason(ctx)

    def describe(self, ctx: Context) -> str:
        tags: TagsOutput | None = ctx.outputs.get("tags")
        names = ", ".join(tags.result.tags) if tags else "the release tags"
        gates = [s for s, section in GATES if _enabled(ctx, section)]
        return (f"put {names} on the digest in {', '.join(r.name for r in ctx.config.release_registries)}, "
                f"only after {', '.join(gates)} passed")

    def run(self, ctx: Context) -> TagOutput:
        unmet = unmet_gates(ctx)
        if unmet:
            raise PolicyError(f"refusing to write release tags: {', '.join(unmet)}; nothing was tagged")
        build: BuildOutput = ctx.outputs["build"]
        copy: CopyOutput | None = ctx.outputs.get("copy")
        tags: TagsOutput = ctx.outputs["tags"]
        cfg = ctx.config
        failed = dict(copy.failed) if copy else {}
        served = set(copy.copied) if copy else {r.name for r in cfg.release_registries}
        targets = [r for r in cfg.release_registries if r.name in served and r.name not in failed]
        logger = log.get(stage=self.name)
        written: dict[str, list[str]] = {r.name: [] for r in targets}
        present: dict[str, list[str]] = {r.name: [] for r in targets}
        media = build.media_type
        body = build.index

        with ctx.registry_access() as access:
            def one(reg_name: str, tag: str) -> bool:
                """Put ``tag`` in ``reg_name``; False when it already pointed at the digest."""
                reg = cfg.registry(reg_name)
                client = access.client(reg)
                repo = reg.repository(cfg.image.name)
                head = client.manifest_head(repo, tag)
                if head is not None and head.digest == build.digest:
                    return False
                put = client.manifest_put(repo, tag, body, media)
                if put != build.digest:
                    raise InfraError(f"registry {reg.name}: {repo}:{tag} points at {put}, not {build.digest}")
                logger.info("tag.written", registry=reg.name, ref=f"{reg.url}/{cfg.image.name}:{tag}",
                            digest=build.digest)
                return True

            # every (registry, tag) at once within copy.concurrency; the order of tags means nothing to a
            # registry, and all of them come after every gate
            with ThreadPoolExecutor(max_workers=cfg.copy_.concurrency) as pool:
                futures = {(r.name, tag): pool.submit(one, r.name, tag) for r in targets for tag in tags.result.tags}
                for (name, tag), future in futures.items():
                    (written if future.result() else present)[name].append(tag)
        if failed:  # best-effort: tags went where the copy worked; the release still fails
            raise InfraError(f"tagged in {', '.join(written) or 'no registry'}; copy failed for "
                             f"{', '.join(failed)}: {next(iter(failed.values()))}")
        return TagOutput(build.digest, written, present, failed)
