"""Downloading a release file over HTTPS (or a mirror's HTTP), each request under the one retry policy.

For ``pipeline doctor --install`` without root: a tool's release binary or archive and the checksum
file published beside it. The body streams to a file next to its destination and is hashed on the
way; a dropped connection or a 429/5xx is retried from the start (release files are small enough),
a 404 is final and names the URL. Redirects are followed (GitHub serves release assets from another
host). httpx, as the registry client.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import lazy
from pipeline.errors import InfraError
from pipeline.retry import RetryPolicy, call

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy("httpx")

POLICY = RetryPolicy(attempts=6, initial_seconds=0.5, max_seconds=10.0, budget_seconds=180.0)
TIMEOUT_S = 60.0


class DownloadError(InfraError):
    def __init__(self, message: str, *, temporary: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.status = status
        self.retry_after: float | None = None


def shown(url: str) -> str:
    """``url`` without a user or password (a mirror's credentials never reach output)."""
    from urllib.parse import urlsplit, urlunsplit

    p = urlsplit(url)
    if p.username is None and p.password is None:
        return url
    return urlunsplit((p.scheme, (p.hostname or "") + (f":{p.port}" if p.port else ""), p.path, p.query, p.fragment))


def _once(url: str, part: Path) -> str:
    digest = hashlib.sha256()
    said_url = shown(url)
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=TIMEOUT_S) as r:
            downgraded = url.startswith("https://") and any(h.url.scheme == "http" for h in [*r.history, r])
            if downgraded:
                raise DownloadError(f"{said_url}: redirected from https to plain http ({r.url.host}); refused")
            if r.status_code != 200:
                temporary = r.status_code == 429 or r.status_code >= 500
                err = DownloadError(f"{said_url}: HTTP {r.status_code}" + ("" if temporary else
                                    " (check the download base and the version)"),
                                    temporary=temporary, status=r.status_code)
                after = r.headers.get("retry-after", "")
                err.retry_after = float(after) if after.isdigit() else None
                raise err
            with open(part, "wb") as fh:
                for chunk in r.iter_bytes(1 << 16):
                    digest.update(chunk)
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        from urllib.parse import urlsplit

        said = str(exc)
        secret = urlsplit(url).password
        if secret:
            said = said.replace(secret, "***")
        raise DownloadError(f"{said_url}: {type(exc).__name__}: {said[:200]}", temporary=True) from None
    except OSError as exc:
        raise DownloadError(f"{said_url}: cannot write {part}: {exc.strerror}") from None
    return digest.hexdigest()


def fetch(url: str, dest: Path, *, policy: RetryPolicy = POLICY) -> str:
    """``url`` into the file ``dest`` (written whole or not at all); its SHA-256 (hex)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {dest.parent}: {exc.strerror}") from None
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        digest = call(policy, _once, url, part)
        os.replace(part, dest)
        return digest
    finally:
        part.unlink(missing_ok=True)


def text(url: str, *, policy: RetryPolicy = POLICY) -> str:
    """A small text file (a checksum list)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pipeline-download-") as tmp:
        path = Path(tmp) / "file"
        fetch(url, path, policy=policy)
        return path.read_text(errors="replace")
