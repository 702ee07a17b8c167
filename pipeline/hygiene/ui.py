"""``pipeline inventory --serve``: the inventory as a live page, with safe deletes.

The page is the static inventory page (:func:`pipeline.hygiene.inventory.render_html`: the same table,
filter and sorting) rendered from the last walk, plus a live layer: a Refresh button (the registries are
read again, cosign's verdicts cached per digest and set of attachments), a detail view per image (index →
platforms, attachments, labels, base image, from ``/api/image``), and, with ``[lifecycle] enabled =
true``, a Delete button per image and "apply the lifecycle preview" per repository.

Deletes go through the prune engine (:func:`pipeline.hygiene.prune.run`): preflight (a registry that
cannot delete deletes nothing), platform manifests of kept indexes and the attachments of kept images
protected, the repository listed again afterwards. The choice is judged on a fresh walk: an image is
deleted when the rules expire it or it has no signature at all; one that is signed (or whose signature
could not be checked) and that the rules keep is refused, so a signed release is not deleted by one click.

Who may ask:

* bound to a loopback address (the default, 127.0.0.1), any local request, whose ``Host`` must be a
  loopback name (so a web page elsewhere cannot reach it by DNS rebinding);
* bound elsewhere, only with the token from the environment variable ``--token-env`` (never from the
  config): ``Authorization: Bearer <token>``, or a session cookie (random, never the token; HttpOnly,
  SameSite=Strict, named per server) that opening ``/?token=<token>`` once sets. Without a token variable
  set the server does not start.

Every request that changes something or makes the server walk the registries (refresh, delete, apply) is
a POST with the per-server CSRF token (in the page) in ``X-CSRF-Token`` and a JSON body; a GET only reads
the last walk. The page's scripts run under a per-response CSP nonce, so no markup a registry sends (a
tag, a label, a platform) can run script, and every value is escaped. No registry credential is ever sent to the browser:
the page and the JSON carry only what the inventory shows.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline import log
from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError, UsageError
from pipeline.hygiene import inventory, prune
from pipeline.tools.webserver import Request, Response

COOKIE = "pipeline_inventory"


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


def check_bind(bind: str, token: str | None, token_env: str) -> None:
    """Binding beyond loopback needs a token; say which variable."""
    if not is_loopback(bind) and not token:
        raise UsageError(f"pipeline inventory --serve --bind {bind}: a page others can reach needs a token: set"
                         f" ${token_env} (or name another variable with --token-env)")


@dataclass
class State:
    """What the server keeps between requests: the last walk and cosign's cached verdicts."""

    inventory: inventory.Inventory | None = None
    cache: dict[Any, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class App:
    def __init__(self, config: Config, env: Mapping[str, str], *, source: str, only: list[str], bind: str,
                 token: str | None, workdir: Path | None = None) -> None:
        self.config, self.env, self.source, self.only = config, env, source, only
        self.bind, self.token = bind, token
        self.workdir = workdir
        self.csrf = secrets.token_urlsafe(24)
        self.sessions: set[str] = set()
        self.cookie = f"{COOKIE}_{secrets.token_hex(4)}"   # per server: other ports' cookies never match
        self.state = State()
        self.logger = log.get("inventory")

    # -- data

    def refresh(self) -> inventory.Inventory:
        with self.state.lock:
            inv = inventory.collect(self.config, self.env, now=datetime.now(timezone.utc), only=self.only,
                                    source=self.source, workdir=self.workdir, cache=self.state.cache)
            self.state.inventory = inv
            return inv

    def current(self) -> inventory.Inventory:
        return self.state.inventory or self.refresh()

    def entry(self, registry: str, repository: str, digest: str) -> inventory.Entry | None:
        for sec in self.current().registries:
            if sec.name == registry:
                for e in sec.repositories.get(repository, []):
                    if e.digest == digest:
                        return e
        return None

    # -- requests

    def __call__(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            return self._route(request)
        except (ConfigError, UsageError) as exc:
            return _json({"error": str(exc)}, 400)
        except PipelineError as exc:
            return _json({"error": str(exc)}, 502)
        except Exception as exc:             # one bad request never stops the server; the page says what
            self.logger.error("inventory.request_failed", path=request.path, error=f"{type(exc).__name__}: {exc}")
            return _json({"error": f"internal error: {type(exc).__name__}"}, 500)

    def _refused(self, r: Request) -> Response | None:
        try:
            host = urlsplit("//" + r.headers.get("host", "")).hostname or ""
        except ValueError:                     # "[::1" and the like: no host we know
            host = ""
        if self.token is None:
            if not is_loopback(host):          # DNS rebinding: a foreign name that resolves to 127.0.0.1
                return Response(403, b"this page answers only to a loopback host name\n")
            return None
        given = r.headers.get("authorization", "")
        bearer = given[7:] if given.lower().startswith("bearer ") else None
        opening = r.query.get("token") if r.path == "/" else None
        for candidate in (bearer, opening):
            if candidate and hmac.compare_digest(candidate.encode(), self.token.encode()):
                return None
        session = r.cookie(self.cookie)
        if session and any(hmac.compare_digest(session.encode(), s.encode()) for s in list(self.sessions)):
            return None
        self.logger.warning("inventory.refused", client=r.client, path=r.path, reason="no or wrong token")
        return Response(401, b"a token is needed: open /?token=<the token> or send Authorization: Bearer\n",
                        headers={"WWW-Authenticate": 'Bearer realm="pipeline inventory"'})

    def _route(self, r: Request) -> Response:
        if r.method in ("GET", "HEAD"):
            if r.path == "/":
                if "token" in r.query and self.token:   # a session cookie (never the token), the address cleaned
                    session = secrets.token_urlsafe(24)
                    self.sessions.add(session)
                    return Response(303, headers={"Location": "/", "Referrer-Policy": "no-referrer", "Set-Cookie":
                                                  f"{self.cookie}={session}; HttpOnly; SameSite=Strict; Path=/"})
                nonce = secrets.token_urlsafe(16)
                return Response(200, self.page(self.current(), nonce).encode(), "text/html; charset=utf-8",
                                {"Content-Security-Policy": f"default-src 'none'; script-src 'nonce-{nonce}';"
                                 " style-src 'unsafe-inline'; img-src data:; connect-src 'self'; form-action 'none';"
                                 " base-uri 'none'; frame-ancestors 'none'", "X-Frame-Options": "DENY",
                                 "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"})
            if r.path == "/api/inventory":
                return _json(self.current().to_dict())
            if r.path == "/api/image":
                return self.detail(r.query.get("registry", ""), r.query.get("repository", ""),
                                   r.query.get("digest", ""))
            return Response(404, b"not found\n")
        if r.method != "POST":
            return Response(405, b"GET the page, POST the actions\n", headers={"Allow": "GET, POST"})
        if not hmac.compare_digest(r.headers.get("x-csrf-token", "").encode(), self.csrf.encode()):
            self.logger.warning("inventory.refused", client=r.client, path=r.path, reason="no or wrong CSRF token")
            return _json({"error": "the request lacks this page's CSRF token: reload the page"}, 403)
        if not r.headers.get("content-type", "").startswith("application/json"):
            return _json({"error": "actions take a JSON body"}, 415)
        try:
            body = json.loads(r.body or b"{}")
        except ValueError:
            return _json({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "the body is not a JSON object"}, 400)
        if r.path == "/api/refresh":             # a POST: a page elsewhere cannot make the server walk
            inv = self.refresh()
            return _json({"images": len(inv.entries), "generated": inv.now.isoformat()})
        if r.path == "/api/delete":
            return self.delete(str(body.get("registry", "")), str(body.get("repository", "")),
                               str(body.get("digest", "")))
        if r.path == "/api/apply":
            return self.apply(str(body.get("registry", "")), str(body.get("repository", "")))
        return _json({"error": "no such action"}, 404)

    # -- actions

    def _lifecycle_on(self) -> None:
        if not self.config.lifecycle.enabled:
            raise ConfigError(f"{self.source}: lifecycle.enabled: false, so the page only shows; set [lifecycle]"
                              " enabled = true to delete from it")

    def delete(self, registry: str, repository: str, digest: str) -> Response:
        """One image, judged on a fresh walk: deleted when the rules expire it or it has no signature at all;
        a signed image, or one whose signature could not be checked, the rules keep is refused."""
        self._lifecycle_on()
        self.refresh()
        e = self.entry(registry, repository, digest)
        if e is None:
            return _json({"error": f"{registry}: {repository}@{digest} is not in the inventory (refresh the page)"}, 404)
        if e.verdict != "expire" and e.signed != "unsigned":
            return _json({"error": f"{registry}: {repository}@{digest[:19]} is {e.signed} and the lifecycle rules"
                                   " keep it; it is not deleted from the page"}, 409)
        return self._prune(registry, repository, digest)

    def apply(self, registry: str, repository: str) -> Response:
        self._lifecycle_on()
        return self._prune(registry, repository, None)

    def _prune(self, registry: str, repository: str, digest: str | None) -> Response:
        with self.state.lock:
            report = prune.run(self.config, self.env, now=datetime.now(timezone.utc), apply=True, only=[registry],
                               source=self.source, repository=repository, chosen=digest)
        self.logger.info("inventory.deleted", registry=registry, repository=repository, digest=digest or "(rules)",
                         deleted=sum(1 for d in report.deleted if d.outcome == "deleted"), failed=len(report.failed))
        self.refresh()
        done = [d for d in report.deleted if d.outcome in ("deleted", "gone")]
        if digest is not None and not any(d.digest == digest for d in done) and not report.failed:
            row = next((row for p in report.plans for row in p.rows if row.digest == digest), None)
            return _json({"error": f"{registry}: {repository}@{digest[:19]} was not deleted: "
                                   f"{row.reason if row else 'the prune engine keeps it'}"}, 409)
        return _json({"deleted": [d.to_dict() for d in report.deleted], "leftovers": report.leftovers,
                      "hints": report.hints, "failed": len(report.failed)}, 200 if not report.failed else 502)

    # -- detail

    def detail(self, registry: str, repository: str, digest: str) -> Response:
        from pipeline.access.registries import Access
        from pipeline.tools.registry import INDEX_TYPES, is_digest, platform_name

        if not is_digest(digest):
            return _json({"error": f"digest: '{digest[:80]}' is not a sha256 digest"}, 400)

        e = self.entry(registry, repository, digest)
        if e is None:
            return _json({"error": f"{registry}: {repository}@{digest} is not in the inventory"}, 404)
        reg = self.config.registry(registry)
        out: dict[str, Any] = {"entry": e.to_dict(self.current().now), "platforms": [], "labels": {},
                               "annotations": {}}
        with Access(self.config, self.env) as access:
            client = access.client(reg)
            body, media, _ = client.manifest_get(repository, digest)
            top = json.loads(body)
            out["media_type"] = media
            out["annotations"] = dict(top.get("annotations") or {})
            manifests = top.get("manifests") if media in INDEX_TYPES else None
            first = None
            for m in manifests or []:
                name = platform_name(m.get("platform"))
                kind = (m.get("annotations") or {}).get("vnd.docker.reference.type", "")
                out["platforms"].append({"platform": name or "unknown", "digest": m.get("digest"),
                                         "size": m.get("size"), "attestation": kind == "attestation-manifest"})
                if first is None and kind != "attestation-manifest":
                    first = m.get("digest")
            first = first if isinstance(first, str) and is_digest(first) else None
            manifest = top if manifests is None else json.loads(client.manifest_get(repository, first)[0]) \
                if first else {}
            config_digest = (manifest.get("config") or {}).get("digest")
            if isinstance(config_digest, str) and is_digest(config_digest):
                blob = json.loads(client.blob_get(repository, config_digest))
                out["labels"] = dict((blob.get("config") or {}).get("Labels") or {})
            out["size"] = sum(int(x.get("size", 0)) for x in manifest.get("layers") or [])
        base = {k: v for k, v in {**out["annotations"], **out["labels"]}.items()
                if k.startswith("org.opencontainers.image.base.")}
        out["base_image"] = base
        return _json(out)

    # -- the page

    def page(self, inv: inventory.Inventory, nonce: str) -> str:
        static = inventory.render_html(inv).replace("<script", f'<script nonce="{nonce}"')
        live = LIVE_JS.replace("__ACTIONS__", "true" if self.config.lifecycle.enabled else "false")
        head = (f'<meta name="csrf-token" content="{html.escape(self.csrf, quote=True)}">'
                f'<style>{LIVE_CSS}</style>')
        bar = ('<div class="live"><button type="button" id="refresh">Refresh</button>'
               '<span id="live-status" class="small">live page: the registries are read again on Refresh</span></div>'
               '<dialog id="detail"><form method="dialog"><button class="close" aria-label="close">×</button></form>'
               '<div id="detail-body"></div></dialog>')
        static = static.replace("</head>", head + "</head>", 1)
        static = static.replace('<span id="js-status"', bar + '<span id="js-status"', 1)
        return static.replace("</body>", f'<script nonce="{nonce}">{live}</script></body>', 1)


def _json(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, indent=1).encode(), "application/json")


LIVE_CSS = """
.live{margin:10px 0}button{font:inherit;padding:4px 10px;border:1px solid var(--line);border-radius:6px;
background:#fff;cursor:pointer}button.danger{color:var(--bad);border-color:#f4c7c3}
button:disabled{opacity:.5;cursor:wait}dialog{border:1px solid var(--line);border-radius:12px;max-width:860px;
width:90%;padding:20px}dialog .close{float:right;border:none;font-size:20px}#live-status{margin-left:8px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px}dt{color:var(--mute)}dd{margin:0;word-break:break-all}
"""

LIVE_JS = """
(function(){
  var csrf=document.querySelector('meta[name=csrf-token]').content, actions=__ACTIONS__;
  var status=document.getElementById('live-status');
  function say(t,bad){status.textContent=t;status.className=bad?'error':'small';}
  function esc(s){return String(s).replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;')
    .replace(/"/g,'&quot;').replace(/'/g,'&#39;');}
  document.getElementById('refresh').addEventListener('click',function(){
    say('reading the registries…');post('/api/refresh',{}).then(function(){location.href='/';})
      .catch(function(err){say(err.message,true);});});
  function post(path,body){
    return fetch(path,{method:'POST',credentials:'same-origin',headers:{'Content-Type':'application/json',
      'X-CSRF-Token':csrf},body:JSON.stringify(body)}).then(function(r){
      return r.json().then(function(j){if(!r.ok)throw new Error(j.error||('HTTP '+r.status));return j;});});
  }
  function dl(obj){var h='<dl>';Object.keys(obj).forEach(function(k){h+='<dt>'+esc(k)+'</dt><dd>'+esc(obj[k])+'</dd>';});
    return h+'</dl>';}
  function show(reg,repo,digest){
    var q='registry='+encodeURIComponent(reg)+'&repository='+encodeURIComponent(repo)+'&digest='+encodeURIComponent(digest);
    fetch('/api/image?'+q,{credentials:'same-origin'}).then(function(r){return r.json();}).then(function(d){
      var body=document.getElementById('detail-body');
      if(d.error){body.innerHTML='<p class="error">'+esc(d.error)+'</p>';}
      else{var e=d.entry;var h='<h2>'+esc(reg)+': '+esc(repo)+'</h2><p><code>'+esc(digest)+'</code></p>';
        h+=dl({tags:e.tags.join(', ')||'(untagged)',kind:e.kind,'media type':d.media_type,signed:e.signed+' '+e.signed_detail,
          scanned:e.scanned+(e.scanned_on?' on '+e.scanned_on+', '+e.blocking+' blocking':'')+' '+e.scanned_source,
          lifecycle:e.verdict+' '+(e.rule||e.reason),size:d.size+' bytes (layers)'});
        h+='<h3>platforms</h3><table class="plat"><tr><th>platform</th><th>digest</th><th>size</th></tr>';
        d.platforms.forEach(function(p){h+='<tr data-platform="'+esc(p.platform)+'"><td>'+esc(p.platform)+(p.attestation?' (attestation)':'')+
          '</td><td><code>'+esc(p.digest)+'</code></td><td>'+esc(p.size)+'</td></tr>';});
        h+='</table><h3>attachments</h3>'+(e.attachments.length?'<ul>'+e.attachments.map(function(a){
          return '<li><code>'+esc(a)+'</code></li>';}).join('')+'</ul>':'<p class="small">none</p>');
        h+='<h3>base image</h3>'+(Object.keys(d.base_image).length?dl(d.base_image):'<p class="small">not recorded</p>');
        h+='<h3>labels</h3>'+(Object.keys(d.labels).length?dl(d.labels):'<p class="small">none</p>');
        body.innerHTML=h;}
      var dlg=document.getElementById('detail');dlg.setAttribute('data-digest',digest);
      if(!dlg.open)dlg.showModal();document.documentElement.setAttribute('data-detail','1');});
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.inv'),function(t){
    var repo=t.getAttribute('data-repository');
    var reg=t.closest('section.registry').getAttribute('data-registry');
    if(actions){var b=document.createElement('button');b.type='button';b.className='danger apply';
      b.textContent='Apply the lifecycle preview to '+repo;b.addEventListener('click',function(){
        if(!confirm('Delete what the lifecycle rules expire in '+reg+': '+repo+'?'))return;
        b.disabled=true;say('applying the lifecycle rules…');
        post('/api/apply',{registry:reg,repository:repo}).then(function(j){location.href='/';})
          .catch(function(err){b.disabled=false;say(err.message,true);});});
      t.parentNode.insertBefore(b,t);}
    t.tHead.rows[0].appendChild(document.createElement('th'));
    Array.prototype.forEach.call(t.tBodies[0].rows,function(row){
      var digest=row.getAttribute('data-digest');var cell=row.insertCell(-1);
      if(!digest)return;
      var d=document.createElement('button');d.type='button';d.className='details';d.textContent='Details';
      d.addEventListener('click',function(){show(reg,repo,digest);});cell.appendChild(d);
      if(actions){var x=document.createElement('button');x.type='button';x.className='danger delete';x.textContent='Delete';
        x.addEventListener('click',function(){
          if(!confirm('Delete '+reg+': '+repo+'@'+digest+' and its signatures and attestations?'))return;
          x.disabled=true;say('deleting '+digest.slice(0,19)+'…');
          post('/api/delete',{registry:reg,repository:repo,digest:digest}).then(function(j){
            say('deleted '+j.deleted.filter(function(d){return d.outcome==='deleted';}).length+' manifest(s)');
            location.href='/';}).catch(function(err){x.disabled=false;say(err.message,true);
            document.documentElement.setAttribute('data-error',err.message);});});
        cell.appendChild(x);}
    });
  });
  document.documentElement.setAttribute('data-live','1');
})();
"""
