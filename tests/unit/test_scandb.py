"""The vulnerability and Java DBs fetched by our registry client into Trivy's cache layout."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from pipeline import config
from pipeline.scan import db as scandb
from pipeline.tools import trivy
from tests.support import trivydb
from tests.support.fakeaccess import fake_access
from tests.support.fakeregistry import FAST, FakeRegistry, LazyTransport
from pipeline.tools.registry import Registry

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Two configured registries (a: empty, b: holds the DB and the Java DB), our client to both."""
    fakes = {"a": FakeRegistry(host="a.test"), "b": FakeRegistry(host="b.test")}
    clients = {n: Registry(f.host, name=n, policy=FAST, transport=LazyTransport(f)) for n, f in fakes.items()}
    updated = NOW - timedelta(hours=3)
    trivydb.push(clients["b"], "aquasec/trivy-db", "2", trivydb.pack(updated=updated))
    scandb.push_layer(clients["b"], "aquasec/trivy-java-db", "1", trivydb.pack_java([]), scandb.JAVA_DB)
    java = json.loads(fakes["b"].manifests["aquasec/trivy-java-db"][fakes["b"].tag_map["aquasec/trivy-java-db"]["1"]][0])
    monkeypatch.setattr(scandb, "Access", fake_access(lambda reg: clients[reg.name]))

    def make(**scan):
        data = {"image": {"name": "app"},
                "registries": [{"name": "a", "url": "a.test", "auth": "none"}, {"name": "b", "url": "b.test",
                                                                                 "auth": "none"}],
                "scan": {"cache_dir": str(tmp_path / "cache"),
                         "db_repository": ["a.test/aquasec/trivy-db:2", "b.test/aquasec/trivy-db:2"],
                         "java_db_repository": ["b.test/aquasec/trivy-java-db:1"], **scan}}
        return config.parse(data)

    make.fakes = fakes
    make.cache = tmp_path / "cache"
    make.access = scandb.Access(None, {})
    make.java_manifest = java
    return make


def test_the_db_comes_from_the_first_repository_that_has_it_into_trivys_cache(world):
    cfg = world()
    info = scandb.prepare(cfg, {}, world.access, now=NOW)
    assert info.source == "b.test/aquasec/trivy-db:2" and info.version == 2
    meta = json.loads((world.cache / "db" / "metadata.json").read_text())
    assert meta["DownloadedAt"].startswith("2026-12-01T12:00:00")      # what Trivy records after a download
    assert (world.cache / "db" / "trivy.db").stat().st_size > 0
    assert [p for m, p, s in world.fakes["a"].log if "/manifests/" in p] == ["/v2/aquasec/trivy-db/manifests/2"]


def test_a_fresh_db_is_not_fetched_again(world):
    cfg = world()
    scandb.prepare(cfg, {}, world.access, now=NOW)
    for fake in world.fakes.values():
        fake.log.clear()
    assert scandb.prepare(cfg, {}, world.access, now=NOW + timedelta(minutes=30)).source == "cache"
    assert all(f.log == [] for f in world.fakes.values())


def test_a_broken_download_is_retried_then_the_next_repository_tried(world):
    cfg = world(db_repository=["b.test/aquasec/trivy-db:2"])
    layer = next(d for d, data in world.fakes["b"].blobs["aquasec/trivy-db"].items() if len(data) > 100)
    world.fakes["b"].fail("GET", rf"/blobs/{layer}", httpx.Response(503))
    assert scandb.prepare(cfg, {}, world.access, now=NOW).source == "b.test/aquasec/trivy-db:2"


def test_no_db_anywhere_names_each_repository_and_what_to_configure(world):
    cfg = world(db_repository=["a.test/aquasec/trivy-db:2"])
    with pytest.raises(trivy.NoDatabaseError) as exc:
        scandb.prepare(cfg, {}, world.access, now=NOW)
    msg = str(exc.value)
    assert exc.value.exit_code == 3 and msg.startswith("no vulnerability DB: a.test/aquasec/trivy-db:2: registry a:")
    assert "scan.db_repository" in msg and "--mirror-db" in msg


def test_nothing_answers_but_a_stale_db_is_cached(world):
    scandb.prepare(world(), {}, world.access, now=NOW)
    info = scandb.prepare(world(db_repository=["a.test/aquasec/trivy-db:2"]), {}, world.access,
                          now=NOW + timedelta(days=3))
    assert info.source == "cache"


def test_skip_db_update_never_fetches(world):
    for fake in world.fakes.values():
        fake.log.clear()
    with pytest.raises(trivy.NoDatabaseError, match="skip_db_update"):
        scandb.prepare(world(skip_db_update=True), {}, world.access, now=NOW)
    assert all(f.log == [] for f in world.fakes.values())


def test_not_a_db_artifact_is_refused_and_nothing_is_unpacked(world):
    cfg = world(db_repository=["b.test/aquasec/trivy-java-db:1"])
    with pytest.raises(trivy.NoDatabaseError, match="not a Trivy vulnerability DB artifact"):
        scandb.prepare(cfg, {}, world.access, now=NOW)
    assert not (world.cache / "db" / "trivy.db").exists()


def test_the_java_db_is_fetched_by_our_client_when_a_scan_needs_it(world):
    cfg = world()
    scandb.prepare_java(cfg, {}, world.access, now=NOW)
    assert (world.cache / "java-db" / "trivy-java.db").read_bytes().startswith(b"SQLite format 3")
    assert json.loads((world.cache / "java-db" / "metadata.json").read_text())["Version"] == 1
    world.fakes["b"].log.clear()
    scandb.prepare_java(cfg, {}, world.access, now=NOW + timedelta(minutes=5))
    assert world.fakes["b"].log == []          # fresh: no second fetch
