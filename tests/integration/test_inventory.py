"""`pipeline inventory` after a real signed release to the three test registries (issue 6 acceptance).

A release (buildx, cosign with a key made by `pipeline keygen`) goes to ghcr, ecr and hub; then
the registries get an unsigned image, an image signed with another key and a cosign vulnerability
attestation. The inventory must call each of them what it is (signed = verifies with the configured
key), and its HTML page must render in headless Chromium (Debian's package) with every registry's
section, the badges, and working sorting (``#sort=`` in the URL, applied by the page's script).
A screenshot is kept (under the test's tmp dir, and in $PIPELINE_ARTIFACTS when set).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.tools import cosign as cosign_tool
from pipeline.tools.registry import Credentials, Registry
from tests.support.imagegen import ImageGen
from tests.support import project

SHA = "1a7e1a7e1a7e1a7e1a7e1a7e1a7e1a7e1a7e1a7e"
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN echo inventory > /built.txt
"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=5000"]


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "cosign", "chromium"):
        require_tool(tool)


def env_for(password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "JENKINS", "COSIGN_"))}
    env.update({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/tags/v3.1.0", "GITHUB_SHA": SHA,
                "GITHUB_EVENT_NAME": "push", "GITHUB_REPOSITORY": "acme/app", "GITHUB_SERVER_URL": "https://github.com",
                "SOURCE_DATE_EPOCH": "1700000000", "COSIGN_PASSWORD": password})
    env.pop("CI", None)
    return env


def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(args, env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def cosign(*args: str, password: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COSIGN_PASSWORD": password}
    if "--tlog-upload=false" in args and cosign_tool.installed_major() >= 3:   # v3's signing config refuses it
        at = args.index("--tlog-upload=false")
        args = (*args[:at], "--use-signing-config=false", *args[at:])
    return subprocess.run(["cosign", *args], capture_output=True, text=True, timeout=300, check=False, env=env)


@dataclass
class Released:
    tmp: Path
    cfg: Path
    env: dict[str, str]
    name: str
    digest: str
    unsigned: dict[str, str] = field(default_factory=dict)     # registry -> digest of an unsigned image
    foreign: str = ""                                          # ghcr: signed with another key
    attested: str = ""                                         # ecr: the release digest has a vuln attestation


@pytest.fixture(scope="module")
def released(tmp_path_factory, registries, offline_base) -> Released:
    tmp = tmp_path_factory.mktemp("inventory")
    password = "pw-" + secrets.token_urlsafe(18)
    env = env_for(password)
    code, _, err = run(["keygen", "--output", str(tmp / "keys" / "release")], env)
    assert code == 0, err
    key = tmp / "keys" / "release.key"
    name = f"inv/app{secrets.token_hex(3)}"
    lifecycle = f"""
