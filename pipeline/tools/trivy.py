"""Trivy: argv builders (pure), the runners, the vulnerability DB, a scan cache, and a typed report.

The gate never lets Trivy decide: scans run without ``--exit-code``, without
``--severity`` and with Trivy's own ignore files and filter variables neutralised
(``NEUTRAL_ENV``, an empty working directory), so the JSON holds every finding
and :mod:`pipeline.scan.policy` judges it. Facts: specs/trivy.md.

The DB is fetched in its own step (``--download-db-only``, one ``--db-repository``
at a time, in the configured order) and every scan then runs with
``--skip-db-update``: registry credentials for the scanned image are never sent
to a DB mirror, and "no DB" is an error of its own, never a silent pass.
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import log
from pipeline.errors import InfraError, ToolError
from pipeline.tools import proc

TRIVY = "trivy"
SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
STATUSES = ("unknown", "not_affected", "affected", "fixed", "under_investigation", "will_not_fix",
            "fix_deferred", "end_of_life")
DEFAULT_DB_REPOSITORIES = ("mirror.gcr.io/aquasec/trivy-db:2", "ghcr.io/aquasecurity/trivy-db:2")
DB_SCHEMA_VERSION = 2
SCANNERS = ("vuln", "secret")
#: Filters a user may have exported for their own trivy runs; the gate's scan must not inherit them.
NEUTRAL_ENV = {
    "TRIVY_SEVERITY": ",".join(SEVERITIES),
    "TRIVY_IGNORE_UNFIXED": "false",
    "TRIVY_IGNORE_STATUS": "",
    "TRIVY_IGNOREFILE": ".trivyignore",            # an empty file in the run's own working directory
    "TRIVY_IGNORE_POLICY": "",
    "TRIVY_VEX": "",
    "TRIVY_EXIT_CODE": "0",
    "TRIVY_EXIT_ON_EOL": "0",
    "TRIVY_CONFIG": "trivy.yaml",                  # likewise (empty)
    "TRIVY_QUIET": "false",
    "TRIVY_PKG_TYPES": "os,library",
    "TRIVY_SKIP_DIRS": "",
    "TRIVY_SKIP_FILES": "",
}
#: Flags newer Trivy releases have (version check, telemetry); added when ``trivy image --help`` lists them.
OPTIONAL_FLAGS = ("--skip-version-check", "--disable-telemetry")


# --------------------------------------------------------------------------- argv (pure)


def _optional(supported: frozenset[str]) -> list[str]:
    return [f for f in OPTIONAL_FLAGS if f in supported]


def download_db_argv(cache_dir: str, repository: str, *, insecure: bool = False,
                     supported: frozenset[str] = frozenset()) -> list[str]:
    """Fetch the vulnerability DB from one repository into ``cache_dir`` (no scan)."""
    argv = [TRIVY, "image", "--download-db-only", "--no-progress", "--cache-dir", cache_dir,
            "--db-repository", repository]
    if insecure:
        argv.append("--insecure")
    return argv + _optional(supported)


def scan_argv(image: str, *, cache_dir: str, output: str, insecure: bool = False, timeout_seconds: int = 900,
              scanners: Sequence[str] = SCANNERS, java_db_repositories: Sequence[str] = (),
              skip_java_db_update: bool = False, supported: frozenset[str] = frozenset()) -> list[str]:
    """Scan one image (``registry/repo@sha256:…``) from its registry into a JSON file.

    No ``--exit-code``, no ``--severity``, no ignore flags: the JSON holds every finding.
    """
    argv = [TRIVY, "image", "--format", "json", "--output", output, "--cache-dir", cache_dir,
            "--skip-db-update", "--scanners", ",".join(scanners), "--image-src", "remote",
            "--timeout", f"{timeout_seconds}s", "--no-progress"]
    for repo in java_db_repositories:
        argv += ["--java-db-repository", repo]
    if skip_java_db_update:
        argv.append("--skip-java-db-update")
    if insecure:
        argv.append("--insecure")
    return argv + _optional(supported) + [image]


def sbom_argv(image: str, *, output: str, insecure: bool = False, cache_dir: str | None = None,
              timeout_seconds: int = 900, supported: frozenset[str] = frozenset()) -> list[str]:
    """A CycloneDX SBOM of one image (needs no vulnerability DB)."""
    argv = [TRIVY, "image", "--format", "cyclonedx", "--output", output, "--image-src", "remote",
            "--timeout", f"{timeout_seconds}s", "--no-progress"]
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    if insecure:
        argv.append("--insecure")
    return argv + _optional(supported) + [image]


def version_argv() -> list[str]:
    return [TRIVY, "version", "--format", "json"]


# --------------------------------------------------------------------------- runners


@contextlib.contextmanager
def workdir(prefix: str = "pipeline-trivy-") -> Iterator[Path]:
    """An empty working directory holding an empty ``.trivyignore`` and ``trivy.yaml`` (see NEUTRAL_ENV)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        path = Path(tmp)
        (path / ".trivyignore").write_text("")
        (path / "trivy.yaml").write_text("{}\n")
        yield path


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(NEUTRAL_ENV)
    out.update(extra or {})
    return out


