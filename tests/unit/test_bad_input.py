"""The bad-input corpus (issue 12): malformed configs, arguments, CI environments and registry answers.

Every case must end in one line and a distinct exit code, never a traceback: exit 2 naming the file and
field (or the argument) for input errors, exit 3 naming the registry for answers a registry should not
give; and a manifest whose bytes do not hash to the digest asked for is never accepted. Hand-written cases
plus hypothesis-generated configs; the size is printed (``bad-input corpus: N cases``).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import config
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.tools.registry import OCI_INDEX, Registry, RegistryError, digest_of
from tests.support.fakeregistry import FAST, LazyTransport

M = '[image]\nname = "app"\n'
R = '[[registries]]\nname = "r"\nurl = "ghcr.io/acme"\n'
GOOD = M + R

CONFIG_CASES = [
    ("", "image"),
    ("image = 3\n", "image"),
    ('[image]\nname = 5\n', "image.name"),
    ('[image]\nname = "App"\n', "image.name"),
    ('[image]\nname = "a b"\n', "image.name"),
    ('[image]\nname = "/abs"\n', "image.name"),
    ('[image]\nname = "app"\nplatforms = []\n', "image.platforms"),
    ('[image]\nname = "app"\nplatforms = "linux/amd64"\n', "image.platforms"),
    ('[image]\nname = "app"\nplatforms = ["linux"]\n', "image.platforms"),
    ('[image]\nname = "app"\nplatforms = ["linux/amd64", "linux/amd64"]\n', "image.platforms"),
    ('[image]\nname = "app"\nplatforms = ["Linux/AMD64!"]\n', "image.platforms"),
    ('[image]\nname = "app"\nplatforms = [1]\n', "image.platforms"),
    ('[image]\nname = "app"\nbuild_args = ["x"]\n', "image.build_args"),
    ('[image]\nname = "app"\n[image.build_args]\nX = 1\n', "image.build_args.X"),
    ('[image]\nname = "app"\n[image.build_args]\nDB_PASSWORD = "x"\n', "image.build_args.DB_PASSWORD"),
    ('[image]\nname = "app"\n[image.build_args]\nAPI_KEY = "x"\n', "image.build_args.API_KEY"),
    ('[image]\nname = "app"\n[image.secrets]\nnpm = "NPM_TOKEN"\n', "image.secrets.npm"),
    ('[image]\nname = "app"\n[image.secrets.npm]\n', "image.secrets.npm"),
    ('[image]\nname = "app"\n[image.secrets.npm]\nenv = "1X"\n', "image.secrets.npm"),
    ('[image]\nname = "app"\n[image.secrets.npm]\nenv = "X"\nextra = 1\n', "image.secrets.npm.extra"),
    ('[image]\nname = "app"\n[image.secrets."n m"]\nenv = "X"\n', "image.secrets"),
    ('[image]\nname = "app"\ncolour = "red"\n', "image.colour"),
    ('[image]\nname = "app"\ntarget = 3\n', "image.target"),
    (M + '[imagee]\nname = "x"\n', "imagee"),
    (M + 'unknown = 1\n', "unknown"),
    (M + '[tags]\nrules = "type=ref,event=branch"\n', "tags.rules"),
    (M + '[tags]\nrules = ["type=nope"]\n', "tags.rules[0]"),
    (M + '[tags]\nrules = ["type=semver"]\n', "tags.rules[0]"),
    (M + '[tags]\nrules = ["type=match,pattern=(unclosed"]\n', "tags.rules[0]"),
    (M + '[tags]\nrules = ["type=ref"]\n', "tags.rules[0]"),
    (M + '[tags]\nrules = ["type=raw"]\n', "tags.rules[0]"),
    (M + '[tags]\nrules = ["type=ref,event=branch", "priority=abc"]\n', "tags.rules[1]"),
    (M + '[tags]\nrules = ["type=sha,format=weird"]\n', "tags.rules[0]"),
    (M + '[tags]\nflavor = ["latest=sometimes"]\n', "tags.flavor[0]"),
    (M + '[tags]\nflavor = ["nonsense"]\n', "tags.flavor[0]"),
    (M + '[tags]\nshort_sha_length = "seven"\n', "tags.short_sha_length"),
    (M + '[tags]\nlabels = "x"\n', "tags.labels"),
    (M + '[[registries]]\nname = "r"\n', "registries[0].url"),
    (M + '[[registries]]\nurl = "ghcr.io"\n', "registries[0].name"),
    (M + '[[registries]]\nname = "r"\nurl = "https://ghcr.io"\n', "registries[0].url"),
    (M + '[[registries]]\nname = "r"\nurl = "ghcr.io:99999"\n', "registries[0].url"),
    (M + '[[registries]]\nname = "r"\nurl = "ghcr.io/Acme"\n', "registries[0].url"),
    (M + '[[registries]]\nname = "r"\nurl = "ghcr .io"\n', "registries[0].url"),
    (M + '[[registries]]\nname = "r"\nurl = ""\n', "registries[0].url"),
    (M + R + 'auth = "magic"\n', "registries[0].auth"),
    (M + R + 'password = "hunter2"\n', "registries[0].password"),
    (M + R + 'token = "abc"\n', "registries[0].token"),
    (M + R + 'username_env = "1A"\nauth = "env"\npassword_env = "P"\n', "registries[0]"),
    (M + R + R, "registries[1].name"),
    (M + R + '[staging]\nregistry = "nope"\n', "staging.registry"),
    (M + R + '[staging]\nregistry = 5\n', "staging.registry"),
    (M + '[build]\nmode = "parallel"\n', "build.mode"),
    (M + '[build]\ncache = "disk"\n', "build.cache"),
    (M + '[build]\ntimeout_seconds = -1\n', "build.timeout_seconds"),
    (M + '[copy]\nfailure_policy = "sometimes"\n', "copy.failure_policy"),
    (M + '[copy]\nconcurrency = 0\n', "copy.concurrency"),
    (M + '[scan]\nfail_on = "SEVERE"\n', "scan.fail_on"),
    (M + '[scan]\nmax_allowed = {CRITICAL = -1}\n', "scan.max_allowed"),
    (M + '[scan]\nmax_allowed = {BAD = 1}\n', "scan.max_allowed"),
    (M + '[scan]\ndb_repository = "x"\n', "scan.db_repository"),
    (M + '[scan]\ndb_repository = ["https://x/y"]\n', "scan.db_repository"),
    (M + '[scan]\nignore_statuses = ["nope"]\n', "scan.ignore_statuses"),
    (M + '[scan]\ntimeout_seconds = "long"\n', "scan.timeout_seconds"),
    (M + '[sign]\nkey = "-----BEGIN ENCRYPTED PRIVATE KEY-----x"\n', "sign.key"),
    (M + '[sign]\nkeyless = true\n', "sign"),
    (M + '[sign]\nkey = "awskms://"\n', "sign.key"),
    (M + '[sign]\nkey = "env://1BAD"\n', "sign.key"),
    (M + '[sign]\ntlog_upload = "maybe"\n', "sign.tlog_upload"),
    (M + '[retry]\nattempts = 0\n', "retry.attempts"),
    (M + '[retry]\nattempts = 1000\n', "retry.attempts"),
    (M + '[retry]\nbudget_seconds = 0\n', "retry.budget_seconds"),
    (M + '[retry]\ninitial_seconds = "fast"\n', "retry.initial_seconds"),
    (M + '[report]\ndir = 3\n', "report.dir"),
    (M + '[lifecycle]\nrules = [{rulePriority = 1}]\n', "lifecycle.rules[0]"),
    (M + '[lifecycle]\nrules = [{rulePriority = 1, selection = {tagStatus = "sometimes", countType = "imageCountMoreThan", countNumber = 1}, action = {type = "expire"}}]\n', "lifecycle.rules[0]"),
    (M + '[lifecycle]\nrules = [{rulePriority = 1, selection = {tagStatus = "any", countType = "imageCountMoreThan", countNumber = -3}, action = {type = "expire"}}]\n', "lifecycle.rules[0]"),
    (M + '[lifecycle]\nage_sources = ["moon"]\n', "lifecycle.age_sources"),
    (M + '[ci]\nprovider = "travis"\n', "ci"),
    (M + '[verify]\nenabled = 2\n', "verify.enabled"),
    ('[image\nname = "app"\n', "pipeline.toml"),
    ('[image]\nname = "app"\nname = "b"\n', "pipeline.toml"),
    ('[image]\nname = """unterminated\n', "pipeline.toml"),
    ('\x00\x01\x02', "pipeline.toml"),
    ('[image]\nname = "app" # ok\n[sign]\nkey = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"\n', "sign.key"),
]


