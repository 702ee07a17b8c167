"""Trivy: argv builders (pure), the runners, and what the DB in its cache is.

The gate never lets Trivy decide: scans run without ``--exit-code``, without
``--severity`` and with Trivy's own ignore files and filter variables neutralised
(``NEUTRAL_ENV``, an empty working directory), so the JSON holds every finding
and :mod:`pipeline.scan.policy` judges it. Facts: specs/trivy.md.

Trivy sends nothing to the network: it scans a local OCI layout (``--input``), and the
vulnerability and Java DBs are put into its cache by the project's registry client
(:mod:`pipeline.scan.db`), so every scan runs with ``--skip-db-update``,
``--skip-java-db-update`` and ``--offline-scan``. "No DB" is an error of its own, never a
silent pass.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InfraError, ToolError
from pipeline.tools import proc

TRIVY = "trivy"
SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
STATUSES = ("unknown", "not_affected", "affected", "fixed", "under_investigation", "will_not_fix",
            "fix_deferred", "end_of_life")
DEFAULT_DB_REPOSITORIES = ("mirror.gcr.io/aquasec/trivy-db:2", "ghcr.io/aquasecurity/trivy-db:2")
DEFAULT_JAVA_DB_REPOSITORIES = ("mirror.gcr.io/aquasec/trivy-java-db:1", "ghcr.io/aquasecurity/trivy-java-db:1")
DB_SCHEMA_VERSION = 2
JAVA_DB_SCHEMA_VERSION = 1
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


def scan_argv(layout: str, *, cache_dir: str, output: str, timeout_seconds: int = 900,
              scanners: Sequence[str] = SCANNERS, supported: frozenset[str] = frozenset()) -> list[str]:
    """Scan one platform's local OCI layout (``--input DIR``) into a JSON file, with no network at all:
    the vulnerability and Java DBs are in ``cache_dir`` already (fetched by our client), ``--offline-scan``
    keeps Trivy from asking Maven Central about JARs.

    No ``--exit-code``, no ``--severity``, no ignore flags: the JSON holds every finding.
    """
    argv = [TRIVY, "image", "--input", layout, "--format", "json", "--output", output, "--cache-dir", cache_dir,
            "--skip-db-update", "--skip-java-db-update", "--offline-scan", "--scanners", ",".join(scanners),
            "--timeout", f"{timeout_seconds}s", "--no-progress"]
    return argv + _optional(supported)


def sbom_argv(layout: str, *, output: str, cache_dir: str | None = None, timeout_seconds: int = 900,
              supported: frozenset[str] = frozenset()) -> list[str]:
    """A CycloneDX SBOM of one platform's local OCI layout: no vulnerability DB, no network (the JAR analyzer
    runs for SBOM formats and reads the Java DB our client put in the cache: never a download by Trivy)."""
    argv = [TRIVY, "image", "--input", layout, "--format", "cyclonedx", "--output", output, "--skip-db-update",
            "--skip-java-db-update", "--offline-scan", "--timeout", f"{timeout_seconds}s", "--no-progress"]
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    return argv + _optional(supported)


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
def version(remember: str | None = None) -> str:
    """The Trivy version (part of every scan cache key). With ``remember`` (a directory), the answer is
    kept there per binary (path, size, mtime), so a run whose scans all come from the cache starts no
    Trivy process at all."""
    binary = proc.which(TRIVY)
    stamp = None
    if remember and binary and _plain_binary(binary):
        st = os.stat(binary)
        stamp = f"{os.path.realpath(binary)}\0{st.st_size}\0{st.st_mtime_ns}"
        try:
            known = json.loads((Path(remember) / "trivy-version.json").read_text())
            if known.get("binary") == stamp and known.get("version"):
                return str(known["version"])
        except (OSError, ValueError, AttributeError):
            pass
    r = proc.run(version_argv(), timeout=60, what="trivy version")
    try:
        found = str(json.loads(r.stdout).get("Version") or "unknown")
    except ValueError:
        found = r.stdout.strip().splitlines()[0] if r.stdout.strip() else "unknown"
    if stamp is not None and found != "unknown":
        try:
            Path(remember).mkdir(parents=True, exist_ok=True)
            tmp = Path(remember) / f".trivy-version.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({"binary": stamp, "version": found}))
            tmp.replace(Path(remember) / "trivy-version.json")
        except OSError:
            pass
    return found


def _plain_binary(path: str) -> bool:
    """A real trivy executable, not a shim (asdf, mise, aqua: a script or a link to a launcher whose size and
    mtime stay the same when the version it picks changes): only then is its version remembered."""
    real = os.path.realpath(path)
    if os.path.basename(real) != TRIVY:
        return False
    try:
        with open(real, "rb") as fh:
            return fh.read(2) != b"#!"
    except OSError:
        return False


class JavaDBNeeded(ToolError):
    """The image holds JARs and the cache has no Java DB yet: fetch it (our client) and scan again."""


def _named(tmp: Path, layout: str | Path, name: str) -> str:
    """The ``--input`` for a layout, named after the image: ``name`` is ``registry/repo@sha256:…``, the
    layout is linked at ``registry/repo`` in the run's directory, and Trivy (which cuts the input at
    ``@`` and picks that digest from ``index.json``) names the artifact ``registry/repo@sha256:…`` in
    its report, not after a temporary directory."""
    path, _, digest = (name or "image").partition("@")
    link = tmp / path.strip("/")
    if link.exists() or link.is_symlink() or tmp not in link.parents:
        link = tmp / "images" / "image"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(Path(layout).resolve(), target_is_directory=True)
    relative = str(link.relative_to(tmp))
    return f"{relative}@{digest}" if digest else relative


def scan(layout: str | Path, *, cache_dir: str, env: Mapping[str, str] | None = None, timeout_seconds: int = 900,
         scanners: Sequence[str] = SCANNERS, what: str = "") -> bytes:
    """Scan a local per-platform layout; returns Trivy's JSON (bytes). ``what`` (the image reference) names
    the artifact in the report. Runs in an empty directory (no stray ignore files). Raises
    :class:`JavaDBNeeded` when the image needs the Java DB the cache lacks."""
    what = what or str(layout)
    with workdir() as tmp:
        out = tmp / "report.json"
        argv = scan_argv(_named(tmp, layout, what), cache_dir=str(Path(cache_dir).resolve()), output=str(out),
                         timeout_seconds=timeout_seconds, supported=supported_flags(), scanners=scanners)
        _run(argv, env, tmp, timeout_seconds, f"trivy scan of {what}")
        try:
            return out.read_bytes()
        except OSError:
            raise ToolError(f"trivy scan of {what}: no report was written", tool="trivy") from None


def _run(argv: list[str], env: Mapping[str, str] | None, cwd: Path, timeout_seconds: int, what: str) -> None:
    """One Trivy run; :class:`JavaDBNeeded` when the image holds JARs and the cache has no Java DB yet."""
    try:
        proc.run(argv, env=_env(env), cwd=cwd, timeout=timeout_seconds + 60, what=what)
    except ToolError as exc:
        if exc.returncode is not None and "skip-java-db-update" in (exc.stderr or ""):
            raise JavaDBNeeded(f"{what}: the image needs the Java DB", tool="trivy", returncode=exc.returncode,
                               stderr=exc.stderr) from None
        raise


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


def sbom(layout: str | Path, *, env: Mapping[str, str] | None = None, cache_dir: str | None = None,
         timeout_seconds: int = 900, what: str = "") -> bytes:
    """A CycloneDX JSON SBOM of a local per-platform layout (``what`` names it). No DB, no network; raises
    :class:`JavaDBNeeded` like :func:`scan`."""
    with workdir("pipeline-sbom-") as tmp:
        out = tmp / "sbom.cdx.json"
        argv = sbom_argv(_named(tmp, layout, what), output=str(out),
                         cache_dir=str(Path(cache_dir).resolve()) if cache_dir else None,
                         timeout_seconds=timeout_seconds, supported=supported_flags())
        _run(argv, env, tmp, timeout_seconds, f"SBOM of {what or layout}")
        try:
            return out.read_bytes()
        except OSError:
            raise ToolError(f"SBOM of {what or layout}: trivy wrote no file", tool="trivy") from None


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
