"""Pure: the scan gate's policy and its verdict on one Trivy report.

``evaluate(report, policy, today) -> Verdict``. The order of the filters is
Trivy's (specs/trivy.md §4): status (``ignore_unfixed``/``ignore_statuses``),
then the Trivy ignore file, then our exceptions file; a suppressed finding
names what suppressed it (``by``). What is left is judged:

* ``fail_on`` is a threshold: that severity and every higher one block (Trivy's
  ``--severity`` is an exact set; ``fail_on = "HIGH"`` is ``HIGH,CRITICAL``);
* ``max_allowed`` tolerates up to N findings of a severity (a severity below
  ``fail_on`` with a cap blocks once the cap is passed); past the cap, every
  finding of that severity blocks;
* secrets block unless ``fail_on_secrets = false``, whatever their severity.

Exceptions (``config/scan-exceptions.toml``) must say why and until when; an
expired exception suppresses nothing and the verdict names it. ``expires`` and
Trivy's ``exp:``/``expired_at`` mean the same: the first day (00:00 UTC) the
entry no longer applies.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.scan import doublestar, purl
from pipeline.scan.results import Report
from pipeline.tools.trivy import SEVERITIES, STATUSES

RANK = {s: i for i, s in enumerate(SEVERITIES)}
UNFIXED = tuple(s for s in STATUSES if s != "fixed")   # what Trivy's --ignore-unfixed ignores
ITEM_KEYS = ("id", "package", "installed", "fixed", "severity", "status", "target")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One vulnerability or secret as the gate sees it."""

    id: str
    package: str
    installed: str
    fixed: str
    severity: str
    status: str
    target: str
    kind: str = "vulnerability"      # vulnerability | secret
    pkg_path: str = ""
    purl: str = ""
    title: str = ""

    def item(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ITEM_KEYS}

    def sort_key(self) -> tuple[int, str, str, str, str]:
        return (-RANK.get(self.severity, 0), self.id, self.package, self.installed, self.target)


def findings(report: Report) -> list[Finding]:
    out = [Finding(v.id, v.pkg_name, v.installed, v.fixed, v.severity, v.status, r.target, "vulnerability",
                   v.pkg_path, v.purl, v.title) for r, v in report.vulnerabilities()]
    out += [Finding(s.rule_id, "", "", "", s.severity, "secret", r.target, "secret", "", "", s.title)
            for r, s in report.secrets()]
    return out


# --------------------------------------------------------------------------- exceptions file