ARG_CASES = [
    (["nonsense"], "nonsense"),
    (["release", "--skip", "nope"], "--skip nope"),
    (["plan", "--skip", "tags", "--skip", "bogus"], "--skip bogus"),
    (["build", "--digest-out", "d"], "--digest-out"),
    (["build", "--platform", "linux/s390x"], "--platform linux/s390x"),
    (["tags", "--format", "yaml"], "--format"),
    (["plan", "--format"], "--format"),
    (["verify"], "REF"),
    (["verify", "not a ref!"], "not a ref!"),
    (["verify", "sha256:zz"], "sha256:zz"),
    (["verify", "1.2.3", "--digest", "md5:abc"], "--digest"),
    (["registry", "frobnicate"], "frobnicate"),
    (["registry", "adduser"], "NAME"),
    (["registry", "start", "--port", "http"], "--port"),
    (["registry", "start", "--port", "70000"], "--port"),
    (["pull-secret"], "--registry"),
    (["pull-secret", "--registry", "missing"], "missing"),
    (["pull-secret", "--registry", "r", "--namespace", "Bad_NS!"], "Bad_NS!"),
    (["ci-init", "bitbucket"], "bitbucket"),
    (["ci-init"], "ci"),
    (["scan", "--report", "/nonexistent/report.json"], "/nonexistent/report.json"),
    (["scan", "--mirror-db", "https://x/y"], "--mirror-db"),
    (["prune", "--registry", "missing"], "missing"),
    (["inventory", "--registry", "missing"], "missing"),
    (["ecr", "polish"], "polish"),
    (["login", "--registry", "missing"], "missing"),
    (["release", "--from-digests", "/nonexistent/digests"], "/nonexistent/digests"),
    (["plan", "--config", "/nonexistent/pipeline.toml"], "/nonexistent/pipeline.toml"),
    (["plan", "--config", "/"], "/"),
    (["--log-format", "xml", "plan"], "--log-format"),
    (["keygen", "--output", "/nonexistent/dir/key"], "/nonexistent/dir"),
    (["rescan", "--emit-cronjob"], "--image"),
    (["rescan", "--emit-cronjob", "--image", "ghcr.io/acme/rescan:1", "--attest"], "[sign] key"),
    (["rescan", "--image", "ghcr.io/acme/rescan:1"], "--emit-cronjob"),
]