@functools.cache
def supported_flags() -> frozenset[str]:
    """The optional flags this Trivy binary knows (from ``trivy image --help``)."""
    r = proc.run([TRIVY, "image", "--help"], check=False, timeout=60, what="trivy image --help")
    return frozenset(f for f in OPTIONAL_FLAGS if f in r.stdout)


@functools.cache
def version() -> str:
    r = proc.run(version_argv(), timeout=60, what="trivy version")
    try:
        return str(json.loads(r.stdout).get("Version") or "unknown")
    except ValueError:
        return r.stdout.strip().splitlines()[0] if r.stdout.strip() else "unknown"


def scan(image: str, *, cache_dir: str, env: Mapping[str, str] | None = None, insecure: bool = False,
         timeout_seconds: int = 900, java_db_repositories: Sequence[str] = (),
         skip_java_db_update: bool = False, scanners: Sequence[str] = SCANNERS) -> bytes:
    """Run the scan; returns Trivy's JSON (bytes). Runs in an empty directory (no stray ignore files)."""
    with workdir() as tmp:
        out = tmp / "report.json"
        argv = scan_argv(image, cache_dir=str(Path(cache_dir).resolve()), output=str(out), insecure=insecure,
                         timeout_seconds=timeout_seconds, java_db_repositories=java_db_repositories,
                         skip_java_db_update=skip_java_db_update, supported=supported_flags(),
                         scanners=scanners)
        proc.run(argv, env=_env(env), cwd=tmp, timeout=timeout_seconds + 60, what=f"trivy scan of {image}")
        try:
            return out.read_bytes()
        except OSError:
            raise ToolError(f"trivy scan of {image}: no report was written", tool="trivy") from None


def cosign_vuln(report_path: str | Path, *, env: Mapping[str, str] | None = None) -> bytes:
    """Trivy's JSON report as cosign's ``vuln`` attestation predicate (``trivy convert``; no DB, no network)."""
    with workdir("pipeline-vuln-") as tmp:
        out = tmp / "vuln.json"
        proc.run([TRIVY, "convert", "--format", "cosign-vuln", "--output", str(out), str(Path(report_path).resolve())],
                 env=_env(env), cwd=tmp, timeout=300, what=f"convert {report_path} to a vuln predicate")
        try:
            return out.read_bytes()
        except OSError:
            raise ToolError(f"convert {report_path}: trivy wrote no predicate", tool="trivy") from None


def sbom(image_ref: str, *, env: Mapping[str, str] | None = None, insecure: bool = False,
         cache_dir: str | None = None, timeout_seconds: int = 900) -> bytes:
    """A CycloneDX JSON SBOM of ``image_ref`` (by digest, from its registry). No DB needed."""
    with workdir("pipeline-sbom-") as tmp:
        out = tmp / "sbom.cdx.json"
        argv = sbom_argv(image_ref, output=str(out), insecure=insecure,
                         cache_dir=str(Path(cache_dir).resolve()) if cache_dir else None,
                         timeout_seconds=timeout_seconds, supported=supported_flags())
        proc.run(argv, env=_env(env), cwd=tmp, timeout=timeout_seconds + 60, what=f"SBOM of {image_ref}")
        try:
            return out.read_bytes()
        except OSError:
            raise ToolError(f"SBOM of {image_ref}: trivy wrote no file", tool="trivy") from None


# --------------------------------------------------------------------------- the vulnerability DB


class NoDatabaseError(InfraError):
    """No vulnerability DB could be had: exit 3 with what to configure."""


@dataclass(frozen=True)
class DBInfo:
    """``<cache>/db/metadata.json`` and the DB file's size."""

    cache_dir: str
    version: int
    updated_at: str
    next_update: str
    downloaded_at: str
    size: int
    source: str = ""          # the repository it came from in this run ("cache" when not downloaded)

    @property
    def key(self) -> str:
        """What identifies one DB build (a re-download of the same DB keeps it)."""
        return f"v{self.version}|{self.updated_at}|{self.next_update}|{self.size}"

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "updated_at": self.updated_at, "next_update": self.next_update,
                "downloaded_at": self.downloaded_at, "source": self.source, "cache_dir": self.cache_dir}


