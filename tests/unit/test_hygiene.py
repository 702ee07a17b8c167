"""Registry hygiene without a registry: planning on hand-built snapshots, release facts, push-time sanity,
vendor adapters against httpx fakes, the inventory page's escaping, and the prune/inventory CLI paths
that need no registry."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from pipeline.times import parse_time
from pipeline.cli import main
from pipeline.errors import EXIT_USAGE
from pipeline.hygiene import inventory, lifecycle
from pipeline.hygiene import walker as hygiene
from pipeline.hygiene.walker import Attachment, Image, Snapshot
from pipeline.retry import RetryPolicy
from pipeline.tools import vendors
from pipeline.tools.registry import OCI_INDEX, OCI_MANIFEST, Credentials

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
FAST = RetryPolicy(attempts=2, initial_seconds=0.001, max_seconds=0.002)


def d(name: str) -> str:
    return "sha256:" + (name.encode().hex() * 64)[:64]


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def keep_newest(n: int, pattern: str = "v*") -> lifecycle.Policy:
    return lifecycle.parse_rules([{"rulePriority": 1, "selection": {
        "tagStatus": "tagged", "tagPatternList": [pattern], "countType": "imageCountMoreThan", "countNumber": n},
        "action": {"type": "expire"}}], source="t")


def snap(images: list[Image], attachments: list[Attachment] = ()) -> Snapshot:
    s = Snapshot("reg", "app", "distribution", {i.digest: i for i in images}, list(attachments))
    for a in s.attachments:
        if a.subject_present is None:
            a.subject_present = True
    return s


def index(name: str, tags: tuple[str, ...], days: float, children: tuple[str, ...]) -> Image:
    return Image(d(name), OCI_INDEX, tags, children, {f"linux/p{i}": c for i, c in enumerate(children)},
                 pushed_at=ago(days), age_source="created")


def test_an_expired_index_goes_with_its_platform_manifests_and_their_signatures():
    old = index("old", ("v1",), 10, (d("o-amd"), d("o-arm")))
    new = index("new", ("v2",), 1, (d("n-amd"), d("n-arm")))
    atts = [Attachment("sha256-old.sig", d("old-sig"), d("old"), "sig"),
            Attachment("sha256-oamd.att", d("o-amd-att"), d("o-amd"), "att"),
            Attachment("sha256-new.sig", d("new-sig"), d("new"), "sig")]
    p = hygiene.plan(snap([old, new], atts), keep_newest(1), NOW)
    assert [(r.digest, r.verdict) for r in p.rows] == [(d("old"), "expire"), (d("new"), "keep")]
    assert p.groups == [(d("old"), [
        hygiene.Deletion(d("old"), ("v1",), "index"),
        hygiene.Deletion(d("o-amd"), (), "platform manifest"), hygiene.Deletion(d("o-arm"), (), "platform manifest"),
        hygiene.Deletion(d("old-sig"), ("sha256-old.sig",), "sig"),
        hygiene.Deletion(d("o-amd-att"), ("sha256-oamd.att",), "att")])]
    assert p.rows[1].attachments == ("sha256-new.sig",)


def test_a_platform_manifest_shared_with_a_kept_index_stays():
    shared = d("shared-amd")
    old = index("old", ("v1",), 10, (shared, d("o-arm")))
    new = index("new", ("v2",), 1, (shared, d("n-arm")))
    atts = [Attachment("sha256-shared.att", d("shared-att"), shared, "att")]
    p = hygiene.plan(snap([old, new], atts), keep_newest(1), NOW)
    deleted = [x.digest for x in p.deletions()]
    assert deleted == [d("old"), d("o-arm")]   # neither the shared manifest nor its attestation


def test_a_tagged_platform_manifest_of_a_kept_index_is_kept():
    child = Image(d("child"), OCI_MANIFEST, ("candidate-x-linux-amd64",), pushed_at=ago(9), age_source="release")
    parent = index("parent", ("v9",), 1, (d("child"),))
    newer = Image(d("newer"), OCI_MANIFEST, ("candidate-y-linux-amd64",), pushed_at=ago(0.5), age_source="release")
    p = hygiene.plan(snap([child, parent, newer]), keep_newest(1, "candidate-*"), NOW)
    row = next(r for r in p.rows if r.digest == d("child"))
    assert row.verdict == "keep" and row.reason == "a platform manifest of a kept index" and not p.groups


def test_orphaned_attachments_expire_and_untagged_subjects_keep_theirs():
    img = Image(d("img"), OCI_MANIFEST, ("v1",), pushed_at=ago(1), age_source="created")
    gone = Attachment("sha256-gone.sig", d("gone-sig"), d("gone"), "sig", subject_present=False)
    fallback = Attachment("sha256-gone", d("gone-idx"), d("gone"), "referrers", (d("bundle"),), subject_present=False)
    hidden = Attachment("sha256-hidden.sig", d("hidden-sig"), d("hidden"), "sig", subject_present=True)
    p = hygiene.plan(snap([img], [gone, fallback, hidden]), keep_newest(5), NOW)
    assert [(r.kind, r.verdict) for r in p.rows] == [("image", "keep"), ("orphan sig", "expire"),
                                                     ("orphan referrers", "expire")]
    assert [x.digest for x in p.deletions()] == [d("gone-sig"), d("gone-idx"), d("bundle")]
    assert any("untagged subjects" in n for n in p.notes)


def test_plan_is_independent_of_listing_order():
    imgs = [Image(d(f"i{k}"), OCI_MANIFEST, (f"v{k}",), pushed_at=ago(k), age_source="created") for k in range(6)]
    a = hygiene.plan(snap(imgs), keep_newest(2), NOW)
    b = hygiene.plan(snap(list(reversed(imgs))), keep_newest(2), NOW)
    assert a.groups == b.groups and [r.digest for r in a.rows] == [r.digest for r in b.rows]
    assert [g for g, _ in a.groups] == [d("i5"), d("i4"), d("i3"), d("i2")]   # oldest first


def test_release_facts_from_manifests(tmp_path):
    manifest = {"digest": d("rel"), "released_at": "2025-05-01T10:00:00+00:00",
                "platforms": {"linux/amd64": d("rel-amd")},
                "candidate": {"registry": "ecr", "repository": "staging/app"},
                "registries": [{"name": "hub", "repository": "app", "digest": d("rel"),
                                "platforms": {"linux/amd64": d("rel-amd")}},
                               {"name": "ghcr", "repository": "acme/app", "digest": None}],
                "outputs": {"scan": {"digest": d("rel"), "verdict": "pass"},
                            "sign": {"digest": d("rel"), "items": [{"registry": "hub", "kind": "signature"}]}}}
    (tmp_path / "release.json").write_text(json.dumps(manifest))
    later = {**manifest, "released_at": "2025-05-03T10:00:00Z"}
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / "a.json").write_text(json.dumps(later))
    (tmp_path / "releases" / "broken.json").write_text("{")
    facts = hygiene.load_release_facts(["release.json", "releases/*.json"], tmp_path)
    when = datetime(2025, 5, 1, 10, tzinfo=timezone.utc)
    assert facts.pushed[("hub", "app", d("rel"))] == when                  # the earliest push wins
    assert facts.pushed[("ecr", "staging/app", d("rel-amd"))] == when
    assert ("ghcr", "acme/app", d("rel")) not in facts.pushed             # copy failed there
    assert facts.scanned[d("rel")] == "pass" and ("hub", d("rel")) in facts.signed
    assert len(facts.files) == 2
    secrets_only = hygiene.ReleaseFacts()
    secrets_only.add({**manifest, "outputs": {"scan": {"digest": d("rel"), "verdict": "pass",
                                                       "vulnerabilities_scanned": False}}})
    assert secrets_only.scanned == {}


@pytest.mark.parametrize("value, usable", [
    ("2025-05-01T10:00:00.123456789Z", True), ("2025-05-01T10:00:00Z", True), ("1970-01-01T00:00:00Z", False),
    ("1980-01-01T00:00:01Z", False), ("0001-01-01T00:00:00Z", False), ("2099-01-01T00:00:00Z", False),
    ("garbage", False), (None, False)])
def test_created_values_from_reproducible_builders_are_not_push_times(value, usable):
    assert (hygiene.plausible(parse_time(value), NOW) is not None) is usable


def test_subject_of_attachment_tags():
    hexd = "ab" * 32
    assert hygiene.subject_of(f"sha256-{hexd}.sig") == (f"sha256:{hexd}", "sig")
    assert hygiene.subject_of(f"sha256-{hexd}") == (f"sha256:{hexd}", "referrers")


# --------------------------------------------------------------------------- vendor adapters


def test_host_kind():
    assert vendors.host_kind("ghcr.io") == "ghcr"
    assert vendors.host_kind("123456789012.dkr.ecr.eu-west-1.amazonaws.com") == "ecr"
    assert vendors.host_kind("docker.io") == "dockerhub"
    assert vendors.host_kind("127.0.0.1:5000") == "distribution"
    assert vendors.host_kind("registry.example", auth="ecr") == "ecr"


def test_ghcr_versions_paginate_and_scopes_gate_deletes():
    calls: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.raw_path.decode().split("?")[0]))
        assert request.headers["Authorization"] == "Bearer ghp_test"
        if request.url.path.startswith("/orgs/"):
            return httpx.Response(404, json={"message": "Not Found"})
        base = "https://api.github.com/users/acme/packages/container/tools%2Fapp/versions"
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.url.params.get("page") == "2":
            return httpx.Response(200, json=[{"id": 2, "name": d("b"), "created_at": "2025-01-02T00:00:00Z",
                                              "metadata": {"container": {"tags": []}}}],
                                  headers={"X-OAuth-Scopes": "read:packages"})
        return httpx.Response(200, json=[{"id": 1, "name": d("a"), "created_at": "2025-01-01T00:00:00Z",
                                          "metadata": {"container": {"tags": ["v1"]}}}],
                              headers={"X-OAuth-Scopes": "read:packages", "Link": f'<{base}?page=2>; rel="next"'})

    g = vendors.GHCR("ghcr", Credentials("u", "ghp_test"), policy=FAST)
    g.http.client = httpx.Client(transport=httpx.MockTransport(handler))
    times = g.push_times("acme/tools/app")
    assert {k: (v.pushed_at.day, v.tags, v.version_id) for k, v in times.items()} == {
        d("a"): (1, ("v1",), "1"), d("b"): (2, (), "2")}
    assert "delete:packages" in g.can_delete("acme/tools/app")
    assert g.delete("acme/tools/app", d("b")) == "deleted"
    assert calls[-1] == ("DELETE", "/users/acme/packages/container/tools%2Fapp/versions/2")
    assert g.delete("acme/tools/app", d("unknown")) == "gone"


def test_docker_hub_push_time_is_the_first_push_of_any_tag_and_deletes_tags_first():
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.url.path == "/v2/auth/token":
            assert json.loads(request.content) == {"identifier": "me", "secret": "dckr_pat_x"}
            return httpx.Response(200, json={"access_token": "hubtoken"})
        assert request.headers["Authorization"] == "Bearer hubtoken"
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json={"next": None, "results": [
            {"name": "1.0", "digest": d("x"), "tag_last_pushed": "2025-01-05T00:00:00Z"},
            {"name": "latest", "digest": d("x"), "tag_last_pushed": "2025-03-01T00:00:00Z"}]})

    class FakeOCI:
        deleted: list[str] = []

        def manifest_delete(self, repo: str, digest: str) -> None:
            self.deleted.append(digest)

        def granted(self, repo: str, actions) -> set[str] | None:
            return None                       # the registry does not say: login working is all we know

    oci = FakeOCI()
    hub = vendors.DockerHub("hub", Credentials("me", "dckr_pat_x"), oci, policy=FAST)
    hub.http.client = httpx.Client(transport=httpx.MockTransport(handler))
    times = hub.push_times("acme/app")
    assert times[d("x")].pushed_at == datetime(2025, 1, 5, tzinfo=timezone.utc)
    assert hub.can_delete("acme/app") is None
    assert hub.delete("acme/app", d("x"), ("1.0", "latest")) == "deleted"
    assert [p for m, p in seen if m == "DELETE"] == ["/v2/repositories/acme/app/tags/1.0/",
                                                     "/v2/repositories/acme/app/tags/latest/"]
    assert oci.deleted == [d("x")]


def test_harbor_push_time_and_double_encoded_repository():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.raw_path.startswith(b"/api/v2.0/projects/proj/repositories/team%252Fapp/artifacts")
        return httpx.Response(200, json=[{"digest": d("h"), "push_time": "2025-02-02T02:02:02.000Z",
                                          "tags": [{"name": "v1"}]}])

    h = vendors.Harbor("harbor", "harbor.example", None, oci=None, policy=FAST)
    h.http.client = httpx.Client(transport=httpx.MockTransport(handler))
    assert h.push_times("proj/team/app")[d("h")].pushed_at == datetime(2025, 2, 2, 2, 2, 2, tzinfo=timezone.utc)


def test_ecr_through_the_aws_cli(monkeypatch):
    monkeypatch.setattr(vendors, "have_boto3", lambda: False)
    ran: list[list[str]] = []

    def run(argv, **kw):
        from pipeline.tools.proc import Completed

        ran.append(list(argv))
        if argv[2] == "describe-images":
            out = {"imageDetails": [{"imageDigest": d("e"), "imageTags": ["v1"], "imagePushedAt": 1735689600.0},
                                    {"imageDigest": d("u"), "imagePushedAt": "2025-01-02T00:00:00+00:00"}]}
        else:
            out = {"imageIds": [{"imageDigest": d("e")}], "failures": []}
        return Completed(tuple(argv), 0, json.dumps(out), "")

    e = vendors.ECR("ecr", "eu-west-1", registry_id="123456789012", run=run)
    times = e.push_times("app")
    assert times[d("e")].pushed_at == datetime(2025, 1, 1, tzinfo=timezone.utc) and times[d("u")].tags == ()
    assert e.delete("app", d("e")) == "deleted"
    assert ran[-1][-1] == f"imageDigest={d('e')}" and "--region" in ran[-1] and "123456789012" in ran[-1]


def test_ecr_through_boto3_against_moto():
    import boto3          # the test extra installs both: a missing one is a broken set-up, not a skip
    import moto
    env = {"AWS_ACCESS_KEY_ID": "AKIDMOTOUNIT", "AWS_SECRET_ACCESS_KEY": "moto-unit-secret", "AWS_REGION": "eu-west-1"}
    with moto.mock_aws():
        raw = boto3.client("ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
        raw.create_repository(repositoryName="team/app")
        pushed = {}
        for tag in ("v1", "v2"):
            manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(f"cfg-{tag}"), "size": 2},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(f"layer-{tag}"),
                            "size": 3}]})   # moto derives the digest from the layers
            out = raw.put_image(repositoryName="team/app", imageManifest=manifest, imageTag=tag)
            pushed[tag] = out["image"]["imageId"]["imageDigest"]
        e = vendors.ECR("ecr", "eu-west-1", env=env, policy=FAST)
        assert e.client is not None   # boto3, not the CLI
        times = e.push_times("team/app")
        assert {v.tags for v in times.values()} == {("v1",), ("v2",)}
        assert all(v.pushed_at and v.pushed_at.tzinfo for v in times.values())
        assert e.delete("team/app", pushed["v1"]) == "deleted"
        assert e.delete("team/app", pushed["v1"]) == "gone"
        assert [i["imageTags"] for i in raw.describe_images(repositoryName="team/app")["imageDetails"]] == [["v2"]]
        assert vendors.ECR("ecr", "eu-west-1", env=env, policy=FAST).push_times("no/such") == {}


def test_vendor_errors_retry_then_name_the_registry():
    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        return httpx.Response(503, json={"message": "busy"})

    g = vendors.GHCR("ghcr", Credentials("u", "t"), policy=FAST)
    g.http.client = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(vendors.VendorError, match=r"^registry ghcr: package versions of acme/app: HTTP 503.*gave up"):
        g.push_times("acme/app")
    assert len(attempts) == 2


# --------------------------------------------------------------------------- the inventory page


def test_inventory_page_escapes_everything_and_is_self_contained():
    evil = '<script>alert("x")</script>'
    e = inventory.Entry("reg<1>", "team/app", d("i"), (evil, "v1"), "index", ("linux/amd64",), signed="signed",
                        pushed_at=ago(3), age_source="release", verdict="expire", rule='#1 tagged "v*"')
    sec = inventory.RegistrySection("reg<1>", "host:5000/<ns>", "distribution", {"team/app": [e]},
                                    error=None, notes=[evil])
    page = inventory.render_html(inventory.Inventory(NOW, [sec], "key <k>", ("release",)))
    assert evil not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "reg&lt;1&gt;" in page and "key &lt;k&gt;" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page   # nothing to fetch
    assert 'class="badge b-signed"' in page and "b-expiring" in page and 'data-col="age" data-type=\'num\'' in page


# --------------------------------------------------------------------------- CLI paths without a registry


def cli(args: list[str], tmp: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(args, env={"HOME": str(tmp), "PATH": "/usr/bin:/bin"}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


CONFIG = """[image]
name = "app"
[[registries]]
name = "local"
url = "127.0.0.1:1"
auth = "none"
[lifecycle]
[[lifecycle.rules]]
rulePriority = 1
selection = { tagStatus = "tagged", tagPatternList = ["v*"], countType = "imageCountMoreThan", countNumber = 10 }
action = { type = "expire" }
"""


def test_emit_ecr_policy_writes_the_document(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(CONFIG)
    code, out, _ = cli(["prune", "--config", str(cfg), "--emit-ecr-policy", "-"], tmp_path)
    assert code == 0
    assert json.loads(out) == {"rules": [{"rulePriority": 1, "selection": {
        "tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan", "countNumber": 10},
        "action": {"type": "expire"}}]}
    code, out, _ = cli(["prune", "--config", str(cfg), "--emit-ecr-policy", str(tmp_path / "ecr.json")], tmp_path)
    assert code == 0 and "1 rule(s)" in out and json.loads((tmp_path / "ecr.json").read_text())["rules"]


def test_invalid_policy_is_exit_2_with_one_line(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(CONFIG.replace('"imageCountMoreThan", countNumber = 10',
                                  '"imageCountMoreThan", countUnit = "days", countNumber = 10'))
    for command in (["prune"], ["inventory"], ["prune", "--emit-ecr-policy", "-"]):
        code, out, err = cli([*command, "--config", str(cfg)], tmp_path)
        assert code == EXIT_USAGE and out == ""
        assert err.strip().splitlines() == [
            f"pipeline: error: {cfg}: lifecycle.rules[0].selection.countUnit: not allowed with countType"
            " imageCountMoreThan (only with sinceImagePushed)"]


def test_apply_needs_lifecycle_enabled(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(CONFIG)
    code, _, err = cli(["prune", "--config", str(cfg), "--apply"], tmp_path)
    assert code == EXIT_USAGE and "lifecycle.enabled: false, so prune only previews" in err


def test_ghcr_asks_again_before_it_calls_a_digest_gone():
    """The versions list is read once per run; an image pushed after that is not "gone" until GitHub says so."""
    pushed_later = {"now": False}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/orgs/"):
            return httpx.Response(404, json={"message": "Not Found"})
        if request.method == "DELETE":
            return httpx.Response(204)
        versions = [{"id": 1, "name": d("a"), "created_at": "2025-01-01T00:00:00Z", "metadata": {}}]
        if pushed_later["now"]:
            versions.append({"id": 7, "name": d("late"), "created_at": "2025-01-03T00:00:00Z", "metadata": {}})
        return httpx.Response(200, json=versions, headers={"X-OAuth-Scopes": "delete:packages"})

    g = vendors.GHCR("ghcr", Credentials("u", "ghp_test"), policy=FAST)
    g.http.client = httpx.Client(transport=httpx.MockTransport(handler))
    assert set(g.push_times("acme/app")) == {d("a")}
    pushed_later["now"] = True
    assert g.delete("acme/app", d("late")) == "deleted"
    assert g.delete("acme/app", d("never")) == "gone"


def test_after_deleting_every_digest_is_asked_for_again_tagged_or_not():
    class Client:
        def __init__(self, served):
            self.served = served

        def tags(self, repo):
            return ["v1"]

        def manifest_head(self, repo, digest):
            return object() if digest in self.served else None

    done = [hygiene.Deleted("r", "app", d("tagged"), ("v1",), "image", "deleted"),
            hygiene.Deleted("r", "app", d("untagged"), (), "image", "deleted"),
            hygiene.Deleted("r", "app", d("ok"), (), "image", "gone")]
    found = hygiene.leftovers([], done, {"r": Client({d("untagged")})})
    assert found == ["r: app:v1", f"r: app@{d('untagged')} is still served"]


def test_a_plain_registry_says_per_rule_that_untagged_rules_see_only_tagged_images():
    """registry:2 lists no untagged manifest: the preview says so for each rule that would need them."""
    untagged_rule = lifecycle.parse_rules([{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType":
                                            "sinceImagePushed", "countUnit": "days", "countNumber": 7},
                                            "action": {"type": "expire"}}], source="t")
    s = snap([Image(d("a"), OCI_INDEX, ("v1",), pushed_at=ago(30))])
    s.notes.append(hygiene.UNTAGGED_UNLISTED)         # what the walker notes for a distribution registry
    p = hygiene.plan(s, untagged_rule, NOW)
    assert any(n.startswith('rule 1 (tagStatus "untagged"): this registry cannot list untagged') for n in p.notes)
    assert not any(n.startswith("rule ") for n in hygiene.plan(s, keep_newest(1), NOW).notes)


def _jwt(claims: dict) -> str:
    import base64 as b64

    def part(data: dict) -> str:
        return b64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


@pytest.mark.parametrize("actions, ok", [(["pull"], False), (["pull", "push"], False), (["pull", "delete"], True),
                                         (["*"], True)])
def test_docker_hub_preflight_asks_what_the_token_may_do(actions, ok):
    """A read/write token logs in fine, then --apply would delete tags and fail on the digest: the preflight
    reads the registry token's access claim instead."""
    from pipeline.tools.registry import Registry

    def registry(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/token",'
                                                                    'service="registry.test"'})
        if request.url.host == "auth.test":
            scope = request.url.params.get("scope")
            repo = scope.split(":")[1]
            return httpx.Response(200, json={"token": _jwt({"access": [{"type": "repository", "name": repo,
                                                                        "actions": actions}]})})
        return httpx.Response(404)

    def hub_api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": "hubtoken"})

    oci = Registry("registry.test", name="hub", credentials=Credentials("me", "dckr_pat_x"), policy=FAST,
                   transport=httpx.MockTransport(registry))
    hub = vendors.DockerHub("hub", Credentials("me", "dckr_pat_x"), oci, policy=FAST)
    hub.http.client = httpx.Client(transport=httpx.MockTransport(hub_api))
    reason = hub.can_delete("acme/app")
    assert (reason is None) is ok, reason
    if not ok:
        assert '"Read, Write, Delete"' in reason and "dckr_pat_x" not in reason