#: odd CI environments: (variables, "ok" or what the one-line error names)
CI_CASES = [
    ({"GITHUB_ACTIONS": "true"}, "ok"),
    ({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/weird/x", "GITHUB_SHA": "a" * 40}, "ok"),
    ({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/heads/fëature/ünïcode-☃", "GITHUB_SHA": "a" * 40}, "ok"),
    ({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/tags/v1.2.3", "GITHUB_SHA": "not-hex"}, "ok"),
    ({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/pull/abc/merge", "GITHUB_EVENT_NAME": "pull_request"}, "ok"),
    ({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/tags/" + "v" * 300}, "longer than the 128"),
    ({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_PATH": "/nonexistent/event.json"}, "GITHUB_EVENT_PATH"),
    ({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "schedule", "GITHUB_REF": ""}, "ok"),
    ({"GITLAB_CI": "true"}, "ok"),
    ({"GITLAB_CI": "true", "CI_COMMIT_TAG": "v1.0.0", "CI_COMMIT_SHA": "b" * 40}, "ok"),
    ({"GITLAB_CI": "true", "CI_COMMIT_BRANCH": "ünï/☃", "CI_COMMIT_SHA": "b" * 40}, "ok"),
    ({"GITLAB_CI": "true", "CI_MERGE_REQUEST_IID": "twelve", "CI_PIPELINE_SOURCE": "merge_request_event"},
     "CI_MERGE_REQUEST_IID"),
    ({"GITLAB_CI": "true", "CI_COMMIT_TIMESTAMP": "yesterday"}, "ok"),
    ({"JENKINS_URL": "http://j/", "BRANCH_NAME": "feature/x"}, "ok"),
    ({"JENKINS_URL": "http://j/", "TAG_NAME": "v2.0.0", "GIT_COMMIT": "c" * 40}, "ok"),
    ({"JENKINS_URL": "http://j/", "CHANGE_ID": "x7", "BRANCH_NAME": "PR-x7"}, "CHANGE_ID"),
    ({"JENKINS_URL": "http://j/", "PIPELINE_EVENT": "nightly"}, "PIPELINE_EVENT"),
    ({"BUILD_NUMBER": "7", "JOB_NAME": "x", "GIT_BRANCH": "origin/ünï"}, "ok"),
    ({"SOURCE_DATE_EPOCH": "abc"}, "SOURCE_DATE_EPOCH"),
    ({"SOURCE_DATE_EPOCH": "-5"}, "SOURCE_DATE_EPOCH"),
    ({"SOURCE_DATE_EPOCH": "99999999999999999999"}, "SOURCE_DATE_EPOCH"),
    ({"DOCKER_METADATA_SHORT_SHA_LENGTH": "seven"}, "DOCKER_METADATA_SHORT_SHA_LENGTH"),
    ({"DOCKER_METADATA_ANNOTATIONS_LEVELS": "manifest,,index,nonsense"}, "ok"),
    ({"PIPELINE_CONFIG": "/nonexistent.toml"}, "/nonexistent.toml"),
    ({"GITHUB_ACTIONS": "TRUE", "GITLAB_CI": "true"}, "ok"),
    ({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/tags/v1.2.3\n"}, "ok"),
    ({"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "a/b/c/d", "GITHUB_SERVER_URL": "not a url"}, "ok"),
    ({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/heads/\x00null"}, "ok"),
]

SHA = "0123456789abcdef0123456789abcdef01234567"


def _run(args: list[str], env: Mapping[str, str], cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        code = main(args, env=dict(env), stdout=out, stderr=err)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def _one_line(err: str) -> str:
    assert "Traceback" not in err and "internal error" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("pipeline: ")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


BASE_ENV = {"HOME": "/nonexistent-home", "PATH": os.environ.get("PATH", "")}


@pytest.mark.parametrize("text, field", CONFIG_CASES, ids=[f"config{i}" for i in range(len(CONFIG_CASES))])
def test_a_bad_config_is_one_line_exit_2_naming_the_field(text, field, tmp_path):
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    code, _, err = _run(["plan", "--config", str(path)], BASE_ENV, tmp_path)
    line = _one_line(err)
    assert code == 2 and str(path) in line and field in line, line


@pytest.mark.parametrize("args, named", ARG_CASES, ids=[f"args{i}" for i in range(len(ARG_CASES))])
def test_bad_arguments_are_one_line_exit_2_naming_the_argument(args, named, tmp_path):
    (tmp_path / "pipeline.toml").write_text(GOOD)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    env = {**BASE_ENV, "PIPELINE_CONFIG": str(tmp_path / "pipeline.toml"), "COSIGN_PASSWORD": "corpus-pass",
           "PIPELINE_TEST_TOKEN": "x"}
    code, _, err = _run(args, env, tmp_path)
    line = _one_line(err)
    assert code == 2 and named in line, (code, line)


@pytest.mark.parametrize("variables, expected", CI_CASES, ids=[f"ci{i}" for i in range(len(CI_CASES))])
def test_odd_ci_environments_give_tags_or_one_line_naming_the_variable(variables, expected, tmp_path):
    (tmp_path / "pipeline.toml").write_text(GOOD)
    env = {**BASE_ENV, **variables}
    env.setdefault("PIPELINE_CONFIG", str(tmp_path / "pipeline.toml"))
    code, out, err = _run(["tags", "--format", "json"], env, tmp_path)
    if expected == "ok":
        assert code == 0, err[-2000:]
        data = json.loads(out)
        assert all(t and len(t) <= 128 for t in data["tags"]), data["tags"]
    else:
        line = _one_line(err)
        assert code == 2 and expected in line, (code, line)


# --------------------------------------------------------------------------- registry answers

INDEX = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
INDEX_DIGEST = digest_of(INDEX)
OTHER = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "x": 1}).encode()


def _answer(status: int, body: bytes = b"", headers: Mapping[str, str] | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(status, content=body, headers=dict(headers or {}))
    return handler


def _redirect_loop(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v2/":
        return httpx.Response(200)
    return httpx.Response(307, headers={"Location": str(request.url)})


def _bad_token(body: bytes):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/token"'})
        if request.url.host == "auth.test":
            return httpx.Response(200, content=body)
        return httpx.Response(200, content=INDEX, headers={"Content-Type": OCI_INDEX})
    return handler


def _bad_challenge(request: httpx.Request) -> httpx.Response:
    return httpx.Response(401, headers={"WWW-Authenticate": "Bearer"})


#: (what the registry does, the verb asked, a fragment the one-line error must hold)
ANSWER_CASES = [
    ("manifest bytes that hash to another digest", _answer(200, OTHER, {"Content-Type": OCI_INDEX}), "get",
     "does not match"),
    ("not JSON where a manifest is", _answer(200, b"<html>hi</html>", {"Content-Type": OCI_INDEX}), "get", ""),
    ("truncated JSON", _answer(200, INDEX[:-5], {"Content-Type": OCI_INDEX}), "get", ""),
    ("a wrong Docker-Content-Digest", _answer(200, INDEX, {"Content-Type": OCI_INDEX,
                                                           "Docker-Content-Digest": digest_of(b"x")}), "get", ""),
    ("a redirect loop", _redirect_loop, "get", ""),
    ("500 with an HTML page", _answer(500, b"<html>oops</html>"), "get", "500"),
    ("a 418", _answer(418, b"teapot"), "get", "418"),
    ("a 404 for a blob HEAD then a 200 body", _answer(404, b""), "blob", ""),
    ("a blob whose bytes hash to another digest", _answer(200, b"not the blob"), "blob", "does not match"),
    ("a 400 for a manifest PUT", _answer(400, b'{"errors":[{"code":"MANIFEST_INVALID","message":"bad"}]}'), "put",
     "MANIFEST_INVALID"),
    ("a PUT answered with another digest", _answer(201, b"", {"Docker-Content-Digest": digest_of(b"other")}), "put",
     "stored"),
    ("a tag list that is not JSON", _answer(200, b"tags: [a, b]"), "tags", ""),
    ("a tag list of the wrong shape", _answer(200, b'{"tags": "a,b"}'), "tags", ""),
    ("a token service answering garbage", _bad_token(b"not json"), "get", "token"),
    ("a token service answering no token", _bad_token(b'{"expires_in": 60}'), "get", "token"),
    ("a Bearer challenge without a realm", _bad_challenge, "get", "realm"),
    ("429 for ever", _answer(429, b"", {"Retry-After": "1"}), "get", "429"),
    ("503 for ever", _answer(503, b""), "get", "503"),
    ("a manifest of 5 MiB", _answer(200, b"{" + b" " * (5 << 20) + b"}", {"Content-Type": OCI_INDEX}), "get", ""),
    ("a manifest listing a nonsense child", _answer(200, json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
     "manifests": [{"digest": "sha256:zz", "size": "x"}]}).encode(), {"Content-Type": OCI_INDEX}), "tree", ""),
]


def _ask(reg: Registry, verb: str) -> Any:
    if verb == "get":
        return reg.manifest_get("app", INDEX_DIGEST)
    if verb == "blob":
        return reg.blob_get("app", digest_of(b"the blob"))
    if verb == "put":
        return reg.manifest_put("app", "v1", INDEX, OCI_INDEX)
    if verb == "tags":
        return reg.tags("app")
    if verb == "tree":
        from pipeline.tools import transfer
        from pipeline.tools.oci import Layout

        return transfer.pull(reg, "app", INDEX_DIGEST, Layout.create(Path(os.environ.get("TMPDIR", "/tmp")) /
                                                                     f"corpus-{os.getpid()}"))
    raise AssertionError(verb)


@pytest.mark.parametrize("what, handler, verb, fragment", ANSWER_CASES, ids=[c[0] for c in ANSWER_CASES])
def test_a_bad_registry_answer_is_a_named_exit_3_and_a_bad_digest_is_never_accepted(what, handler, verb, fragment):
    reg = Registry("reg.test", name="reg", policy=FAST, transport=LazyTransport(handler))
    with reg, pytest.raises(RegistryError) as exc:
        result = _ask(reg, verb)
        if verb == "get":          # a body is only ever returned when it hashes to the digest asked for
            assert digest_of(result[0]) == INDEX_DIGEST
    message = str(exc.value)
    assert exc.value.exit_code == 3 and message.startswith("registry reg:") and "\n" not in message, message
    assert fragment in message, message


# --------------------------------------------------------------------------- generated configs

scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                   st.text(max_size=30), st.lists(st.text(max_size=8), max_size=3))
SECTIONS = ["image", "tags", "registries", "staging", "build", "copy", "scan", "sign", "tag", "verify", "retry",
            "report", "lifecycle", "ecr", "ci"]
KEYS = ["name", "url", "platforms", "rules", "flavor", "mode", "cache", "concurrency", "failure_policy", "fail_on",
        "key", "keyless", "attempts", "budget_seconds", "dir", "enabled", "auth", "registry", "repository",
        "db_repository", "secrets", "build_args", "timeout_seconds", "tlog_upload", "max_allowed", "labels",
        "tag_prefix", "age_sources", "provider", "nonsense"]
configs = st.dictionaries(st.sampled_from(SECTIONS), st.one_of(
    scalar, st.dictionaries(st.sampled_from(KEYS), scalar, max_size=6),
    st.lists(st.dictionaries(st.sampled_from(KEYS), scalar, max_size=4), max_size=3)), max_size=6)

GENERATED = 150


@settings(max_examples=GENERATED, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=configs)
def test_generated_configs_are_accepted_or_refused_in_one_line(data):
    try:
        config.parse(data, "generated.toml")
    except ConfigError as exc:
        message = str(exc)
        assert exc.exit_code == 2 and message.startswith("generated.toml: ") and "\n" not in message, message


def test_corpus_size():
    size = len(CONFIG_CASES) + len(ARG_CASES) + len(CI_CASES) + len(ANSWER_CASES) + GENERATED
    print(f"\nbad-input corpus: {size} cases ({len(CONFIG_CASES)} configs, {len(ARG_CASES)} argument lists,"
          f" {len(CI_CASES)} CI environments, {len(ANSWER_CASES)} registry answers, {GENERATED} generated configs)")
    assert size >= 200
