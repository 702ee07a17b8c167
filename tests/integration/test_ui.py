"""The served inventory (issue 16), in a real headless Chromium driven over its DevTools protocol.

A real release goes to two registries (signed, by our key), and an old candidate sits in staging.
``pipeline inventory --serve`` shows both; the page's filter narrows the rows; the detail view lists
the platforms; Delete on the signed release is refused and it stays; Delete on the expired candidate
removes it (checked by listing the registry ourselves). Without the CSRF token a POST changes nothing,
and a server bound beyond loopback answers only with its token. Screenshots of the list and the detail
view are kept in ``$PIPELINE_TEST_ARTIFACTS`` (default ``.pipeline/test-artifacts``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.tools.registry import Credentials, Registry
from tests.support import project
from tests.support.browser import Browser
from tests.support.imagegen import ImageGen

ARTIFACTS = Path(os.environ.get("PIPELINE_TEST_ARTIFACTS") or project.ROOT / ".pipeline" / "test-artifacts") / "ui"
DOCKERFILE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo served > /served.txt\n"
OLD_CANDIDATE = "candidate-0123456-0123456789ab"
HOSTILE = "x\" autofocus onfocus=\"window.pwned=1\" '><img src=x onerror=window.pwned=2>"


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "cosign", "chromium"):
        require_tool(tool)


def _client(reg: Any) -> Registry:
    creds = Credentials(reg.username, reg.password) if reg.auth else None
    return Registry(reg.host, name=reg.name, insecure=True, credentials=creds)


class Served:
    """``pipeline inventory --serve`` as a process; its URL from its first line."""

    def __init__(self, cfg: Path, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.log = cwd / f"served-{secrets.token_hex(3)}.log"      # a file: a full pipe would stall the server
        with self.log.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", "inventory", "--serve", "--port", "0",
                                          "--config", str(cfg), *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                                         stderr=err, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        found = re.search(r"http://\S+/", line)
        if not found:
            self.proc.kill()
            raise AssertionError(f"no URL from the server: {line!r} {self.log.read_text()[-3000:]}")
        self.url = found.group(0)

    def close(self) -> str:
        self.proc.terminate()
        self.proc.communicate(timeout=60)
        return self.log.read_text()


def _non_loopback_address() -> str:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True,
                         check=True).stdout
    found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    assert found, f"no non-loopback IPv4 address on this machine: {out}"
    return found[0]


def _rows(b: Browser) -> list[dict[str, Any]]:
    return b.eval("""Array.prototype.map.call(document.querySelectorAll('table.inv tbody tr[data-digest]'),function(r){
        return {registry:r.closest('section.registry').getAttribute('data-registry'),
                repository:r.closest('table').getAttribute('data-repository'),digest:r.getAttribute('data-digest'),
                visible:!r.classList.contains('hidden'),text:r.textContent};})""")


def test_the_served_page_lists_filters_details_and_deletes_only_what_is_safe(tmp_path, registries, offline_base):
    password = "pw-" + secrets.token_urlsafe(12)
    env = project.github_env("refs/tags/v4.2.0", COSIGN_PASSWORD=password)
    assert project.run_process(["keygen", "--output", str(tmp_path / "keys" / "release")], env,
                               tmp_path).returncode == 0
    name = f"served/app{secrets.token_hex(3)}"
    lifecycle = f"""
