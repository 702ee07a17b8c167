"""`pipeline rescan` without Trivy: which released images it judges, and `--attest` checking the key first."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipeline import config
from pipeline.errors import InfraError
from pipeline.scan import rescan


def test_an_unusable_signing_key_fails_attest_before_any_image_is_scanned(tmp_path, monkeypatch):
    # a nightly rescan of every released image used to scan them all and only then say the key was wrong
    asked: list[str] = []
    monkeypatch.setattr(rescan.scandb, "prepare", lambda *a, **k: asked.append("db") or pytest.fail("scanned"))
    monkeypatch.setattr(rescan, "targets", lambda *a, **k: asked.append("targets") or pytest.fail("listed"))
    cfg = config.parse({"image": {"name": "app"},
                        "registries": [{"name": "hub", "url": "127.0.0.1:5000", "auth": "none"}],
                        "sign": {"key": str(tmp_path / "missing.key")}, "report": {"dir": str(tmp_path / "dist")}})
    with pytest.raises(InfraError, match=r"sign\.key: cannot read the signing key .*missing\.key \(no such file\)"):
        rescan.rescan(cfg, {}, object(), only=[], dist=tmp_path / "dist", now=datetime.now(timezone.utc),
                      attest=True)
    assert asked == []


def test_rescan_judges_the_newest_keep_released_images_per_repository(monkeypatch):
    from pipeline.hygiene import walker as walker_mod
    from pipeline.hygiene.walker import Image, Snapshot

    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    index = "application/vnd.oci.image.index.v1+json"

    def img(n: int, tags: tuple[str, ...], days: float | None) -> Image:
        from datetime import timedelta
        return Image(f"sha256:{n:064x}", index, tags, platforms={"linux/amd64": f"sha256:{n + 100:064x}"},
                     pushed_at=None if days is None else now - timedelta(days=days))

    images = [img(1, ("1.0.0",), 30), img(2, ("1.1.0",), 20), img(3, ("1.2.0", "latest"), 10),
              img(4, ("candidate-abc",), 1),                  # a staging candidate: not released
              img(5, ("buildcache",), 0.5),                   # the build cache: not released
              img(6, ("1.3.0-rc1",), None)]                   # no known age: taken as the newest

    class Walker:
        def __init__(self, client, **kw):
            self.registry = kw["registry"]

        def walk(self, repo):
            return Snapshot(self.registry, repo, "distribution", {i.digest: i for i in images})

    monkeypatch.setattr(walker_mod, "Walker", Walker)
    access = type("A", (), {"client": lambda self, reg: object()})()
    cfg = config.parse({"image": {"name": "app"}, "rescan": {"keep": 2},
                        "registries": [{"name": "hub", "url": "127.0.0.1:5000", "auth": "none"},
                                       {"name": "ghcr", "url": "127.0.0.1:5001", "auth": "none"}]})
    found, unreadable = rescan.targets(cfg, access, [], now, walker_mod.ReleaseFacts())
    assert unreadable == {}
    assert [(t.registry.name, t.tags) for t in found] == [
        ("hub", ("1.3.0-rc1",)), ("hub", ("1.2.0", "latest")), ("ghcr", ("1.3.0-rc1",)), ("ghcr", ("1.2.0", "latest"))]
    assert found[1].platforms == {"linux/amd64": f"sha256:{103:064x}"}
