"""Read-only git queries: the only module that runs ``git``.

Every query answers ``None`` when git cannot answer it (not a repository, no
commit yet, detached HEAD for ``symbolic_ref``, git not installed, a timeout):
the callers (CI detection, build caching) treat "unknown" as a normal state and
decide for themselves whether that is an error. Nothing here writes to the
repository.

Output that could carry credentials (a remote URL such as
``https://user:token@host/o/r.git``) is stripped of them here, before it can
reach a log line, a label or a report.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from pipeline.times import parse_time
from pipeline.errors import ToolError
from pipeline.tools import proc

#: Seconds a single read-only git query may take; a hung git (network
#: filesystem, credential prompt) must not hang the release.
GIT_TIMEOUT = 30.0

# User config must not change the text we parse: colour codes, signature
# verification lines in `git show`, or short decorations.
_BASE_ARGV: tuple[str, ...] = (
    "git",
    "-c", "color.ui=false",
    "-c", "log.showSignature=false",
    "-c", "versionsort.suffix=-",
)

# Never let git ask for credentials or use a pager: we run unattended.
_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C"}


@runtime_checkable
class GitReader(Protocol):
    """What CI detection and caching need to know from a git checkout.

    Every method returns ``None`` when git cannot tell (see the module doc),
    so a fake for tests only has to return the values a scenario needs.
    """

    def symbolic_ref(self) -> str | None:
        """The full ref HEAD points to (``refs/heads/main``); ``None`` on a detached HEAD."""
        ...

    def detached_ref_names(self) -> tuple[str, ...] | None:
        """The ref names decorating HEAD, as ``git show -s --pretty=%D HEAD`` lists them."""
        ...

    def tags_at_head(self) -> tuple[str, ...] | None:
        """Tag names pointing at HEAD, highest version first (``()`` when none)."""
        ...

    def head_sha(self) -> str | None:
        """The full sha of HEAD."""
        ...

    def commit_time(self, rev: str = "HEAD") -> datetime | None:
        """The committer time of ``rev``, timezone-aware."""
        ...

    def origin_head_branch(self) -> str | None:
        """The branch ``refs/remotes/origin/HEAD`` points to (the remote's default branch)."""
        ...

    def remote_url(self, remote: str = "origin") -> str | None:
        """The URL of ``remote``, without credentials."""
        ...

    def toplevel(self) -> str | None:
        """The absolute path of the working tree's top-level folder."""
        ...

    def tree_hash(self, path: str) -> str | None:
        """The object id of ``HEAD:<path>`` (a tree or blob): build inputs as committed."""
        ...


class Git:
    """:class:`GitReader` backed by the ``git`` binary, run in ``cwd``."""

    def __init__(self, cwd: str | os.PathLike[str] = ".") -> None:
        self.cwd = Path(cwd)

    def __repr__(self) -> str:
        return f"Git({str(self.cwd)!r})"

    # -- the one place git is started ---------------------------------------
    def _out(self, *args: str) -> str | None:
        """Run ``git args``; its stripped stdout, or ``None`` if git failed or is missing.

        A missing git binary or a timeout is "unknown" too: a laptop without git
        or a plain source tarball must still be able to run (with less context).
        """
        try:
            done = proc.run([*_BASE_ARGV, *args], env=_ENV, cwd=self.cwd, check=False, inherit=("GIT_",),
                            timeout=GIT_TIMEOUT, what="git")
        except ToolError:
            return None
        if done.returncode != 0:
            return None
        return done.stdout.strip()

    def _lines(self, *args: str) -> tuple[str, ...] | None:
        out = self._out(*args)
        if out is None:
            return None
        return tuple(line.strip() for line in out.splitlines() if line.strip())

    # -- GitReader -------------------------------------------------------------
    def symbolic_ref(self) -> str | None:
        return self._out("symbolic-ref", "-q", "HEAD") or None

    def detached_ref_names(self) -> tuple[str, ...] | None:
        # --decorate=full makes the names unambiguous (refs/remotes/origin/x vs a
        # local branch called origin/x); the parser also accepts the short form.
        out = self._out("show", "-s", "--decorate=full", "--pretty=%D", "HEAD")
        if out is None:
            return None
        return split_decorations(out)

    def tags_at_head(self) -> tuple[str, ...] | None:
        # versionsort.suffix=- (see _BASE_ARGV) sorts v1.2.0 above v1.2.0-rc.1,
        # so the first entry is the release a human would pick.
        return self._lines("tag", "--points-at", "HEAD", "--sort=-version:refname")

    def head_sha(self) -> str | None:
        return self._out("rev-parse", "--verify", "-q", "HEAD^{commit}") or None

    def commit_time(self, rev: str = "HEAD") -> datetime | None:
        if not _safe_rev(rev):
            return None
        out = self._out("show", "-s", "--format=%cI", rev, "--")
        return parse_time(out) if out else None

    def origin_head_branch(self) -> str | None:
        out = self._out("symbolic-ref", "-q", "refs/remotes/origin/HEAD")
        prefix = "refs/remotes/origin/"
        if out and out.startswith(prefix) and len(out) > len(prefix):
            return out[len(prefix):]
        return None

    def remote_url(self, remote: str = "origin") -> str | None:
        if not _safe_rev(remote):
            return None
        out = self._out("remote", "get-url", remote)
        return strip_credentials(out) if out else None

    def toplevel(self) -> str | None:
        return self._out("rev-parse", "--show-toplevel") or None

    def tree_hash(self, path: str) -> str | None:
        """``git rev-parse HEAD:<path>``; ``path`` is relative to the repository root.

        Only committed content counts: uncommitted changes are not in this hash,
        so a caller that caches on it must check for a dirty tree separately.
        """
        path = path.strip().lstrip("/")
        if path in (".", "./"):
            path = ""
        return self._out("rev-parse", "--verify", "-q", f"HEAD:{path}") or None

    def is_clean(self, path: str) -> bool | None:
        """True when ``path`` has no uncommitted or untracked changes; None outside a repository."""
        out = self._out("status", "--porcelain", "--untracked-files=all", "--", path or ".")
        if out is None:
            return None
        return out == ""


def _safe_rev(value: str) -> bool:
    """Refuse values git would read as an option (argument injection)."""
    return bool(value) and not value.startswith("-")


def split_decorations(text: str) -> tuple[str, ...]:
    """Split a ``%D`` line (``HEAD, tag: v1, origin/main``) into its names."""
    return tuple(part.strip() for part in text.strip().split(",") if part.strip())


def strip_credentials(url: str) -> str:
    """Drop ``user:password@`` from a URL with a scheme; scp-like ``git@host:o/r`` is kept.

    ``git@`` in scp-like syntax is a login name, not a secret, and the caller
    normalises it away anyway.
    """
    url = url.strip()
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


__all__ = ["GitReader", "Git", "GIT_TIMEOUT", "split_decorations", "strip_credentials"]