[lifecycle]
enabled = true
keep_candidates = 0
release_manifests = ["{tmp_path}/dist/release.json"]
[[lifecycle.rules]]
rulePriority = 1
description = "old candidates"
selection.tagStatus = "tagged"
selection.tagPatternList = ["candidate-*"]
selection.countType = "sinceImagePushed"
selection.countUnit = "days"
selection.countNumber = 30
action.type = "expire"
"""
    cfg = project.write_project(tmp_path, registries, offline_base, name=name, dockerfile=DOCKERFILE,
                                release=("ecr", "hub"), staging="hub",      # hub: the one that deletes
                                sign=f'key = "{tmp_path / "keys" / "release.key"}"\ntlog_upload = false\nsbom = false',
                                extra=lifecycle)
    released = project.run_process(["release", "--config", str(cfg), "--format", "json"], env, tmp_path)
    assert released.returncode == 0, released.stderr[-4000:]
    digest = json.loads(released.stdout)["digest"]
    staging_repo = json.loads(released.stdout)["candidate"]["repository"]
    with _client(registries["hub"]) as c:
        old = ImageGen(c, staging_repo).manifest(created=datetime.now(timezone.utc) - timedelta(days=40))
        ImageGen(c, staging_repo).tag(old, OLD_CANDIDATE)
        # whoever pushes writes the platform, labels and annotations the page shows: markup must stay text
        gen = ImageGen(c, staging_repo)
        crafted = gen.index([gen.manifest(created=datetime.now(timezone.utc), platform=f"linux/{HOSTILE}",
                                          marker=HOSTILE)], annotations={"org.example.note": HOSTILE})
        gen.tag(crafted, "crafted-1")

    served = Served(cfg, env, tmp_path)
    try:
        with Browser() as b:
            b.open(served.url)
            b.wait_for("document.documentElement.getAttribute('data-live')")
            rows = _rows(b)
            where = {(r["registry"], r["repository"]) for r in rows if r["digest"] == digest}
            assert {("ecr", name), ("hub", name)} <= where, rows        # the release, in both registries
            size = b.eval(f"document.querySelector('section[data-registry=hub] tr[data-digest=\"{digest}\"]')"
                          ".cells[3].getAttribute('data-sort')")
            assert int(size) > 1000, size                               # what its platforms store
            assert b.eval(f"document.querySelector('tr[data-digest=\"{old.digest}\"]').getAttribute('data-verdict')")\
                == "expire"                                          # the lifecycle rules expire the old candidate
            # the filter narrows the rows to the old candidate
            b.eval(f"var q=document.getElementById('filter');q.value='{OLD_CANDIDATE}';"
                   "q.dispatchEvent(new Event('input'));true")
            visible = [r for r in _rows(b) if r["visible"]]
            assert [r["digest"] for r in visible] == [old.digest], visible
            b.eval("var q=document.getElementById('filter');q.value='';q.dispatchEvent(new Event('input'));true")
            b.screenshot(ARTIFACTS / "list.png")

            # the detail view of the release: index -> both platforms
            b.eval(f"document.querySelector('section[data-registry=hub] tr[data-digest=\"{digest}\"] button.details')"
                   ".click();true")
            b.wait_for("document.documentElement.getAttribute('data-detail')")
            platforms = b.eval("Array.prototype.map.call(document.querySelectorAll('#detail tr[data-platform]'),"
                               "function(r){return r.getAttribute('data-platform');})")
            assert {"linux/amd64", "linux/arm64"} <= set(platforms), platforms
            assert "signed" in b.eval("document.getElementById('detail-body').textContent")
            b.screenshot(ARTIFACTS / "detail.png")
            b.eval("document.getElementById('detail').close();true")
            b.eval("document.documentElement.removeAttribute('data-detail');true")
            b.eval(f"document.querySelector('tr[data-digest=\"{crafted.digest}\"] button.details').click();true")
            b.wait_for("document.documentElement.getAttribute('data-detail')")
            assert b.eval("window.pwned === undefined"), "markup from the registry ran as script"
            assert f"linux/{HOSTILE}" in b.eval("Array.prototype.map.call(document.querySelectorAll("
                                                "'#detail tr[data-platform]'),function(r){return r.getAttribute("
                                                "'data-platform');})")
            assert HOSTILE in b.eval("document.getElementById('detail-body').textContent")
            b.eval("document.getElementById('detail').close();true")

            # Delete on the signed release is refused; it stays
            b.eval(f"document.querySelector('section[data-registry=hub] tr[data-digest=\"{digest}\"] button.delete')"
                   ".click();true")
            refused = b.wait_for("document.documentElement.getAttribute('data-error')")
            assert "signed" in refused, refused
            # Delete on the expired candidate removes it
            b.eval("document.documentElement.removeAttribute('data-error');true")
            b.eval(f"document.querySelector('tr[data-digest=\"{old.digest}\"] button.delete').click();true")
            gone = (f"document.documentElement.getAttribute('data-live') && "
                    f"!document.querySelector('tr[data-digest=\"{old.digest}\"]')")
            outcome = b.wait_for(f"({gone}) ? 'gone' : document.documentElement.getAttribute('data-error')",
                                 timeout=120)
            assert outcome == "gone", outcome
        # independently: the candidate is gone from staging, the release is where it was
        assert OLD_CANDIDATE not in project.http_tags(registries["hub"], staging_repo)
        assert project.http_manifest(registries["hub"], staging_repo, old.digest) is None
        for r in ("ecr", "hub"):
            assert "4.2.0" in project.http_tags(registries[r], name)
            assert project.http_manifest(registries[r], name, digest) is not None

        # a POST without the page's CSRF token changes nothing
        with httpx.Client(base_url=served.url, timeout=60) as http:
            page = http.get("/").text
            for reg in registries.values():                  # no registry credential reaches the browser
                if reg.password:
                    assert reg.password not in page and reg.password not in http.get("/api/inventory").text
            forged = http.post("/api/delete", json={"registry": "hub", "repository": name, "digest": digest})
            assert forged.status_code == 403, forged.text
            forged = http.post("/api/apply", json={"registry": "hub", "repository": name})
            assert forged.status_code == 403, forged.text
            # with the page's token, the lifecycle preview of the release repository deletes nothing: no rule
            # expires the release
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)    # type: ignore[union-attr]
            applied = http.post("/api/apply", json={"registry": "hub", "repository": name},
                                headers={"X-CSRF-Token": csrf})
            assert applied.status_code == 200 and applied.json()["deleted"] == [], applied.text
            rebound = http.get("/", headers={"Host": "attacker.example:80"})
            assert rebound.status_code == 403                 # DNS rebinding: a foreign host name is refused
        assert project.http_manifest(registries["hub"], name, digest) is not None
    finally:
        err = served.close()
    assert password not in err


def test_beyond_loopback_every_request_needs_the_token(tmp_path, registries, offline_base):
    cfg = project.write_project(tmp_path, registries, offline_base, name="served/tokens", dockerfile=DOCKERFILE,
                                release=("ecr",))
    env = project.github_env()
    address = _non_loopback_address()
    # without a token variable the server does not start
    refused = project.run_process(["inventory", "--serve", "--bind", address, "--port", "0", "--config", str(cfg)],
                                  env, tmp_path, timeout=120)
    assert refused.returncode == 2 and "PIPELINE_INVENTORY_TOKEN" in refused.stderr, refused.stderr
    token = secrets.token_urlsafe(24)
    served = Served(cfg, {**env, "PIPELINE_INVENTORY_TOKEN": token}, tmp_path, "--bind", address)
    try:
        assert address in served.url
        with httpx.Client(base_url=served.url, timeout=60) as http:
            assert http.get("/api/inventory").status_code == 401
            assert http.get("/api/inventory", headers={"Authorization": "Bearer wrong"}).status_code == 401
            ok = http.get("/api/inventory", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200 and "registries" in ok.json()
            # opening the page with ?token= once sets an HttpOnly cookie and drops the token from the address
            first = http.get("/", params={"token": token}, follow_redirects=False)
            assert first.status_code == 303 and first.headers["location"] == "/"
            assert "HttpOnly" in first.headers["set-cookie"]
            assert http.get("/", follow_redirects=False).status_code == 200     # the cookie now does it
    finally:
        err = served.close()
    assert token not in err