@dataclass(frozen=True)
class ScanException:
    id: str
    reason: str
    expires: date
    package: str | None = None
    purl: str | None = None
    paths: tuple[str, ...] = ()
    owner: str | None = None
    source: str = ""

    def expired(self, today: date) -> bool:
        return today >= self.expires

    def matches(self, f: Finding) -> bool:
        if f.id != self.id:
            return False
        if self.package is not None and f.package != self.package:
            return False
        if self.purl is not None:
            if not f.purl:
                return False
            try:
                if not purl.parse(self.purl).matches(purl.parse(f.purl)):
                    return False
            except purl.PurlError:
                return False
        if self.paths and not any(doublestar.match(p, x) for p in self.paths for x in (f.target, f.pkg_path) if x):
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "reason": self.reason, "expires": self.expires.isoformat()}
        for key in ("package", "purl", "owner"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.paths:
            out["paths"] = list(self.paths)
        out["source"] = self.source
        return out


EXCEPTION_KEYS = {"id", "package", "purl", "paths", "reason", "expires", "owner"}


def _as_date(value: Any, where: str) -> date:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and DATE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{where}: '{value}' is not a date (YYYY-MM-DD)")


def parse_exceptions(text: str, source: str) -> tuple[ScanException, ...]:
    """``[[exceptions]]`` entries: id, reason, expires required; package, purl, paths, owner optional."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"exceptions"})
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown key (the file holds [[exceptions]] entries)")
    entries = data.get("exceptions", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: exceptions: must be [[exceptions]] tables")
    out: list[ScanException] = []
    for i, e in enumerate(entries):
        where = f"{source}: exceptions[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(f"{where}: must be a table")
        extra = sorted(set(e) - EXCEPTION_KEYS)
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: unknown key (allowed: {', '.join(sorted(EXCEPTION_KEYS))})")
        for key in ("id", "reason", "expires"):
            if key not in e or e[key] in ("", None):
                raise ConfigError(f"{where}.{key}: required")
        for key in ("id", "reason", "package", "purl", "owner"):
            if key in e and not isinstance(e[key], str):
                raise ConfigError(f"{where}.{key}: must be a string")
        if not e["reason"].strip():
            raise ConfigError(f"{where}.reason: required (say why this finding is acceptable)")
        paths = e.get("paths", [])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ConfigError(f"{where}.paths: must be a list of glob strings")
        for p in paths:
            try:
                doublestar.compile(p)
            except doublestar.GlobError as exc:
                raise ConfigError(f"{where}.paths: {exc}") from None
        if "purl" in e:
            try:
                purl.parse(e["purl"])
            except purl.PurlError as exc:
                raise ConfigError(f"{where}.purl: {exc}") from None
        out.append(ScanException(id=e["id"].strip(), reason=e["reason"].strip(),
                                 expires=_as_date(e["expires"], f"{where}.expires"), package=e.get("package"),
                                 purl=e.get("purl"), paths=tuple(paths), owner=e.get("owner"),
                                 source=f"{source}#{i}"))
    return tuple(out)


# --------------------------------------------------------------------------- Trivy ignore files


@dataclass(frozen=True)
class IgnoreRule:
    """One entry of ``.trivyignore`` / ``.trivyignore.yaml`` (Trivy's semantics)."""

    id: str
    kinds: frozenset[str]                   # vulnerability, secret, … (plain file: every kind)
    paths: tuple[str, ...] = ()
    purls: tuple[str, ...] = ()
    expires: date | None = None             # first day it no longer applies (00:00 UTC)
    statement: str = ""
    source: str = ""

    def active(self, now: datetime) -> bool:
        if self.expires is None:
            return True
        return not datetime(self.expires.year, self.expires.month, self.expires.day, tzinfo=timezone.utc) < now

    def matches(self, f: Finding) -> bool:
        if f.id != self.id or f.kind not in self.kinds:
            return False
        if self.paths and not any(doublestar.match(p, x) for p in self.paths for x in (f.target, f.pkg_path)):
            return False
        if self.purls:
            if f.kind != "vulnerability" or not f.purl:
                return False
            try:
                target = purl.parse(f.purl)
            except purl.PurlError:
                return False
            if not any(purl.parse(p).matches(target) for p in self.purls):
                return False
        return True


ALL_KINDS = frozenset({"vulnerability", "secret", "misconfiguration", "license"})
YAML_SECTIONS = {"vulnerabilities": "vulnerability", "secrets": "secret", "misconfigurations": "misconfiguration",
                 "licenses": "license"}


def parse_trivyignore(text: str, source: str,
                      warn: Callable[[str], None] = lambda _m: None) -> tuple[IgnoreRule, ...]:
    """Plain ``.trivyignore``: one ID per line, optional ``exp:YYYY-MM-DD``; ``#`` lines are comments.

    A malformed ``exp:`` date skips the whole line (the ID stays reported), as Trivy does.
    """
    out: list[IgnoreRule] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        expires: date | None = None
        exp = next((f for f in fields[1:] if f.startswith("exp:")), None) if len(fields) > 1 else None
        if exp is not None:
            value = exp[4:]
            try:
                if not DATE.match(value):
                    raise ValueError(value)
                expires = date.fromisoformat(value)
            except ValueError:
                warn(f"{source}:{n}: '{exp}' is not exp:YYYY-MM-DD; the line is skipped (as Trivy does)")
                continue
        out.append(IgnoreRule(fields[0], ALL_KINDS, expires=expires, source=source))
    return tuple(out)


def parse_trivyignore_yaml(text: str, source: str) -> tuple[IgnoreRule, ...]:
    """``.trivyignore.yaml``: ``vulnerabilities``/``secrets``/… lists of {id, paths, purls, expired_at, statement}."""
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping with vulnerabilities/secrets/misconfigurations/licenses")
    out: list[IgnoreRule] = []
    for section, kind in YAML_SECTIONS.items():
        entries = data.get(section) or []
        if not isinstance(entries, list):
            raise ConfigError(f"{source}: {section}: must be a list")
        for i, e in enumerate(entries):
            where = f"{source}: {section}[{i}]"
            if not isinstance(e, dict) or not e.get("id"):
                raise ConfigError(f"{where}.id: required")
            paths = [str(p) for p in e.get("paths") or []]
            for p in paths:
                try:
                    doublestar.compile(p)
                except doublestar.GlobError as exc:
                    raise ConfigError(f"{where}.paths: {exc}") from None
            purls = [str(p) for p in e.get("purls") or []] if kind == "vulnerability" else []
            for p in purls:
                try:
                    purl.parse(p)
                except purl.PurlError as exc:
                    raise ConfigError(f"{where}.purls: {exc}") from None
            expires = _as_date(e["expired_at"], f"{where}.expired_at") if e.get("expired_at") else None
            out.append(IgnoreRule(str(e["id"]), frozenset({kind}), tuple(paths), tuple(purls), expires,
                                  str(e.get("statement") or ""), source))
    return tuple(out)


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Policy:
    fail_on: str = "HIGH"
    ignore_unfixed: bool = False
    ignore_statuses: tuple[str, ...] = ()
    max_allowed: Mapping[str, int] = field(default_factory=dict)
    fail_on_secrets: bool = True
    exceptions: tuple[ScanException, ...] = ()
    ignores: tuple[IgnoreRule, ...] = ()
    vex: tuple[tuple[Any, ...], ...] = ()        # per scan.vex document, its pipeline.scan.vex.Statements
    warn_days: int = 14                          # an exception in use this close to its expiry is said

    def ignored_statuses(self) -> tuple[str, tuple[str, ...]]:
        """(rule name, statuses) the status filter drops."""
        if self.ignore_statuses:
            return "ignore_statuses", tuple(self.ignore_statuses)
        if self.ignore_unfixed:
            return "ignore_unfixed", UNFIXED
        return "", ()

    def cap(self, severity: str) -> int | None:
        """How many unsuppressed findings of ``severity`` pass (None: any number)."""
        if severity in self.max_allowed:
            return int(self.max_allowed[severity])
        return 0 if RANK[severity] >= RANK[self.fail_on] else None


def load_policy(scan: Any, read: Callable[[str], str] | None = None,
                warn: Callable[[str], None] = lambda _m: None) -> Policy:
    """A Policy from a ``[scan]`` config section, reading the exceptions and ignore files it names.

    A missing exceptions file is no exceptions (the gate fails closed); a configured
    ignore file that is missing is an error.
    """
    def default_read(path: str) -> str:
        return Path(path).read_text(encoding="utf-8")

    read = read or default_read
    exceptions: tuple[ScanException, ...] = ()
    if scan.exceptions_file:
        try:
            text = read(scan.exceptions_file)
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise ConfigError(f"scan.exceptions_file: cannot read {scan.exceptions_file}: {exc.strerror}") from None
        exceptions = parse_exceptions(text, scan.exceptions_file)
    ignores: tuple[IgnoreRule, ...] = ()
    if scan.trivyignore:
        try:
            text = read(scan.trivyignore)
        except OSError as exc:
            raise ConfigError(f"scan.trivyignore: cannot read {scan.trivyignore}: "
                              f"{exc.strerror or exc}") from None
        if scan.trivyignore.endswith((".yaml", ".yml")):
            ignores = parse_trivyignore_yaml(text, scan.trivyignore)
        else:
            ignores = parse_trivyignore(text, scan.trivyignore, warn)
    documents: list[tuple[Any, ...]] = []
    for i, path in enumerate(getattr(scan, "vex", ()) or ()):
        from pipeline.scan import vex

        try:
            text = read(path)
        except OSError as exc:
            raise ConfigError(f"scan.vex[{i}]: cannot read {path}: {exc.strerror or exc}") from None
        documents.append(vex.parse(text, path))
    return Policy(fail_on=scan.fail_on, ignore_unfixed=scan.ignore_unfixed,
                  ignore_statuses=tuple(scan.ignore_statuses), max_allowed=dict(scan.max_allowed),
                  fail_on_secrets=scan.fail_on_secrets, exceptions=exceptions, ignores=ignores,
                  vex=tuple(documents), warn_days=getattr(scan, "expiry_warning_days", 14))


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class Suppressed:
    finding: Finding
    by: str
    reason: str = ""
    expires: str = ""
    owner: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.finding.item(), "by": self.by}
        for key in ("reason", "expires", "owner"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Verdict:
    verdict: str                                  # pass | fail
    blocking: tuple[Finding, ...]
    suppressed: tuple[Suppressed, ...]
    counts: dict[str, int]                        # unsuppressed vulnerabilities by severity
    tolerated: tuple[Finding, ...] = ()           # within max_allowed
    expired: tuple[ScanException, ...] = ()       # exceptions that matched but no longer apply
    secrets: int = 0                              # unsuppressed secrets
    expiring: tuple[ScanException, ...] = ()      # exceptions in use that lapse within warn_days

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "blocking": [f.item() for f in self.blocking],
                "suppressed": [s.to_dict() for s in self.suppressed], "counts": dict(self.counts),
                "tolerated": [f.item() for f in self.tolerated],
                "expired": [e.to_dict() for e in self.expired], "secrets": self.secrets,
                "expiring": [e.to_dict() for e in self.expiring]}


def _now(today: date | datetime) -> tuple[date, datetime]:
    if isinstance(today, datetime):
        now = today if today.tzinfo else today.replace(tzinfo=timezone.utc)
        return now.astimezone(timezone.utc).date(), now
    return today, datetime(today.year, today.month, today.day, tzinfo=timezone.utc)


def _suppress(f: Finding, policy: Policy, day: date, now: datetime, expired: dict[str, ScanException],
              used: dict[str, ScanException], digests: Sequence[str]) -> Suppressed | None:
    rule, statuses = policy.ignored_statuses()
    if f.kind == "vulnerability" and f.status in statuses:
        return Suppressed(f, rule)
    for ig in policy.ignores:
        if ig.active(now) and ig.matches(f):
            return Suppressed(f, ig.source or "trivyignore", ig.statement,
                              ig.expires.isoformat() if ig.expires else "")
    for ex in policy.exceptions:
        if ex.matches(f):
            if ex.expired(day):
                expired.setdefault(ex.source, ex)
                continue
            used.setdefault(ex.source, ex)
            return Suppressed(f, f"exception:{ex.id}", ex.reason, ex.expires.isoformat(), ex.owner or "")
    if policy.vex:
        from pipeline.scan.vex import decide

        for document in policy.vex:
            st = decide(document, f, digests, day)
            if st is not None:
                return Suppressed(f, f"vex:{st.source}", st.why, st.expires.isoformat() if st.expires else "")
    return None


def evaluate(report: Report | Sequence[Finding], policy: Policy, today: date | datetime,
             digests: Sequence[str] = ()) -> Verdict:
    """The gate's verdict on one report (one platform); ``digests``: the image's (index and platform
    manifest), which VEX image products name."""
    day, now = _now(today)
    items = findings(report) if isinstance(report, Report) else list(report)
    expired: dict[str, ScanException] = {}
    used: dict[str, ScanException] = {}
    suppressed: list[Suppressed] = []
    kept: list[Finding] = []
    for f in items:
        s = _suppress(f, policy, day, now, expired, used, digests)
        if s is not None:
            suppressed.append(s)
        else:
            kept.append(f)
    vulns = [f for f in kept if f.kind == "vulnerability"]
    secrets = [f for f in kept if f.kind == "secret"]
    counts = {s: 0 for s in SEVERITIES}
    for f in vulns:
        counts[f.severity] += 1
    blocking: list[Finding] = []
    tolerated: list[Finding] = []
    for sev in SEVERITIES:
        cap = policy.cap(sev)
        group = [f for f in vulns if f.severity == sev]
        if cap is None or not group:
            continue
        (blocking if len(group) > cap else tolerated).extend(group)
    if policy.fail_on_secrets:
        blocking.extend(secrets)
    blocking.sort(key=Finding.sort_key)
    return Verdict("fail" if blocking else "pass", tuple(blocking),
                   tuple(sorted(suppressed, key=lambda s: s.finding.sort_key())), counts,
                   tuple(sorted(tolerated, key=Finding.sort_key)), tuple(expired.values()), len(secrets),
                   tuple(e for e in used.values() if policy.warn_days and (e.expires - day).days <= policy.warn_days))
