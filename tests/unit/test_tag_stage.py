"""The tag stage's shared tags against an in-memory registry, with the interleavings of two releases at once
scripted step by step (the integration test meets them only when the timing happens to)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline import config, log
from pipeline.access import registries as registries_mod
from pipeline.build.build import BuildOutput
from pipeline.context import Context
from pipeline.metadata.ci import CIInfo
from pipeline.metadata.tags import compute_tags
from pipeline.stages.tag import Tagger
from pipeline.tools import transfer
from pipeline.tools.registry import Registry
from tests.support.fakeaccess import fake_access
from tests.support.fakeregistry import FAST, FakeRegistry, LazyTransport
from tests.support.layouts import image_layout

RULES = ["type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}", "type=sha"]


@pytest.fixture
def world(tmp_path, monkeypatch):
    fake = FakeRegistry(host="localhost")
    client = Registry("localhost:5000", name="a", policy=FAST, transport=LazyTransport(fake))
    monkeypatch.setattr(registries_mod, "Access", fake_access(lambda reg: client))

    def release(version: str, sha: str, *, sign: bool = False) -> Tagger:
        layout, index = image_layout(tmp_path / version)
        transfer.push(layout, index, client, "app")
        cfg = config.parse({"image": {"name": "app"}, "registries": [{"name": "a", "url": "localhost:5000"}],
                            "tags": {"rules": RULES},
                            "sign": {"enabled": sign, "key": "/nonexistent/cosign.key"}})
        ctx = Context(config=cfg, ci=CIInfo("github", "tag", "push", f"refs/tags/v{version}", sha * 40),
                      env={}, now=datetime(2026, 12, 1, tzinfo=UTC))
        ctx.outputs["tags"] = compute_tags(ctx)
        body, media = layout.manifest(index)
        ctx.outputs["build"] = BuildOutput("a", "app", index, layout.platforms(index), "k", "c", False,
                                           index=body, media_type=media, layout=str(layout.path))
        return Tagger(ctx, registries_mod.Access(cfg, {}), log.get(stage="tag"))

    def at(tag: str) -> str | None:
        head = client.manifest_head("app", tag)
        return head.digest if head else None

    release.at = at              # type: ignore[attr-defined]
    return release


def _tag(t: Tagger) -> dict[str, dict[str, str]]:
    reg = [t.cfg.registry("a")]
    for tag in t.claims.own:
        t.put("a", tag)
    return t.settle(reg, {"a": []}, {"a": []})


def test_a_backport_leaves_latest_with_the_newer_release_and_moves_its_own_minor(world):
    newer, older = world("6.2.0", "b"), world("6.1.1", "a")
    _tag(newer)
    assert _tag(older) == {"a": {"latest": "6.2.0"}}
    assert world.at("latest") == world.at("6.2.0") == newer.digest
    assert world.at("6.1") == world.at("6.1.1") == older.digest
    assert world.at("sha-aaaaaaa") == older.digest            # the commit's tag is the backport's own


def test_an_older_release_that_wrote_latest_after_the_newer_one_gives_it_back(world):
    older, newer = world("6.1.0", "a"), world("6.2.0", "b")
    for tag in older.claims.own:          # the older release has written its version tag, then decided on
        older.put("a", tag)               # a tag list without 6.2.0 ...
    stale = older.holders("a")
    assert stale == {}
    _tag(newer)                           # ... the newer release tags and settles meanwhile ...
    assert world.at("latest") == newer.digest
    older.put("a", "latest", stale.get("latest"))   # ... and the older one's stale write lands last
    assert world.at("latest") == older.digest
    assert older.settle([older.cfg.registry("a")], {"a": []}, {"a": []}) == {"a": {"latest": "6.2.0"}}
    assert world.at("latest") == newer.digest


def test_the_newer_release_takes_a_shared_tag_back_from_an_older_one(world):
    older, newer = world("6.1.0", "a"), world("6.2.0", "b")
    _tag(older)
    assert world.at("latest") == older.digest
    written: dict[str, list[str]] = {"a": []}
    assert newer.settle([newer.cfg.registry("a")], written, {"a": []}) == {"a": {}}
    assert world.at("latest") == newer.digest and written == {"a": ["6.2", "latest"]}


def test_a_claimant_that_does_not_verify_is_passed_over_for_the_next_newest_that_does(world, monkeypatch):
    from pipeline.sign import verification

    good, stray = world("7.0.0", "c"), world("7.1.0", "d")
    for t in (good, stray):
        for tag in t.claims.own:
            t.put("a", tag)
    verified = {good.digest}
    asked: list[str] = []

    def fake_verify(cfg, env, targets, *, expected=None, **kw):
        asked.append(expected)
        report = verification.Report(expected)
        report.checks.append(verification.Check("a", "x", "signature", expected in verified, "fake"))
        return report

    monkeypatch.setattr(verification, "verify", fake_verify)
    backport = world("6.1.1", "a", sign=True)
    assert _tag(backport) == {"a": {"latest": "7.0.0"}}           # not 7.1.0, whose signature does not verify
    assert world.at("latest") == good.digest and world.at("6.1") == backport.digest
    assert set(asked) == {good.digest, stray.digest}
