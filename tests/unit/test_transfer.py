"""Layout ⇄ registry transfers against the in-memory registry: skips, mounts, resumable chunks, lost answers."""

from __future__ import annotations

import os

import httpx
import pytest

from pipeline.tools import transfer
from pipeline.tools.oci import Layout, digest_of
from pipeline.tools.registry import RegistryError
from tests.support import layouts
from tests.support.fakeregistry import FakeRegistry, client

def image_layout(tmp_path, *, layer_size=3000, platforms=("linux/amd64", "linux/arm64"), name="img"):
    return layouts.image_layout(tmp_path / name, layer_size=layer_size, platforms=platforms)


def big_layer(fake: FakeRegistry, repo: str, size: int) -> bytes:
    return next(data for data in fake.blobs[repo].values() if len(data) == size)


def test_push_uploads_everything_children_first_and_tags_nothing(tmp_path):
    layout, digest = image_layout(tmp_path)
    fake = FakeRegistry()
    stats = transfer.push(layout, digest, client(fake), "app")
    assert stats.blobs_uploaded == 4 and stats.manifests_put == 3
    assert digest in fake.manifests["app"] and fake.tag_map.get("app", {}) == {}
    puts = [path for m, path, _ in fake.log if m == "PUT" and "/manifests/" in path]
    assert puts[-1].endswith(digest)   # the index last, after its platform manifests


def test_a_second_push_is_one_head(tmp_path):
    layout, digest = image_layout(tmp_path)
    fake = FakeRegistry()
    transfer.push(layout, digest, client(fake), "app")
    fake.log.clear()
    stats = transfer.push(layout, digest, client(fake), "app")
    assert stats.manifests_present == 1 and [m for m, _, _ in fake.log if m != "GET"] == ["HEAD"]


def test_blobs_another_repository_has_are_mounted(tmp_path):
    layout, digest = image_layout(tmp_path)
    fake = FakeRegistry()
    reg = client(fake)
    transfer.push(layout, digest, reg, "staging/app")
    stats = transfer.push(layout, digest, reg, "app", mount_from=["staging/app"])
    assert stats.blobs_mounted == 4 and stats.blobs_uploaded == 0


def test_a_chunk_whose_answer_is_lost_resumes_where_the_registry_stands(tmp_path):
    layout, digest = image_layout(tmp_path, layer_size=10_000, platforms=("linux/amd64",))
    fake = FakeRegistry()
    fake.lose_answer("PATCH", r"/blobs/uploads/.*_state=s4096")      # the registry took chunk 2, the client saw a reset
    fake.fail("PATCH", r"/blobs/uploads/", httpx.Response(503))       # and then one chunk answers 503
    transfer.push(layout, digest, client(fake), "app", chunk_size=4096)
    layer = big_layer(fake, "app", 10_000)
    assert digest_of(layer) in fake.blobs["app"] and len(layer) == 10_000
    assert [p for m, p, s in fake.log if m == "GET" and "/uploads/" in p], "the client asked where the upload stood"
    patches = [p for m, p, s in fake.log if m == "PATCH" and s == 202]
    assert len(patches) == 3   # 0-4095, 4096-8191 (lost answer, not resent), 8192-9999


def test_a_commit_whose_answer_is_lost_is_found_by_head(tmp_path):
    layout, digest = image_layout(tmp_path, layer_size=10_000, platforms=("linux/amd64",))
    fake = FakeRegistry()
    fake.lose_answer("PUT", r"/blobs/uploads/.*digest=")
    transfer.push(layout, digest, client(fake), "app", chunk_size=4096)
    assert digest in fake.manifests["app"]


def test_a_lost_session_starts_the_blob_again(tmp_path):
    layout, digest = image_layout(tmp_path, layer_size=10_000, platforms=("linux/amd64",))
    fake = FakeRegistry()
    fake.fail("PATCH", r"/blobs/uploads/.*_state=s4096", httpx.Response(503))

    def forget(request: httpx.Request) -> httpx.Response:   # the registry lost this upload session
        fake.uploads.pop(request.url.path.rsplit("/", 1)[1], None)
        return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})

    fake.fail("GET", r"/blobs/uploads/", forget)
    transfer.push(layout, digest, client(fake), "app", chunk_size=4096)
    assert len(big_layer(fake, "app", 10_000)) == 10_000
    assert len([1 for m, p, s in fake.log if m == "POST" and p.endswith("/uploads/")]) >= 3   # a second session


