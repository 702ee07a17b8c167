"""The build-input key: what a candidate was built from, hashed.

The key covers the context's content (git's tree id when committed and clean, else a hash of
the files), the Dockerfile, build args, platforms, target, labels and annotations; it names the
candidate tag (``candidate-<sha7>-<key12>``), so a re-release of unchanged inputs finds its
image in staging and skips the build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from pipeline.tools.git import Git

SKIP_DIRS = {".git", ".nox", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "dist", ".pipeline"}
#: labels and annotations that change on every run and so are no build input
NOT_LABEL_INPUTS = ("org.opencontainers.image.created",)


def context_digest(context: Path) -> str:
    """The build context's content: git's tree id when committed and clean, else a content hash."""
    git = Git(context)
    if git.is_clean(".") and (tree := git.tree_hash(_relative_to_top(git, context))):
        return f"git:{tree}"
    h = hashlib.sha256()
    for root, dirs, files in os.walk(context):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(context).as_posix()
            h.update(rel.encode() + b"\0")
            try:
                if path.is_symlink():
                    h.update(os.readlink(path).encode())
                else:
                    with path.open("rb") as fh:
                        for chunk in iter(lambda: fh.read(1 << 20), b""):
                            h.update(chunk)
            except OSError:
                continue
            h.update(b"\0")
    return f"content:{h.hexdigest()}"


def _relative_to_top(git: Git, context: Path) -> str:
    top = git.toplevel()
    if not top:
        return "."
    try:
        return Path(context).resolve().relative_to(Path(top).resolve()).as_posix()
    except ValueError:
        return "."


def build_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def dockerfile_arg_default(dockerfile_text: str, name: str) -> str | None:
    m = re.search(rf"^\s*ARG\s+{re.escape(name)}\s*=\s*(\S+)\s*$", dockerfile_text, re.M | re.I)
    return m.group(1).strip("\"'") if m else None