[lifecycle]
release_manifests = ["{tmp / 'dist'}/release.json"]
[[lifecycle.rules]]
rulePriority = 1
description = "unsigned leftovers"
selection.tagStatus = "tagged"
selection.tagPatternList = ["unsigned-*"]
selection.countType = "sinceImagePushed"
selection.countUnit = "days"
selection.countNumber = 30
action.type = "expire"
"""
    cfg = project.write_project(tmp, registries, offline_base, name=name, dockerfile=DOCKERFILE,
                                platforms=("linux/amd64",),
                                sign=f'key = "{key}"\ntlog_upload = false\nsbom = false', extra=lifecycle)
    code, out, err = run(["release", "--config", str(cfg), "--format", "json"], env)
    assert code == 0, err[-5000:]
    digest = json.loads(out)["digest"]
    rel = Released(tmp, cfg, env, name, digest)
    now = datetime.now(timezone.utc)
    for reg_name, reg in registries.items():
        creds = Credentials(reg.username, reg.password) if reg.auth else None
        with Registry(reg.host, name=reg.name, insecure=True, credentials=creds) as c:
            g = ImageGen(c, name)
            old = g.manifest(created=now - timedelta(days=45))
            g.tag(old, "unsigned-old")
            rel.unsigned[reg_name] = old.digest
    # ghcr: an image signed with a key that is not ours
    other = tmp / "keys" / "other"
    r = cosign("generate-key-pair", "--output-key-prefix", str(other), password="other")
    assert r.returncode == 0, r.stderr
    with Registry(registries["ghcr"].host, name="ghcr", insecure=True,
                  credentials=Credentials(registries["ghcr"].username, registries["ghcr"].password)) as c:
        foreign = ImageGen(c, name).manifest(created=now - timedelta(days=2))
        ImageGen(c, name).tag(foreign, "foreign-1")
    r = cosign("sign", "--yes", "--key", f"{other}.key", "--tlog-upload=false", "--allow-http-registry=true",
               "--allow-insecure-registry=true", f"{registries['ghcr'].host}/{name}@{foreign.digest}",
               password="other")
    assert r.returncode == 0, r.stderr
    rel.foreign = foreign.digest
    # ecr: a vulnerability attestation for the release, by our key
    predicate = tmp / "vuln.json"
    predicate.write_text(json.dumps({"scanner": {"uri": "pkg:github/aquasecurity/trivy@0.59.1", "version": "0.59.1",
                                                 "result": {}}, "metadata": {}}))
    r = cosign("attest", "--yes", "--key", str(key), "--type", "vuln", "--predicate", str(predicate),
               "--tlog-upload=false", "--allow-http-registry=true", "--allow-insecure-registry=true",
               f"{registries['ecr'].host}/{name}@{digest}", password=password)
    assert r.returncode == 0, r.stderr
    rel.attested = digest
    return rel


@pytest.fixture(scope="module")
def inventory(released) -> tuple[dict[str, Any], str, Path]:
    page = released.tmp / "site" / "inventory.html"
    code, out, err = run(["inventory", "--config", str(released.cfg), "--format", "json", "--html", str(page)],
                         released.env)
    assert code == 0, err[-5000:]
    code, text, err = run(["inventory", "--config", str(released.cfg), "--html", str(released.tmp / "t.html")],
                          released.env)
    assert code == 0, err[-5000:]
    return json.loads(out), text, page


def entries(data: dict[str, Any], registry: str, repo: str) -> dict[str, dict[str, Any]]:
    section = next(s for s in data["registries"] if s["name"] == registry)
    return {e["digest"]: e for e in section["repositories"][repo]}


def test_inventory_shows_the_three_registries_with_the_release_signed(released, inventory):
    data, _, _ = inventory
    assert [s["name"] for s in data["registries"]] == ["ghcr", "ecr", "hub"]
    assert all(s["error"] is None for s in data["registries"])
    for reg in ("ghcr", "ecr", "hub"):
        rows = entries(data, reg, released.name)
        release = rows[released.digest]
        assert release["signed"] == "signed", (reg, release["signed_detail"])
        assert {"3.1.0", "3.1"} <= set(release["tags"]) and release["platforms"] == ["linux/amd64"]
        assert release["age_source"] == "release" and release["age_days"] < 1
        assert release["verdict"] == "keep"
        unsigned = rows[released.unsigned[reg]]
        assert unsigned["signed"] == "unsigned" and unsigned["verdict"] == "expire"
        assert unsigned["tags"] == ["unsigned-old"] and unsigned["age_source"] == "created"


def test_a_signature_by_another_key_is_not_signed(released, inventory):
    data, _, _ = inventory
    foreign = entries(data, "ghcr", released.name)[released.foreign]
    assert foreign["signed"] == "unverified" and foreign["signed_detail"]


def test_scanned_from_a_vulnerability_attestation(released, inventory):
    data, _, _ = inventory
    assert entries(data, "ecr", released.name)[released.digest]["scanned"] == "attested"
    assert entries(data, "hub", released.name)[released.digest]["scanned"] == "no"


def test_staging_candidate_is_listed_unsigned(released, inventory):
    data, _, _ = inventory
    staging = entries(data, "ecr", f"staging/{released.name}")
    candidate = staging[released.digest]
    assert candidate["signed"] == "unsigned" and any(t.startswith("candidate-") for t in candidate["tags"])


def test_terminal_table(released, inventory):
    _, text, _ = inventory
    assert "signed" in text and "unverified" in text and released.digest[7:19] in text
    assert "3 registries" in text and "page: " in text


# --------------------------------------------------------------------------- the page in Chromium


class Dom(HTMLParser):
    """Sections, rows (with the section they are in) and the script's status line of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.html_attrs: dict[str, str] = {}
        self.sections: list[str] = []
        self.rows: list[tuple[str, dict[str, str]]] = []   # (registry, row attributes + data-repository)
        self._repo = ""
        self.status = ""
        self._in_status = False
        self.badges: list[str] = []
        self._badge = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.html_attrs = a
        if tag == "section" and "data-registry" in a:
            self.sections.append(a["data-registry"])
        if tag == "table" and "data-repository" in a:
            self._repo = a["data-repository"]
        if tag == "tr" and "data-digest" in a:
            self.rows.append((self.sections[-1], {**a, "data-repository": self._repo}))
        if a.get("id") == "js-status":
            self._in_status = True
        self._badge = "badge" in a.get("class", "").split()

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._in_status = False
            self._badge = False

    def handle_data(self, data: str) -> None:
        if self._in_status:
            self.status += data
        if self._badge:
            self.badges.append(data.strip())


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    profile = tmp / f"chromium-profile-{secrets.token_hex(3)}"
    return subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=False)