def default_cache_dir(env: Mapping[str, str]) -> str:
    """Trivy's own default (Go's os.UserCacheDir()/trivy), so a cache prewarmed by trivy is found."""
    if env.get("TRIVY_CACHE_DIR"):
        return env["TRIVY_CACHE_DIR"]
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return str(Path(base) / "trivy")


def read_db(cache_dir: str, source: str = "cache") -> DBInfo | None:
    """The DB in ``cache_dir`` (None when there is none Trivy could use)."""
    db = Path(cache_dir) / "db"
    try:
        meta = json.loads((db / "metadata.json").read_text())
        size = (db / "trivy.db").stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("Version") != DB_SCHEMA_VERSION or size == 0:
        return None
    return DBInfo(str(cache_dir), int(meta["Version"]), str(meta.get("UpdatedAt", "")),
                  str(meta.get("NextUpdate", "")), str(meta.get("DownloadedAt", "")), size, source)


def no_db_message(cache_dir: str, tried: Sequence[tuple[str, str]], skip_update: bool) -> str:
    where = "; ".join(f"{repo}: {why}" for repo, why in tried) or "no download attempted (scan.skip_db_update)"
    return (f"no vulnerability DB: {where}; and {Path(cache_dir) / 'db'} holds none. Configure"
            " scan.db_repository with a mirror this machine can reach (copy the DB there with 'pipeline scan"
            " --mirror-db REGISTRY/REPO:2' from a connected machine), or prewarm scan.cache_dir with 'pipeline"
            " scan --download-db'" + ("; scan.skip_db_update = true needs a prewarmed cache" if skip_update else ""))


def ensure_db(cache_dir: str, repositories: Sequence[str], *, insecure: Callable[[str], bool],
              env: Mapping[str, str] | None = None, skip_update: bool = False, timeout_seconds: int = 900,
              runner: Callable[..., proc.Completed] = proc.run) -> DBInfo:
    """A usable DB in ``cache_dir``: downloaded from the first repository that works (Trivy skips the
    download while the cached one is fresh), else the cached one with a warning, else NoDatabaseError."""
    logger = log.get(stage="scan")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    if skip_update:
        info = read_db(cache_dir)
        if info is None:
            raise NoDatabaseError(no_db_message(cache_dir, [], True))
        return info
    tried: list[tuple[str, str]] = []
    for repo in repositories or DEFAULT_DB_REPOSITORIES:
        argv = download_db_argv(str(Path(cache_dir).resolve()), repo, insecure=insecure(repo),
                                supported=supported_flags())
        with workdir() as tmp:
            try:
                runner(argv, env=_env(env), cwd=tmp, timeout=timeout_seconds, what=f"DB download from {repo}")
            except ToolError as exc:
                if exc.returncode is None and "not installed" in str(exc):
                    raise
                why = _short(exc.stderr) or str(exc)
                tried.append((repo, why))
                logger.warning("db.download_failed", repository=repo, error=why)
                continue
        info = read_db(cache_dir, repo)
        if info is not None:
            logger.info("db.ready", repository=repo, updated_at=info.updated_at)
            return info
        tried.append((repo, "trivy wrote no usable DB"))
    info = read_db(cache_dir)
    if info is None:
        raise NoDatabaseError(no_db_message(cache_dir, tried, False))
    logger.warning("db.stale_used", updated_at=info.updated_at, cache_dir=cache_dir,
                   note="no DB repository answered; scanning with the cached DB")
    return info


def _short(stderr: str) -> str:
    """The gist of Trivy's last fatal/error line, without its timestamp and level columns."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    at = next((i for i in range(len(lines) - 1, -1, -1) if "FATAL" in lines[i]), None)
    if at is None:
        at = next((i for i in range(len(lines) - 1, -1, -1) if "error" in lines[i].lower()), len(lines) - 1)
    if at < 0:
        return ""
    parts = [p.strip() for p in lines[at].split("\t") if p.strip()]
    if len(parts) > 1 and parts[0][:4].isdigit():
        parts = [p for p in parts[1:] if p not in ("FATAL", "ERROR", "Fatal error")] or parts[-1:]
    text = " ".join(parts + lines[at + 1:])          # multi-line Go errors ("1 error occurred: * GET …")
    if "error occurred:" in text:                     # the wrapped chain repeats itself; the cause is last
        text = text.rsplit("error occurred:", 1)[1].strip().lstrip("* ").strip()
    return text if len(text) <= 400 else text[:200] + " … " + text[-190:]


def db_layer(cache_dir: str) -> bytes:
    """``db.tar.gz`` of the cached DB (trivy.db + metadata.json), as Trivy's artifact layer."""
    import gzip
    import io
    import tarfile

    db = Path(cache_dir) / "db"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("trivy.db", "metadata.json"):
            tar.add(str(db / name), arcname=name)
    return gzip.compress(raw.getvalue(), mtime=0)
