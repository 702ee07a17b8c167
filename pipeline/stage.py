"""The Stage protocol and the results the runner records.

A stage is a small class: ``name`` (CLI verb, log field, ``--skip`` key),
``description`` (a sentence), ``tools`` (what ``pipeline doctor`` checks),
``skip_reason(ctx)``, ``describe(ctx)`` (what it would do: the plan and the
run share it) and ``run(ctx) -> Output`` returning a frozen dataclass. Stages
never call each other; they read earlier outputs from ``ctx.outputs``. The rules
several stages share (``no_tags_reason``) live here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from pipeline.context import Context


class Stage(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]
    tools: ClassVar[tuple[str, ...]]

    def skip_reason(self, ctx: Context) -> str | None: ...

    def describe(self, ctx: Context) -> str: ...

    def run(self, ctx: Context) -> Any: ...


@dataclass(frozen=True)
class StageResult:
    """What happened to one stage: status is ok | skipped | failed | pending."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0
    exit_code: int = 0
    output: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.name, "status": self.status, "detail": self.detail,
                "seconds": round(self.seconds, 3), "exit_code": self.exit_code}


def no_tags_reason(ctx: Context) -> str | None:
    """Stages that publish (copy, sign, tag, verify) skip when no rule gave this ref a release tag."""
    from pipeline.metadata.tags import compute_tags

    tags = ctx.outputs.get("tags") or compute_tags(ctx)
    if not tags.result.tags:
        return f"no release tags for {ctx.ci.ref or 'this checkout'} (no tag rule matched)"
    return None


@contextmanager
def exclusive(*parts: str) -> Iterator[None]:
    """Hold a machine-wide lock named by ``parts`` (e.g. registry, repository, digest) while a stage works
    on that one thing: two releases on one machine never sign the same digest at once (the second waits,
    then finds the first one's signature). An advisory ``flock`` on a file under the temp dir, released
    by the kernel when the process dies (a kill never leaves it held)."""
    import fcntl
    import hashlib
    import os
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"pipeline-locks-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    name = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    with open(folder / f"{name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