def test_the_page_renders_in_chromium(released, inventory, tmp_path):
    _, _, page = inventory
    r = chromium("--dump-dom", f"{page.as_uri()}#sort=digest:asc", tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    dom = Dom()
    dom.feed(r.stdout)
    assert dom.html_attrs.get("data-ready") == "1", "the page's script did not run"
    assert dom.status.startswith("interactive: ") and "(sorted by digest asc)" in dom.status
    assert dom.sections == ["ghcr", "ecr", "hub"]
    for reg in ("ghcr", "ecr", "hub"):
        rows = {a["data-digest"]: a for s, a in dom.rows if s == reg and a["data-repository"] == released.name}
        assert rows[released.digest]["data-signed"] == "signed"
        assert rows[released.unsigned[reg]]["data-signed"] == "unsigned"
        assert rows[released.unsigned[reg]]["data-verdict"] == "expire"
    assert {"signed", "unsigned", "unverified", "expiring", "scan attested"} <= set(dom.badges)
    # every table is sorted by digest, ascending, after the script ran
    tables: dict[tuple[str, str], list[str]] = {}
    for s, a in dom.rows:
        tables.setdefault((s, a["data-repository"]), []).append(a["data-digest"])
    assert len(tables) == 4 and all(len(t) >= 2 for k, t in tables.items() if k[1] == released.name)
    assert all(t == sorted(t) for t in tables.values())
    r = chromium("--dump-dom", f"{page.as_uri()}#sort=digest:desc", tmp=tmp_path)
    desc = Dom()
    desc.feed(r.stdout)
    tables = {}
    for s, a in desc.rows:
        tables.setdefault((s, a["data-repository"]), []).append(a["data-digest"])
    assert all(t == sorted(t, reverse=True) for t in tables.values())


def test_screenshot_artifact(released, inventory, tmp_path):
    _, _, page = inventory
    shot = tmp_path / "inventory.png"
    r = chromium(f"--screenshot={shot}", "--window-size=1400,1600", page.as_uri(), tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    artifacts = os.environ.get("PIPELINE_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "inventory.png")
        shutil.copy(page, Path(artifacts) / "inventory.html")
