"""Context: config, CI info, options, and the outputs of earlier stages.

Built once by the CLI (the only reader of os.environ and sys.argv) and passed
to every stage; stages read it and never reach for the environment themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.metadata.ci import CIInfo
from pipeline.metadata.rules import DEFAULT_SHORT_SHA_LENGTH, TagOptions

if TYPE_CHECKING:
    from pipeline.access.registries import Access


@dataclass(frozen=True)
class Options:
    """Command-line options that change what stages do."""

    dry_run: bool = False
    skip: frozenset[str] = frozenset()
    platform: str | None = None
    digest_out: str | None = None
    from_digests: str | None = None
    output_format: str = "text"


@dataclass
class Context:
    config: Config
    ci: CIInfo
    env: Mapping[str, str]
    now: datetime
    config_path: Path = Path("config/pipeline.toml")
    options: Options = field(default_factory=Options)
    outputs: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None   # live build output (the CLI decides where it goes)
    results: list[Any] = field(default_factory=list)  # StageResults so far (the runner appends)
    shared: dict[str, Any] = field(default_factory=dict)  # futures started early, values computed once per run
    _access: Any = field(default=None, repr=False)

    def registry_access(self) -> AbstractContextManager[Access]:
        """The registry clients of this run, shared by its stages (one ping per registry, tokens and
        connections reused); ``with ctx.registry_access() as access`` does not close them: :meth:`close` does."""
        if self._access is None:
            from pipeline.access.registries import Access

            self._access = Access(self.config, self.env)
        return nullcontext(self._access)

    def close(self) -> None:
        if self._access is not None:
            self._access.close()
            self._access = None

    @property
    def dist(self) -> Path:
        return Path(self.config.report.dir)

    def tag_options(self) -> TagOptions:
        return TagOptions(now=self.now, short_sha_length=short_sha_length(self.config, self.env),
                          annotation_levels=annotation_levels(self.config, self.env))


def source_date(env: Mapping[str, str], wall_clock: datetime | None = None) -> datetime:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else the wall clock (UTC)."""
    raw = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return wall_clock or datetime.now(timezone.utc)
    if not raw.isdigit():
        raise ConfigError(f"SOURCE_DATE_EPOCH: '{raw}' is not a whole number of seconds since 1970")
    try:
        return datetime.fromtimestamp(int(raw), timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ConfigError(f"SOURCE_DATE_EPOCH: {raw[:30]} is past any date this machine can hold") from None


def short_sha_length(config: Config, env: Mapping[str, str]) -> float:
    """DOCKER_METADATA_SHORT_SHA_LENGTH (as metadata-action reads it) wins over tags.short_sha_length."""
    raw = env.get("DOCKER_METADATA_SHORT_SHA_LENGTH", "")
    if raw:
        try:
            return float(raw.strip() or 0)
        except ValueError:
            raise ConfigError(f"DOCKER_METADATA_SHORT_SHA_LENGTH: '{raw}' is not a valid number") from None
    return float(config.tags.short_sha_length or DEFAULT_SHORT_SHA_LENGTH)


def annotation_levels(config: Config, env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("DOCKER_METADATA_ANNOTATIONS_LEVELS", "")
    if raw.strip():
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    return tuple(config.tags.annotation_levels)


def pr_head_sha(config: Config, env: Mapping[str, str]) -> bool | None:
    """Config forces it; otherwise ci.detect reads DOCKER_METADATA_PR_HEAD_SHA."""
    return config.tags.pr_head_sha
