"""The served inventory's gatekeeping, without sockets: hosts, tokens, CSRF, and what a delete refuses."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import UsageError
from pipeline.hygiene import ui
from pipeline.hygiene.inventory import Entry, Inventory, RegistrySection
from pipeline.tools.webserver import Request

NOW = datetime(2026, 12, 2, tzinfo=timezone.utc)
CONFIG = '[image]\nname = "acme/app"\n[[registries]]\nname = "r"\nurl = "registry.acme.example"\n'
SIGNED = "sha256:" + "a" * 64


def app(tmp_path: Path, *, lifecycle: bool = False, token: str | None = None) -> ui.App:
    path = tmp_path / "pipeline.toml"
    path.write_text(CONFIG + ("[lifecycle]\nenabled = true\n" if lifecycle else ""))
    a = ui.App(config.load(path, {}), {}, source=str(path), only=[], bind="127.0.0.1", token=token)
    section = RegistrySection("r", "registry.acme.example", "distribution")
    section.repositories["acme/app"] = [Entry("r", "acme/app", SIGNED, ("1.0.0",), "index", ("linux/amd64",),
                                              signed="signed", verdict="keep")]
    a.state.inventory = Inventory(NOW, [section], "key k", ("release",))
    return a


def req(method: str = "GET", path: str = "/api/inventory", *, host: str = "127.0.0.1:8088",
        headers: dict[str, str] | None = None, body: object = None, query: dict[str, str] | None = None) -> Request:
    h = {"host": host, **(headers or {})}
    raw = b""
    if body is not None:
        raw = json.dumps(body).encode()
        h.setdefault("content-type", "application/json")
    return Request(method, path, query or {}, h, raw, "127.0.0.1", "127.0.0.1")


def test_loopback_answers_only_to_loopback_host_names(tmp_path):
    a = app(tmp_path)
    assert a(req()).status == 200
    assert a(req(host="localhost:8088")).status == 200
    assert a(req(host="[::1]:8088")).status == 200
    assert a(req(host="rebound.attacker.example")).status == 403
    assert a(req(host="[::1")).status == 403


def test_the_page_runs_only_its_own_scripts_and_a_get_never_walks_the_registries(tmp_path, monkeypatch):
    a = app(tmp_path)
    walked: list[int] = []
    monkeypatch.setattr(a, "refresh", lambda: walked.append(1) or a.state.inventory)
    page = a(req(path="/", query={"refresh": "1"}))
    policy = page.headers["Content-Security-Policy"]
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    assert page.body.count(b"<script") == page.body.count(f'<script nonce="{nonce}"'.encode()) > 0
    assert walked == []                                         # GET ?refresh=1 reads the last walk
    assert a(req("POST", "/api/refresh", body={})).status == 403
    assert a(req("POST", "/api/refresh", body={}, headers={"x-csrf-token": a.csrf})).status == 200 and walked


def test_state_changes_need_the_csrf_token_a_json_body_and_lifecycle_enabled(tmp_path):
    a = app(tmp_path)
    target = {"registry": "r", "repository": "acme/app", "digest": SIGNED}
    assert a(req("POST", "/api/delete", body=target)).status == 403
    assert a(req("POST", "/api/delete", body=target, headers={"x-csrf-token": "guess"})).status == 403
    plain = req("POST", "/api/delete", headers={"x-csrf-token": a.csrf, "content-type": "text/plain"})
    assert a(plain).status == 415
    off = a(req("POST", "/api/delete", body=target, headers={"x-csrf-token": a.csrf}))
    assert off.status == 400 and b"lifecycle.enabled" in off.body
    assert a(req("DELETE", "/api/delete")).status == 405


def test_a_signed_image_the_rules_keep_is_not_deleted_from_the_page(tmp_path, monkeypatch):
    a = app(tmp_path, lifecycle=True)
    monkeypatch.setattr(a, "refresh", lambda: a.state.inventory)      # the fresh walk finds what the page showed
    r = a(req("POST", "/api/delete", body={"registry": "r", "repository": "acme/app", "digest": SIGNED},
              headers={"x-csrf-token": a.csrf}))
    assert r.status == 409 and b"signed" in r.body
    missing = a(req("POST", "/api/delete", body={"registry": "r", "repository": "acme/app", "digest": "sha256:" + "b" * 64},
                    headers={"x-csrf-token": a.csrf}))
    assert missing.status == 404


def test_beyond_loopback_the_token_comes_by_header_or_by_the_cookie_the_page_sets(tmp_path):
    a = app(tmp_path, token="t0ken-Secret")
    assert a(req(host="10.0.0.5:8088")).status == 401
    assert a(req(host="10.0.0.5:8088", headers={"authorization": "Bearer nope"})).status == 401
    assert a(req(host="10.0.0.5:8088", headers={"authorization": "Bearer t0ken-Secret"})).status == 200
    first = a(req(path="/", host="10.0.0.5:8088", query={"token": "t0ken-Secret"}))
    assert first.status == 303 and first.headers["Location"] == "/"
    cookie = first.headers["Set-Cookie"].split(";", 1)[0]
    assert "HttpOnly" in first.headers["Set-Cookie"] and "SameSite=Strict" in first.headers["Set-Cookie"]
    assert a(req(host="10.0.0.5:8088", headers={"cookie": cookie})).status == 200
    assert "t0ken-Secret" not in first.headers["Set-Cookie"]                   # a session, never the token
    assert a(req(host="10.0.0.5:8088", headers={"cookie": f"{a.cookie}=t0ken-Secret"})).status == 401
    assert a(req(path="/api/inventory", host="10.0.0.5:8088", query={"token": "t0ken-Secret"})).status == 401


def test_binding_beyond_loopback_without_a_token_is_refused_naming_the_variable():
    with pytest.raises(UsageError, match="PIPELINE_INVENTORY_TOKEN"):
        ui.check_bind("0.0.0.0", None, "PIPELINE_INVENTORY_TOKEN")
    ui.check_bind("127.0.0.1", None, "PIPELINE_INVENTORY_TOKEN")
    ui.check_bind("0.0.0.0", "x", "PIPELINE_INVENTORY_TOKEN")


def test_an_image_whose_signature_could_not_be_checked_is_refused_too(tmp_path, monkeypatch):
    a = app(tmp_path, lifecycle=True)
    monkeypatch.setattr(a, "refresh", lambda: a.state.inventory)
    a.state.inventory.registries[0].repositories["acme/app"][0].signed = "unchecked"
    r = a(req("POST", "/api/delete", body={"registry": "r", "repository": "acme/app", "digest": SIGNED},
              headers={"x-csrf-token": a.csrf}))
    assert r.status == 409 and b"unchecked" in r.body


def test_the_server_listens_on_ipv6_loopback_and_answers_a_request_there():
    # `--bind ::1` failed with "Address family for hostname not supported": the socket was always IPv4
    import http.client

    from pipeline.tools.webserver import Response, Server

    seen: list[str] = []

    def hello(request: Request) -> Response:
        seen.append(request.headers.get("host", ""))
        return Response(200, b"hello\n")

    server = Server(hello, "::1", 0).start()
    try:
        host, port = server.address
        assert host == "::1"
        conn = http.client.HTTPConnection("::1", port, timeout=10)
        conn.request("GET", "/")
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (200, b"hello\n")
        conn.close()
    finally:
        server.close()
    assert seen == [f"[::1]:{port}"] and ui.is_loopback("[::1]")
