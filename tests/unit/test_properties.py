"""Properties (hypothesis): tag charset, and CI parity of tags and labels.

The same commit and ref, described the way GitHub Actions, GitLab CI, Jenkins
and a local git checkout describe it, must give identical tags and labels
(design.md invariant 3).
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.metadata.ci import detect
from pipeline.metadata.rules import TagOptions, compute, parse_flavor, parse_rules
from tests.support.fakegit import FakeGit

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
URL = "https://git.example.com/acme/widget"
RULES = [
    "type=schedule",
    "type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}",
    "type=pep440,pattern={{version}}",
    'type=match,"pattern=^v(\\d+)",group=1',
    "type=edge", "type=ref,event=branch", "type=ref,event=tag", "type=ref,event=pr",
    "type=raw,value=default-{{is_default_branch}}",
    "type=raw,value=on-{{branch}}{{tag}}-{{base_ref}}",
    "type=raw,value={{commit_date 'YYYYMMDD-HHmm'}}",
    "type=sha", "type=sha,format=long,prefix=full-",
]
LABELS = ["org.example.ref={{branch}}{{tag}}", "org.example.default={{is_default_branch}}"]

name_chars = st.sampled_from(string.ascii_letters + string.digits + "-_./#+@")
ref_names = st.text(name_chars, min_size=1, max_size=24).filter(
    lambda s: not s.startswith(("-", "/", ".")) and not s.endswith(("/", ".")) and "//" not in s and ".." not in s)
versions = st.builds(lambda a, b, c, pre: f"v{a}.{b}.{c}" + (f"-rc.{pre}" if pre else ""),
                     st.integers(0, 30), st.integers(0, 30), st.integers(0, 30), st.one_of(st.none(), st.integers(1, 9)))
shas = st.text("0123456789abcdef", min_size=40, max_size=40)
times = st.integers(0, 10 ** 9).map(lambda s: datetime(2015, 1, 1, tzinfo=UTC) + timedelta(seconds=s))


@st.composite
def situations(draw):
    kind = draw(st.sampled_from(["branch", "default-branch", "tag", "pr"]))
    default = draw(ref_names)
    if kind == "default-branch":
        name = default
    elif kind == "tag":
        name = draw(st.one_of(versions, ref_names))
    else:
        name = draw(ref_names.filter(lambda n: n != default))
    return {"kind": kind, "name": name, "default": default, "sha": draw(shas), "time": draw(times),
            "pr": draw(st.integers(1, 99999)), "base": draw(ref_names)}


def github_env(s, tmp: Path) -> dict[str, str]:
    payload: dict = {"repository": {"default_branch": s["default"], "html_url": URL, "name": "widget"},
                     "head_commit": {"id": s["sha"], "timestamp": s["time"].isoformat()}}
    ref = {"branch": f"refs/heads/{s['name']}", "default-branch": f"refs/heads/{s['name']}",
           "tag": f"refs/tags/{s['name']}", "pr": f"refs/pull/{s['pr']}/merge"}[s["kind"]]
    event = "pull_request" if s["kind"] == "pr" else "push"
    if s["kind"] == "pr":
        payload["number"] = s["pr"]
        payload["pull_request"] = {"number": s["pr"], "base": {"ref": s["base"]}, "head": {"sha": s["sha"]}}
    path = tmp / "event.json"
    path.write_text(json.dumps(payload))
    return {"GITHUB_ACTIONS": "true", "GITHUB_REF": ref, "GITHUB_SHA": s["sha"], "GITHUB_EVENT_NAME": event,
            "GITHUB_EVENT_PATH": str(path), "GITHUB_REPOSITORY": "acme/widget"}


def gitlab_env(s) -> dict[str, str]:
    env = {"GITLAB_CI": "true", "CI_COMMIT_SHA": s["sha"], "CI_DEFAULT_BRANCH": s["default"],
           "CI_PROJECT_URL": URL, "CI_PROJECT_NAME": "widget", "CI_PIPELINE_SOURCE": "push",
           "CI_COMMIT_TIMESTAMP": s["time"].isoformat()}
    if s["kind"] == "tag":
        env["CI_COMMIT_TAG"] = s["name"]
    elif s["kind"] == "pr":
        env.update({"CI_MERGE_REQUEST_IID": str(s["pr"]), "CI_PIPELINE_SOURCE": "merge_request_event",
                    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": s["base"]})
    else:
        env["CI_COMMIT_BRANCH"] = s["name"]
    return env


def jenkins_env(s) -> dict[str, str]:
    env = {"JENKINS_URL": "https://ci.example.com/", "GIT_COMMIT": s["sha"], "GIT_URL": URL + ".git",
           "BUILD_NUMBER": "7"}
    if s["kind"] == "tag":
        env.update({"TAG_NAME": s["name"], "BRANCH_NAME": s["name"]})
    elif s["kind"] == "pr":
        env.update({"CHANGE_ID": str(s["pr"]), "BRANCH_NAME": f"PR-{s['pr']}", "CHANGE_TARGET": s["base"]})
    else:
        env["BRANCH_NAME"] = s["name"]
        if s["kind"] == "default-branch":
            env["BRANCH_IS_PRIMARY"] = "true"
    return env


def fake_git(s, *, local: bool) -> FakeGit:
    git = FakeGit(sha=s["sha"], times={s["sha"]: s["time"]}, origin_head=s["default"], url=URL + ".git",
                  top="/src/widget")
    if local:
        if s["kind"] == "tag":
            git.symbolic, git.tags, git.decorations = None, (s["name"],), (f"tag: {s['name']}",)
        elif s["kind"] == "pr":
            git.symbolic, git.tags, git.decorations = None, (), (f"pull/{s['pr']}/merge",)
        else:
            git.symbolic = f"refs/heads/{s['name']}"
    return git


def result(ci):
    return compute(parse_rules(RULES), parse_flavor([]), ci, TagOptions(now=NOW), labels=LABELS)


def comparable(r) -> tuple:
    return (r.version, tuple(r.tags), r.latest, tuple(sorted(r.labels.items())))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=situations())
def test_same_commit_and_ref_gives_identical_tags_and_labels_on_every_ci(s, tmp_path):
    github = result(detect(github_env(s, tmp_path)))
    gitlab = result(detect(gitlab_env(s)))
    jenkins = result(detect(jenkins_env(s), git=fake_git(s, local=False)))
    outputs = {"github": comparable(github), "gitlab": comparable(gitlab), "jenkins": comparable(jenkins)}
    if s["kind"] != "pr":  # a laptop has no PR number to offer beyond a fetched pull/N/merge ref
        outputs["local"] = comparable(result(detect({}, git=fake_git(s, local=True))))
    else:
        outputs["local"] = comparable(result(detect({}, git=fake_git(s, local=True), default_branch=s["default"])))
    first = outputs["github"]
    for provider, value in outputs.items():
        if s["kind"] == "pr" and provider == "local":
            # base_ref is unknown locally: compare the tags that do not use it
            assert value[1][:1] == first[1][:1], provider
            continue
        assert value == first, f"{provider} differs from github for {s}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=situations(), prefix=st.text(min_size=0, max_size=8), suffix=st.text(min_size=0, max_size=8),
       raw=st.text(min_size=1, max_size=30))
def test_emitted_tags_only_use_the_docker_tag_charset(s, prefix, suffix, raw, tmp_path):
    flavor_prefix = prefix.replace('"', "").replace(",", "").replace("=", "")
    flavor_suffix = suffix.replace('"', "").replace(",", "").replace("=", "")
    rules = RULES + ['"type=raw,value=' + raw.replace('"', '""') + '"']
    flavor = [f'"prefix={flavor_prefix}"', f'"suffix={flavor_suffix}"']
    try:
        parsed = parse_rules(rules)
    except ValueError:
        return  # a value Handlebars cannot parse is a config error, checked elsewhere
    try:
        r = compute(parsed, parse_flavor(flavor), detect(github_env(s, tmp_path)), TagOptions(now=NOW))
    except ValueError:
        return
    for tag in r.tags:
        assert tag and all(c in string.ascii_letters + string.digits + "._-" for c in tag), tag
