"""A GitReader that answers from fields, for tests of CI detection (no git process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

SHA = "860c1904a1ce19322e91ac35af1ab07466440c37"
GIT_TIME = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass
class FakeGit:
    """A GitReader answering from fields; ``None`` means git cannot tell."""

    symbolic: str | None = None
    decorations: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = ()
    sha: str | None = SHA
    times: dict[str, datetime] = field(default_factory=lambda: {SHA: GIT_TIME})
    origin_head: str | None = None
    url: str | None = None
    top: str | None = None

    def symbolic_ref(self) -> str | None:
        return self.symbolic

    def detached_ref_names(self) -> tuple[str, ...] | None:
        return self.decorations

    def tags_at_head(self) -> tuple[str, ...] | None:
        return self.tags

    def head_sha(self) -> str | None:
        return self.sha

    def commit_time(self, rev: str = "HEAD") -> datetime | None:
        if rev == "HEAD":
            rev = self.sha or ""
        return self.times.get(rev)

    def origin_head_branch(self) -> str | None:
        return self.origin_head

    def remote_url(self, remote: str = "origin") -> str | None:
        return self.url if remote == "origin" else None

    def toplevel(self) -> str | None:
        return self.top

    def tree_hash(self, path: str) -> str | None:
        return None



    def is_clean(self, path: str) -> bool | None:
        return True
