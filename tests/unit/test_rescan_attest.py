"""``rescan --attest`` checks the signing key before it scans anything."""

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