def test_a_registry_without_chunked_uploads_gets_whole_blobs(tmp_path):
    layout, digest = image_layout(tmp_path, layer_size=10_000, platforms=("linux/amd64",))
    fake = FakeRegistry(chunked=False)
    reg = client(fake)
    transfer.push(layout, digest, reg, "app", chunk_size=4096)
    assert len(big_layer(fake, "app", 10_000)) == 10_000 and reg._no_chunked


def test_a_failing_registry_gives_up_naming_it(tmp_path):
    layout, digest = image_layout(tmp_path, platforms=("linux/amd64",))
    fake = FakeRegistry()
    fake.fail("HEAD", r"/manifests/", httpx.Response(503), times=10)
    with pytest.raises(RegistryError) as exc:
        transfer.push(layout, digest, client(fake), "app")
    assert str(exc.value).startswith("registry fake: ") and "gave up after 3 attempts" in str(exc.value)


class _Broken(httpx.SyncByteStream):
    """A body that stops after ``cut`` bytes with a reset."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut = data, cut

    def __iter__(self):
        yield self.data[:self.cut]
        raise httpx.ReadError("connection reset by peer")


@pytest.mark.parametrize("ranges", [True, False])
def test_pull_resumes_a_broken_body_or_starts_again(tmp_path, ranges):
    src, digest = image_layout(tmp_path, layer_size=50_000, platforms=("linux/amd64",), name="src")
    fake = FakeRegistry(ranges=ranges)
    transfer.push(src, digest, client(fake), "app")
    layer = big_layer(fake, "app", 50_000)
    fake.fail("GET", rf"/blobs/{digest_of(layer)}", lambda req: httpx.Response(
        200, stream=_Broken(layer, 20_000), headers={"Content-Length": str(len(layer))}))
    dest = Layout.create(tmp_path / "dest")
    transfer.pull(client(fake), "app", digest, dest)
    assert dest.read(digest_of(layer)) == layer and dest.missing(digest) == []
    resumed = [p for m, p, s in fake.log if m == "GET" and s == 206]
    assert bool(resumed) is ranges


def test_pull_with_platforms_brings_only_their_blobs(tmp_path):
    src, digest = image_layout(tmp_path, name="src")
    fake = FakeRegistry()
    transfer.push(src, digest, client(fake), "app")
    dest = Layout.create(tmp_path / "dest")
    transfer.pull(client(fake), "app", digest, dest, platforms=["linux/arm64"])
    platforms = dest.platforms(digest)
    assert dest.missing(platforms["linux/arm64"]) == [] and dest.missing(platforms["linux/amd64"]) != []


def test_a_corrupt_blob_is_never_accepted(tmp_path):
    src, digest = image_layout(tmp_path, platforms=("linux/amd64",), name="src")
    fake = FakeRegistry()
    transfer.push(src, digest, client(fake), "app")
    layer = next(d for d, data in fake.blobs["app"].items() if len(data) == 3000)
    fake.blobs["app"][layer] = os.urandom(3000)   # the registry now serves other bytes under that digest
    dest = Layout.create(tmp_path / "dest")
    with pytest.raises(RegistryError, match="does not match its digest"):
        transfer.pull(client(fake), "app", digest, dest)
    assert not dest.has(layer) and not [p for p in dest.blob_path(layer).parent.iterdir() if p.name.startswith(".")]


def test_an_upload_counts_only_when_the_registry_serves_exactly_that_image(tmp_path):
    """The copy and staging stages read each destination back by digest: a registry that answers the PUTs
    but serves other bytes under the digest (a proxy that rewrites, a broken mirror) fails the upload."""
    from pipeline.errors import InfraError
    from pipeline.stages.staging import upload

    layout, digest = image_layout(tmp_path)
    fake = FakeRegistry()
    with client(fake) as reg:
        assert upload(reg, layout, digest, "fake", "app", concurrency=2).digest == digest
    other = FakeRegistry()
    other.fail("GET", rf"/manifests/{digest}", httpx.Response(200, content=b'{"schemaVersion": 2, "manifests": []}',
                                                              headers={"Content-Type": "application/vnd.oci.image.index.v1+json"}),
               times=20)
    with client(other) as reg, pytest.raises(InfraError, match=f"app@{digest} is not served after the upload"):
        upload(reg, layout, digest, "other", "app", concurrency=2)
