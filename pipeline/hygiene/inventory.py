"""``pipeline inventory``: every image in every configured registry, as a table and a static HTML page.

For each registry and repository (the same walk as ``prune``: pipeline/hygiene/walker.py) and each image:
tags, digest, platforms, **signed** (a signature that verifies with the configured key: cosign
verifies what our client fetched into a local layout, as the verify stage does it), **scanned** (the
release manifests' scan verdict for the digest, else a cosign vulnerability attestation), age and its
source, and the lifecycle verdict (what ``prune`` would do now).

Signature states: ``signed`` (verifies with the configured key), ``unverified`` (a signature is
there but does not verify with it), ``unsigned`` (no signature artifact at all, so cosign is not
even asked), ``unchecked`` (no key configured, or cosign missing: the reason is kept).

The HTML page is one self-contained file (inline CSS and JS, no network): a section per registry,
a sortable table per repository (click a header; ``#sort=<column>:<asc|desc>`` in the URL sorts on
load), a filter box, and badges for signed / scanned / expiring. Every value is HTML-escaped.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import log
from pipeline.access.registries import Access
from pipeline.config import Config, RegistryConfig
from pipeline.errors import ConfigError, InfraError, PipelineError
from pipeline.hygiene import lifecycle, prune
from pipeline.hygiene import walker as hygiene
from pipeline.sign import keys
from pipeline.tools import cosign
from pipeline.tools.registry import RegistryError
from pipeline.tools.vendors import VendorError

VERIFY_CONCURRENCY = 4


@dataclass
class Entry:
    """One image row of the inventory."""

    registry: str
    repository: str
    digest: str
    tags: tuple[str, ...]
    kind: str
    platforms: tuple[str, ...]
    signed: str = "unsigned"          # signed | unverified | unsigned | unchecked
    signed_detail: str = ""
    scanned: str = "no"               # pass | fail | attested | no
    scanned_source: str = ""
    scanned_on: str = ""              # date of the newest verified vuln attestation (the oldest over platforms)
    blocking: int | None = None       # blocking findings it names (all platforms)
    scan_counts: dict[str, int] = field(default_factory=dict)   # severity -> the most findings of any platform
    pushed_at: datetime | None = None
    age_source: str = "unknown"
    approximate: bool = False
    verdict: str = "keep"
    rule: str | None = None
    reason: str = ""
    attachments: tuple[str, ...] = ()
    attachment_digests: tuple[str, ...] = ()   # what the cached verdicts are keyed by (a tag keeps its name)
    size: int = 0                     # bytes stored: config and layers (an index: each blob of its platforms once)

    def age_days(self, now: datetime) -> float | None:
        return None if self.pushed_at is None else (now - self.pushed_at).total_seconds() / 86400

    def to_dict(self, now: datetime) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tags"], d["platforms"], d["attachments"] = list(self.tags), list(self.platforms), list(self.attachments)
        d["pushed_at"] = self.pushed_at.isoformat() if self.pushed_at else None
        age = self.age_days(now)
        d["age_days"] = round(age, 2) if age is not None else None
        return d


@dataclass
class RegistrySection:
    name: str
    url: str
    vendor: str
    repositories: dict[str, list[Entry]] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def entries(self) -> list[Entry]:
        return [e for rows in self.repositories.values() for e in rows]


@dataclass
class Inventory:
    now: datetime
    registries: list[RegistrySection]
    verifier: str
    age_sources: tuple[str, ...]
    release_files: list[str] = field(default_factory=list)

    @property
    def entries(self) -> list[Entry]:
        return [e for s in self.registries for e in s.entries]

    def summary(self) -> dict[str, int]:
        es = self.entries
        return {"registries": len(self.registries), "repositories": sum(len(s.repositories) for s in self.registries),
                "images": len(es), "signed": sum(1 for e in es if e.signed == "signed"),
                "unsigned": sum(1 for e in es if e.signed in ("unsigned", "unverified")),
                "scanned": sum(1 for e in es if e.scanned != "no"),
                "expiring": sum(1 for e in es if e.verdict == "expire"),
                "errors": sum(1 for s in self.registries if s.error)}

    def to_dict(self) -> dict[str, Any]:
        return {"generated": self.now.isoformat(), "verifier": self.verifier, "age_sources": list(self.age_sources),
                "release_manifests": self.release_files, "summary": self.summary(),
                "registries": [{"name": s.name, "url": s.url, "vendor": s.vendor, "error": s.error, "notes": s.notes,
                                "repositories": {repo: [e.to_dict(self.now) for e in rows]
                                                 for repo, rows in s.repositories.items()}}
                               for s in self.registries]}

    def text(self) -> str:
        from io import StringIO

        from rich.console import Console
        from rich.table import Table

        buf = StringIO()
        console = Console(file=buf, width=160, no_color=True, highlight=False)
        for s in self.registries:
            if s.error:
                console.print(f"{s.name} ({s.url}): ERROR {s.error}")
                continue
            for repo, rows in s.repositories.items():
                table = Table(title=f"{s.name}: {s.url}/{repo.split('/', 1)[-1] if s.url.count('/') else repo}",
                              title_justify="left")
                for col in ("tags", "digest", "platforms", "size", "signed", "scanned", "age", "lifecycle"):
                    table.add_column(col, overflow="fold")
                for e in rows:
                    age = e.age_days(self.now)
                    table.add_row(", ".join(e.tags) or "(untagged)", e.digest[7:19], ", ".join(e.platforms) or "-",
                                  _size_text(e.size), e.signed, e.scanned + (f", {e.scanned_on}, {e.blocking} blocking" if e.scanned_on
                                                         else ""), "-" if age is None else f"{age:.1f}d ({e.age_source})",
                                  e.verdict + (f" ({e.rule})" if e.rule and e.verdict == "expire" else ""))
                console.print(table)
        n = self.summary()
        repos = f"{n['repositories']} repositor{'y' if n['repositories'] == 1 else 'ies'}"
        regs = f"{n['registries']} registr{'y' if n['registries'] == 1 else 'ies'}"
        console.print(f"{n['images']} images in {repos} of {regs}:"
                      f" {n['signed']} signed, {n['scanned']} scanned, {n['expiring']} expiring"
                      + (f"; {n['errors']} registr{'y' if n['errors'] == 1 else 'ies'} unreachable" if n['errors']
                         else ""))
        return buf.getvalue().rstrip()


# --------------------------------------------------------------------------- collecting


def _scanned(img_digest: str, platforms: Sequence[str], atts: Sequence[hygiene.Attachment],
             facts: hygiene.ReleaseFacts) -> tuple[str, str]:
    verdict = facts.scanned.get(img_digest)
    if verdict:
        return verdict, "release manifest"
    for a in atts:
        if a.predicates.get(hygiene.VULN_PREDICATE):
            return "attested", f"{a.kind} vulnerability attestation"
    if platforms and all(facts.scanned.get(p) for p in platforms):
        return facts.scanned[platforms[0]], "release manifest"
    return "no", ""


def _has_signature(atts: Sequence[hygiene.Attachment], digest: str) -> bool:
    from pipeline.tools.cosign import SIGN_PREDICATE_TYPE

    return any(a.subject == digest and (a.kind == "sig" or (a.kind == "referrers" and
                                                            a.predicates.get(SIGN_PREDICATE_TYPE)))
               for a in atts)


def collect(config: Config, env: Mapping[str, str], *, now: datetime, only: Sequence[str] = (),
            source: str = "config", workdir: Path | None = None, cache: dict[Any, Any] | None = None) -> Inventory:
    """Walk every configured registry; a registry that cannot be read is reported in its section.

    ``cache`` (kept by a long-lived caller, the served page) holds what cosign said per digest and set of
    attachments, so a refresh verifies only what is new or changed."""
    base = lifecycle.policy(config.lifecycle, source)
    logger = log.get("inventory")
    sections: dict[str, RegistrySection] = {}
    checks: list[tuple[Entry, str]] = []   # (entry, reference to verify)
    attested: list[tuple[Entry, RegistryConfig, str, list[str]]] = []   # entries with vuln attestations
    backends: dict[str, Any] = {}
    with Access(config, env) as access, keys.temporary_dir() as tmp:
        facts = hygiene.load_release_facts(config.lifecycle.release_manifests)
        for reg in prune.registries_for(config, only):
            section = sections[reg.name] = RegistrySection(reg.name, reg.url, prune.vendor_kind(config, reg))
            try:
                backends[reg.name] = prune.backend(config, access, reg)
                for t in prune.targets(config, access, [reg.name]):
                    walker = hygiene.Walker(access.client(reg), registry=reg.name, vendor=backends[reg.name],
                                            facts=facts, age_sources=config.lifecycle.age_sources, now=now,
                                            concurrency=prune.CONCURRENCY, detail=True)
                    snap = walker.walk(t.repository)
                    plan = hygiene.plan(snap, prune.policy_for(config, t, base), now)
                    section.notes += [n for n in plan.notes if n not in section.notes]
                    rows = section.repositories.setdefault(t.repository, [])
                    for r in plan.rows:
                        if r.kind.startswith("orphan"):
                            continue
                        img = snap.images[r.digest]
                        atts = snap.attachments_of({img.digest, *img.children})
                        scanned, scanned_source = _scanned(img.digest, list(img.platforms.values()), atts, facts)
                        e = Entry(reg.name, t.repository, r.digest, r.tags, r.kind, r.platforms, scanned=scanned,
                                  scanned_source=scanned_source, pushed_at=r.pushed_at, age_source=r.age_source,
                                  approximate=r.approximate, verdict=r.verdict, rule=r.rule, reason=r.reason,
                                  attachments=r.attachments)
                        e.size = img.size
                        e.attachment_digests = tuple(sorted({a.digest for a in atts}
                                                            | {d for a in atts for d in a.referrers}))
                        if any(a.predicates.get(hygiene.VULN_PREDICATE) for a in atts):
                            attested.append((e, reg, t.repository, list(img.platforms.values()) or [img.digest]))
                        if _has_signature(atts, img.digest):
                            checks.append((e, f"{reg.host}/{t.repository}@{img.digest}"))
                            e.signed = "unchecked"
                        rows.append(e)
            except (RegistryError, VendorError, InfraError) as exc:
                section.error = str(exc)
                logger.error("inventory.registry_failed", registry=reg.name, error=str(exc))
        cache = {} if cache is None else cache
        verifier = _verify_all(config, env, access, checks, Path(workdir or tmp), cache)
        _read_verdicts(config, env, access, attested, Path(workdir or tmp), cache)
    for b in backends.values():
        b.close()
    return Inventory(now, list(sections.values()), verifier, tuple(config.lifecycle.age_sources), facts.files)


def _verify_all(config: Config, env: Mapping[str, str], access: Access, checks: list[tuple[Entry, str]],
                workdir: Path, cache: dict[Any, Any]) -> str:
    """cosign verify every image that has a signature; returns what verified (for the page header)."""
    if not checks:
        return _describe_key(config)
    from pipeline.sign import layouts
    from pipeline.sign.attachments import SIGNATURE

    try:
        major = cosign.installed_major()
        runner = cosign.Cosign(keys.passthrough_env(env, *keys.config_keys(config.sign)))  # no registry credentials
        base = keys.verifier(config.sign, env, major, workdir, runner=runner)
    except (ConfigError, PipelineError, ValueError) as exc:
        for e, _ in checks:
            e.signed, e.signed_detail = "unchecked", str(exc)
        return f"not verified: {exc}"
    by_name = {r.name: r for r in config.registries}

    def one(item: tuple[Entry, str]) -> None:
        e, ref = item
        key = ("signature", ref, e.attachment_digests)
        if key in cache:
            e.signed, e.signed_detail = cache[key]
            return
        verify(e, ref)
        if e.signed in ("signed", "unverified"):      # cosign's answer; "unchecked" is asked again next time
            cache[key] = (e.signed, e.signed_detail)

    def verify(e: Entry, ref: str) -> None:
        # our client fetches what cosign verifies (every request retried), cosign asks no registry itself
        try:
            _, r = layouts.check(access.client(by_name[e.registry]), e.repository, e.digest, SIGNATURE, runner, base,
                                 workdir, f"verify the signature of {e.registry}: {ref}")
        except (KeyError, TypeError, ValueError, OSError) as exc:    # another tool's artifact we cannot read
            e.signed, e.signed_detail = "unchecked", f"cannot read its signature artifacts ({type(exc).__name__})"
            return
        except PipelineError as exc:
            e.signed, e.signed_detail = "unchecked", str(exc)
            return
        e.signed = "signed" if r.ok else "unverified"
        e.signed_detail = f"{r.count} verified signature(s)" if r.ok else r.reason

    with ThreadPoolExecutor(max_workers=VERIFY_CONCURRENCY) as pool:
        list(pool.map(one, checks))
    return _describe_key(config)


def _read_verdicts(config: Config, env: Mapping[str, str], access: Access,
                   items: list[tuple[Entry, RegistryConfig, str, list[str]]], workdir: Path,
                   cache: dict[Any, Any]) -> None:
    """The dated verdicts of the vuln attestations that verify with our key (release or ``rescan --attest``):
    per image the newest per platform; the image shows the oldest of those dates and every blocking id."""
    if not items:
        return
    from pipeline.sign import vulnrecord
    from pipeline.tools.oci import Descriptor

    try:
        major = cosign.installed_major()
        runner = cosign.Cosign(keys.passthrough_env(env, *keys.config_keys(config.sign)))
        base = keys.verifier(config.sign, env, major, workdir, runner=runner)
    except (ConfigError, PipelineError, ValueError) as exc:
        log.get("inventory").warning("inventory.verdicts_unread", reason=str(exc)[:300])
        return                          # the signed column already says why nothing could be verified

    def one(item: tuple[Entry, RegistryConfig, str, list[str]]) -> None:
        e, reg, repo, manifests = item
        key = ("vuln", reg.name, repo, tuple(manifests), e.attachment_digests)
        newest = cache.get(key)
        if newest is None:
            newest = newest_of(reg, repo, manifests)
            if newest is None:          # could not be read: asked again next time
                return
            cache[key] = newest
        if not newest:
            return
        e.scanned = "fail" if any(r.verdict != "pass" for r in newest) else "pass"
        e.scanned_on = min(r.scanned_on for r in newest).date().isoformat()
        e.blocking = len({b for r in newest for b in r.blocking})
        for r in newest:
            for severity, n in r.counts:
                e.scan_counts[severity] = max(n, e.scan_counts.get(severity, 0))
        e.scanned_source = f"{newest[0].source} vuln attestation, verified"

    def newest_of(reg: RegistryConfig, repo: str, manifests: list[str]) -> list[vulnrecord.Record] | None:
        """The newest verified verdict of each platform; [] unless every platform has one; None when the
        registry or cosign could not be asked."""
        client = access.client(reg)
        newest: list[vulnrecord.Record] = []
        try:
            for digest in manifests:
                body, media, _ = client.manifest_get(repo, digest)
                found = vulnrecord.verified_records(client, repo, Descriptor(media, digest, len(body)), body, runner,
                                                    dataclasses.replace(base, allow_http=reg.allow_http), workdir,
                                                    f"verify the vuln attestations of {reg.name}: {repo}@{digest}")
                if not found:
                    log.get("inventory").info("inventory.no_verified_verdict", registry=reg.name, repository=repo,
                                              manifest=digest)
                    return []
                newest.append(found[-1])
        except PipelineError as exc:
            log.get("inventory").warning("inventory.verdict_unread", registry=reg.name, repository=repo,
                                         error=str(exc)[:300])
            return None
        return newest

    with ThreadPoolExecutor(max_workers=VERIFY_CONCURRENCY) as pool:
        list(pool.map(one, items))


def _describe_key(config: Config) -> str:
    s = config.sign
    if s.keyless:
        return f"keyless: {s.identity or s.identity_regexp} from {s.issuer or s.issuer_regexp}"
    if s.public_key:
        return f"public key {s.public_key}"
    if s.key:
        return f"key {s.key}"
    return "no key configured"


# --------------------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _size_text(size: int) -> str:
    if size <= 0:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024      # type: ignore[assignment]
    return "-"


def _age_text(days: float | None) -> str:
    if days is None:
        return "unknown"
    if days < 1:
        return f"{days * 24:.0f} h"
    if days < 60:
        return f"{days:.0f} d"
    return f"{days / 30.4:.0f} mo"


CSS = """
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--mute:#667085;--line:#e4e7ec;--ok:#067647;--okbg:#dcfae6;
--bad:#b42318;--badbg:#fee4e2;--warn:#b54708;--warnbg:#fef0c7;--info:#175cd3;--infobg:#d1e9ff}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--ink)}header{padding:24px 32px 8px}h1{margin:0 0 4px;font-size:24px}
.meta{color:var(--mute)}main{padding:0 32px 40px}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px;min-width:120px}
.card b{display:block;font-size:22px}.card span{color:var(--mute);font-size:12px;text-transform:uppercase}
section.registry{background:var(--card);border:1px solid var(--line);border-radius:12px;margin:20px 0;padding:16px 20px}
section.registry h2{margin:0;font-size:18px}section.registry .meta{margin-bottom:8px}
h3{font-size:14px;margin:16px 0 6px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);
vertical-align:top}th{font-size:12px;color:var(--mute);text-transform:uppercase;cursor:pointer;user-select:none;
white-space:nowrap}th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}.tag{display:inline-block;background:#eef2f6;
border-radius:6px;padding:0 6px;margin:1px 2px 1px 0;font-family:ui-monospace,monospace;font-size:12px}
.badge{display:inline-block;border-radius:999px;padding:1px 8px;font-size:12px;font-weight:600;white-space:nowrap}
.b-signed,.b-pass,.b-keep{background:var(--okbg);color:var(--ok)}.b-unsigned,.b-fail,.b-unverified,.b-expire{
background:var(--badbg);color:var(--bad)}.b-unchecked,.b-no{background:#f2f4f7;color:var(--mute)}
.b-attested{background:var(--infobg);color:var(--info)}.b-expiring{background:var(--warnbg);color:var(--warn)}
.small{color:var(--mute);font-size:12px}.error{color:var(--bad);font-weight:600}
input[type=search]{padding:8px 10px;border:1px solid var(--line);border-radius:8px;width:320px;font:inherit}
tr.hidden{display:none}
"""

JS = """
(function(){
  function key(td){var v=td.getAttribute('data-sort');if(v===null)v=td.textContent;return v;}
  function sortTable(table,col,dir){
    var th=table.tHead.rows[0].cells[col];var num=th.getAttribute('data-type')==='num';
    var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
      if(num){x=parseFloat(x);y=parseFloat(y);if(isNaN(x))x=-Infinity;if(isNaN(y))y=-Infinity;}
      var c=x<y?-1:x>y?1:0;return dir==='asc'?c:-c;});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort',dir==='asc'?'ascending':'descending');
  }
  var tables=document.querySelectorAll('table.inv');
  Array.prototype.forEach.call(tables,function(t){
    Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){
      th.addEventListener('click',function(){
        sortTable(t,i,th.getAttribute('aria-sort')==='ascending'?'desc':'asc');});});});
  var m=/sort=([a-z]+):(asc|desc)/.exec(location.hash||'');
  if(m){Array.prototype.forEach.call(tables,function(t){
    Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){
      if(th.getAttribute('data-col')===m[1])sortTable(t,i,m[2]);});});}
  var q=document.getElementById('filter');
  if(q)q.addEventListener('input',function(){var s=q.value.toLowerCase();
    Array.prototype.forEach.call(document.querySelectorAll('table.inv tbody tr'),function(r){
      r.classList.toggle('hidden',s&&r.textContent.toLowerCase().indexOf(s)<0);});});
  var st=document.getElementById('js-status');
  if(st)st.textContent='interactive: '+document.querySelectorAll('table.inv tbody tr').length+
    ' rows, click a column to sort'+(m?' (sorted by '+m[1]+' '+m[2]+')':'');
  document.documentElement.setAttribute('data-ready','1');
})();
"""

COLUMNS = (("tags", "Tags", ""), ("digest", "Digest", ""), ("platforms", "Platforms", ""), ("size", "Size", "num"),
           ("signed", "Signed", ""),
           ("scanned", "Scanned", ""), ("age", "Age", "num"), ("lifecycle", "Lifecycle", ""))


def _row(e: Entry, now: datetime) -> str:
    age = e.age_days(now)
    tags = "".join(f'<span class="tag">{_e(t)}</span>' for t in e.tags) or '<span class="small">(untagged)</span>'
    atts = f'<div class="small">+ {len(e.attachments)} signature/attestation artifact(s)</div>' if e.attachments else ""
    signed = f'<span class="badge b-{_e(e.signed)}" title="{_e(e.signed_detail)}">{_e(e.signed)}</span>'
    scan_label = {"pass": "scanned: pass", "fail": "scanned: FAIL", "attested": "scan attested", "no": "not scanned"}
    scanned = (f'<span class="badge b-{_e(e.scanned)}" title="{_e(e.scanned_source)}">'
               f'{_e(scan_label.get(e.scanned, e.scanned))}</span>')
    if e.scanned_on:
        counts = ", ".join(f"{n} {sev}" for sev, n in sorted(e.scan_counts.items()) if n)
        scanned += (f"<div class=\"small\" title=\"{_e(counts or 'no findings')}\">scanned on {_e(e.scanned_on)},"
                    f" {_e(e.blocking)} blocking</div>")
    when = e.pushed_at.isoformat() if e.pushed_at else "unknown"
    approx = " ≈" if e.approximate else ""
    age_cell = (f'<td data-sort="{age if age is not None else -1:.6f}" title="{_e(when)}">{_e(_age_text(age))}{approx}'
                f'<div class="small">{_e(e.age_source)}</div></td>')
    if e.verdict == "expire":
        life = f'<span class="badge b-expiring">expiring</span><div class="small">{_e(e.rule or "")}</div>'
    else:
        life = f'<span class="badge b-keep">keep</span><div class="small">{_e(e.rule or e.reason)}</div>'
    plats = "<br>".join(_e(p) for p in e.platforms) or '<span class="small">-</span>'
    return (f'<tr data-digest="{_e(e.digest)}" data-signed="{_e(e.signed)}" data-verdict="{_e(e.verdict)}">'
            f'<td data-sort="{_e(",".join(e.tags))}">{tags}{atts}</td>'
            f'<td data-sort="{_e(e.digest)}"><code title="{_e(e.digest)}">{_e(e.digest[:19])}…</code></td>'
            f'<td>{plats}</td><td data-sort="{e.size}">{_e(_size_text(e.size))}</td>'
            f'<td data-sort="{_e(e.signed)}">{signed}</td>'
            f'<td data-sort="{_e(e.scanned)}">{scanned}</td>{age_cell}'
            f'<td data-sort="{_e(e.verdict)}">{life}</td></tr>')


def render_html(inv: Inventory) -> str:
    s = inv.summary()
    cards = "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                    for k, v in (("registries", s["registries"]), ("repositories", s["repositories"]),
                                 ("images", s["images"]), ("signed", s["signed"]), ("scanned", s["scanned"]),
                                 ("expiring", s["expiring"])))
    parts = []
    for sec in inv.registries:
        head = (f'<section class="registry" id="registry-{_e(sec.name)}" data-registry="{_e(sec.name)}">'
                f'<h2>{_e(sec.name)}</h2><div class="meta">{_e(sec.url)} · {_e(sec.vendor)} API · '
                f'{len(sec.entries)} image(s) in {len(sec.repositories)} repositor'
                f'{"y" if len(sec.repositories) == 1 else "ies"}</div>')
        body = []
        if sec.error:
            body.append(f'<p class="error">unreachable: {_e(sec.error)}</p>')
        for note in sec.notes:
            body.append(f'<p class="small">note: {_e(note)}</p>')
        for repo, rows in sec.repositories.items():
            ths = "".join(f'<th data-col="{c}"{f" data-type={t!r}" if t else ""}>{_e(label)}</th>'
                          for c, label, t in COLUMNS)
            trs = "".join(_row(e, inv.now) for e in rows) or \
                f'<tr><td colspan="{len(COLUMNS)}" class="small">no images</td></tr>'
            body.append(f'<h3>{_e(repo)}</h3><table class="inv" data-repository="{_e(repo)}"><thead><tr>{ths}</tr>'
                        f'</thead><tbody>{trs}</tbody></table>')
        parts.append(head + "".join(body) + "</section>")
    data = json.dumps(inv.summary()).replace("<", "\\u003c")  # raw text inside <script>: no "</script>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Image inventory · {_e(inv.now.strftime('%Y-%m-%d %H:%M UTC'))}</title><style>{CSS}</style></head>
<body><header><h1>Image inventory</h1>
<div class="meta">generated {_e(inv.now.isoformat(timespec='seconds'))} · signatures checked against
{_e(inv.verifier)} · push times from {_e(', '.join(inv.age_sources))} ·
{len(inv.release_files)} release manifest(s)</div>
<div class="cards">{cards}</div>
<input type="search" id="filter" placeholder="filter by tag, digest, platform…" aria-label="filter">
<span id="js-status" class="small">static page (scripts off: no sorting)</span></header>
<main>{''.join(parts)}</main>
<script type="application/json" id="summary">{data}</script>
<script>{JS}</script></body></html>
"""


def write_html(inv: Inventory, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render_html(inv), encoding="utf-8")
    tmp.replace(path)
    return path
