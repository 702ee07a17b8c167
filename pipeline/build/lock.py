"""The base-image lock file: every base reference pinned to a digest, per platform; meant to be committed.

JSON, sorted and indented, so a change is a small diff a reviewer can read::

    {
      "version": 1,
      "images": {
        "docker.io/library/busybox:1.36": {
          "digest": "sha256:…",                 # the index (or single manifest) the tag pointed at
          "media_type": "application/vnd.oci.image.index.v1+json",
          "platforms": {"linux/amd64": "sha256:…", "linux/arm64": "sha256:…"}
        }
      }
    }

Keys are references in docker's full form (``docker.io/library/…``, ``:latest`` written out). The
file names no registry of ours: the mirror's location comes from the config, so one lock serves every
machine and CI system. Written atomically (a killed run leaves the old file or the new one).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.refs import DIGEST

VERSION = 1


@dataclass(frozen=True)
class Pin:
    digest: str
    media_type: str
    platforms: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"digest": self.digest, "media_type": self.media_type, "platforms": dict(sorted(self.platforms.items()))}


@dataclass
class Lock:
    path: Path
    pins: dict[str, Pin] = field(default_factory=dict)
    existed: bool = False

    def get(self, reference: str) -> Pin | None:
        return self.pins.get(reference)

    def text(self) -> str:
        images = {ref: self.pins[ref].to_dict() for ref in sorted(self.pins)}
        return json.dumps({"version": VERSION, "images": images}, indent=2) + "\n"

    def write(self) -> bool:
        """Write the file when its content changes (an empty lock is not created); True when it did."""
        if not self.pins and not self.existed and not self.path.exists():
            return False
        text = self.text()
        try:
            if self.path.read_text(encoding="utf-8") == text:
                return False
        except OSError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"{self.path}: cannot write the lock file ({exc.strerror}); mirror.lock names it")
        return True


def read(path: Path) -> Lock:
    """The lock at ``path`` (empty when the file does not exist). A damaged file is a ConfigError naming
    the file and the entry (exit 2): fix it, or delete it and run ``pipeline mirror`` to write it anew."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Lock(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the lock file: {exc.strerror}") from None
    fix = "fix it, or delete it and run 'pipeline mirror' to write it anew"
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON ({exc}); {fix}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("images"), dict):
        raise ConfigError(f"{path}: not a base-image lock of version {VERSION} (needs \"version\": {VERSION} and"
                          f" \"images\"); {fix}")
    pins: dict[str, Pin] = {}
    for ref, entry in data["images"].items():
        where = f"{path}: images.\"{ref}\""
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: not an object; {fix}")
        digest, media, platforms = entry.get("digest"), entry.get("media_type", ""), entry.get("platforms", {})
        if not isinstance(digest, str) or not DIGEST.match(digest):
            raise ConfigError(f"{where}.digest: '{digest}' is not a sha256 digest; {fix}")
        if not isinstance(media, str):
            raise ConfigError(f"{where}.media_type: not a string; {fix}")
        if not isinstance(platforms, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and DIGEST.match(v) for k, v in platforms.items()):
            raise ConfigError(f"{where}.platforms: not a map of platform to sha256 digest; {fix}")
        pins[ref] = Pin(digest, media, dict(platforms))
    return Lock(path, pins, existed=True)


__all__ = ["Lock", "Pin", "read"]
