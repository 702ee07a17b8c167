"""CI detection: every provider and event, fed as env dicts (plus payload files).

Scenarios follow docker/metadata-action's fixtures and the CI variable facts in
specs/tags.md §9-§10. A fake GitReader stands in for git, except in the tests
at the end that run the real git binary in a temporary repository.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.metadata.ci import CIInfo, detect, detect_provider, normalize_repo_url, ref_from_decorations, strip_remote
from pipeline.tools.git import Git, GitReader

SHA = "860c1904a1ce19322e91ac35af1ab07466440c37"          # pushed commit
MERGE_SHA = "a9c8c5828b91b6b1bbe9ffa9ab0bb7a4bd3d0e01"    # GitHub's PR test-merge commit
HEAD_SHA = "3370e228f2e7b6b0d0f2f29b4d6f5b8ee1b1a7c2"     # PR head commit
OTHER_SHA = "0123456789abcdef0123456789abcdef01234567"
T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
GIT_TIME = datetime(2020, 1, 1, tzinfo=UTC)
URL = "https://github.com/acme/widget"


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

from tests.support.fakegit import FakeGit  # noqa: E402

NO_REPO = FakeGit(symbolic=None, decorations=None, tags=None, sha=None, times={})


def repository(**over: Any) -> dict[str, Any]:
    repo = {
        "name": "widget",
        "full_name": "acme/widget",
        "html_url": URL,
        "default_branch": "main",
        "description": "A widget",
        "license": {"key": "apache-2.0", "spdx_id": "Apache-2.0"},
    }
    repo.update(over)
    return repo


def github_env(tmp_path: Path, event_name: str, ref: str, sha: str = SHA,
               payload: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event_name,
        "GITHUB_REF": ref,
        "GITHUB_SHA": sha,
        "GITHUB_REPOSITORY": "acme/widget",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "123456789",
        "GITHUB_REF_TYPE": "tag" if ref.startswith("refs/tags/") else "branch",
    }
    if payload is not None:
        path = tmp_path / "event.json"
        path.write_text(json.dumps(payload), encoding="utf-8")
        env["GITHUB_EVENT_PATH"] = str(path)
    env.update(extra)
    return env


def pr_payload(number: int = 15, base: str = "main", head_sha: str = HEAD_SHA) -> dict[str, Any]:
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"ref": "feature", "sha": head_sha},
            "base": {"ref": base, "sha": SHA},
        },
        "repository": repository(),
    }


def gitlab_env(**extra: str) -> dict[str, str]:
    env = {
        "GITLAB_CI": "true",
        "CI": "true",
        "CI_COMMIT_SHA": SHA,
        "CI_COMMIT_SHORT_SHA": SHA[:8],
        "CI_DEFAULT_BRANCH": "main",
        "CI_COMMIT_TIMESTAMP": "2024-05-06T07:08:09+02:00",
        "CI_PROJECT_URL": "https://gitlab.example.com/acme/widget",
        "CI_PROJECT_NAME": "widget",
        "CI_PROJECT_DESCRIPTION": "A widget",
        "CI_PIPELINE_ID": "987",
        "CI_PIPELINE_IID": "12",
    }
    env.update(extra)
    return env


def jenkins_env(**extra: str) -> dict[str, str]:
    env = {
        "JENKINS_URL": "https://jenkins.example.com/",
        "JOB_NAME": "widget/main",
        "BUILD_NUMBER": "42",
        "BUILD_ID": "42",
        "GIT_COMMIT": SHA,
        "GIT_URL": "git@github.com:acme/widget.git",
    }
    env.update(extra)
    return env


# ---------------------------------------------------------------------------
# Provider detection
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "provider"), [
    ({"GITHUB_ACTIONS": "true"}, "github"),
    ({"GITHUB_ACTIONS": "true", "GITLAB_CI": "true", "JENKINS_URL": "x"}, "github"),
    ({"GITLAB_CI": "true", "JENKINS_URL": "x"}, "gitlab"),
    ({"JENKINS_URL": "https://ci/"}, "jenkins"),
    ({"BUILD_NUMBER": "3", "JOB_NAME": "job"}, "jenkins"),
    ({"BUILD_ID": "3", "JOB_NAME": "job"}, "jenkins"),
    ({"BUILD_NUMBER": "3"}, "local"),
    ({"JOB_NAME": "job"}, "local"),
    ({"GITHUB_ACTIONS": "false", "GITLAB_CI": ""}, "local"),
    ({}, "local"),
])
def test_provider_detection_order(env: dict[str, str], provider: str) -> None:
    assert detect_provider(env) == provider


def test_detect_reads_only_the_given_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_REF", "refs/heads/leak")
    info = detect({})
    assert info.provider == "local"
    assert info.ref == ""


# ---------------------------------------------------------------------------
# GitHub Actions
# ---------------------------------------------------------------------------

def test_github_push_branch(tmp_path: Path) -> None:
    payload = {
        "ref": "refs/heads/dev",
        "after": SHA,
        "head_commit": {"id": SHA, "timestamp": "2024-05-06T07:08:09+02:00"},
        "commits": [{"id": SHA, "timestamp": "2024-05-06T07:08:09+02:00"}],
        "repository": repository(),
    }
    info = detect(github_env(tmp_path, "push", "refs/heads/dev", payload=payload))
    assert info == CIInfo(
        provider="github", event="push", event_name="push", ref="refs/heads/dev", sha=SHA,
        pr_number=None, default_branch="main", base_ref="", commit_time=T0, run_id="123456789",
        repository_url=URL, repository_name="widget", description="A widget", license="Apache-2.0",
    )
    assert info.commit_time is not None and info.commit_time.utcoffset() == timedelta(hours=2)


def test_github_push_tag(tmp_path: Path) -> None:
    payload = {"ref": "refs/tags/v1.2.3", "base_ref": "refs/heads/main", "repository": repository()}
    info = detect(github_env(tmp_path, "push", "refs/tags/v1.2.3", payload=payload))
    assert (info.event, info.event_name, info.ref) == ("tag", "push", "refs/tags/v1.2.3")
    assert info.base_ref == "main"
    assert info.pr_number is None
    assert info.default_branch == "main"


def test_github_push_tag_without_base_ref(tmp_path: Path) -> None:
    payload = {"ref": "refs/tags/v1.2.3", "base_ref": None, "repository": repository()}
    info = detect(github_env(tmp_path, "push", "refs/tags/v1.2.3", payload=payload))
    assert info.base_ref == ""


def test_github_pull_request_uses_the_merge_commit(tmp_path: Path) -> None:
    env = github_env(tmp_path, "pull_request", "refs/pull/15/merge", sha=MERGE_SHA, payload=pr_payload())
    assert env["GITHUB_REF_TYPE"] == "branch"  # as GitHub sets it on PRs: must not matter
    info = detect(env)
    assert info.event == "pull_request"
    assert info.event_name == "pull_request"
    assert info.ref == "refs/pull/15/merge"
    assert info.sha == MERGE_SHA
    assert info.pr_number == 15
    assert info.base_ref == "main"
    assert info.default_branch == "main"


@pytest.mark.parametrize("value", ["true", "TRUE", "True", " true "])
def test_github_pull_request_head_sha_from_env(tmp_path: Path, value: str) -> None:
    env = github_env(tmp_path, "pull_request", "refs/pull/15/merge", sha=MERGE_SHA, payload=pr_payload(),
                     DOCKER_METADATA_PR_HEAD_SHA=value)
    info = detect(env)
    assert info.sha == HEAD_SHA
    assert info.ref == "refs/pull/15/merge"


@pytest.mark.parametrize("value", ["false", "", "1", "yes"])
def test_github_pull_request_head_sha_off(tmp_path: Path, value: str) -> None:
    env = github_env(tmp_path, "pull_request", "refs/pull/15/merge", sha=MERGE_SHA, payload=pr_payload(),
                     DOCKER_METADATA_PR_HEAD_SHA=value)
    assert detect(env).sha == MERGE_SHA


def test_github_pr_head_sha_parameter_wins_over_env(tmp_path: Path) -> None:
    on = github_env(tmp_path, "pull_request", "refs/pull/15/merge", sha=MERGE_SHA, payload=pr_payload(),
                    DOCKER_METADATA_PR_HEAD_SHA="true")
    off = {k: v for k, v in on.items() if k != "DOCKER_METADATA_PR_HEAD_SHA"}
    assert detect(on, pr_head_sha=False).sha == MERGE_SHA
    assert detect(off, pr_head_sha=True).sha == HEAD_SHA


def test_github_pr_head_sha_ignored_outside_pull_requests(tmp_path: Path) -> None:
    payload = {"repository": repository(), "pull_request": {"head": {"sha": HEAD_SHA}}}
    env = github_env(tmp_path, "push", "refs/heads/main", payload=payload)
    assert detect(env, pr_head_sha=True).sha == SHA


def test_github_pr_head_sha_without_head_in_payload_keeps_github_sha(tmp_path: Path) -> None:
    payload = {"number": 15, "repository": repository()}
    env = github_env(tmp_path, "pull_request", "refs/pull/15/merge", sha=MERGE_SHA, payload=payload)
    assert detect(env, pr_head_sha=True).sha == MERGE_SHA


def test_github_pull_request_target_rewrites_the_ref(tmp_path: Path) -> None:
    # GITHUB_REF/GITHUB_SHA are the base branch and its tip on pull_request_target
    env = github_env(tmp_path, "pull_request_target", "refs/heads/main", sha=SHA, payload=pr_payload(number=8))
    info = detect(env)
    assert info.ref == "refs/pull/8/merge"
    assert info.sha == SHA
    assert info.event == "pull_request"
    assert info.event_name == "pull_request_target"
    assert info.pr_number == 8
    assert info.base_ref == "main"
    assert detect(env, pr_head_sha=True).sha == HEAD_SHA


def test_github_pull_request_target_without_number_is_a_config_error(tmp_path: Path) -> None:
    env = github_env(tmp_path, "pull_request_target", "refs/heads/main", payload={"repository": repository()})
    with pytest.raises(ConfigError, match="pull_request_target"):
        detect(env)


def test_github_pr_number_from_pull_request_object(tmp_path: Path) -> None:
    payload = {"pull_request": {"number": 31, "base": {"ref": "dev"}}, "repository": repository()}
    info = detect(github_env(tmp_path, "pull_request_review", "refs/pull/31/merge", payload=payload))
    assert (info.event, info.pr_number, info.base_ref) == ("pull_request", 31, "dev")


def test_github_pr_number_from_ref_without_payload(tmp_path: Path) -> None:
    env = github_env(tmp_path, "pull_request", "refs/pull/9/merge", GITHUB_BASE_REF="main")
    info = detect(env)
    assert info.pr_number == 9
    assert info.base_ref == "main"  # GITHUB_BASE_REF when the payload has none


def test_github_closed_pull_request_keeps_the_branch_ref(tmp_path: Path) -> None:
    # "for a merged PR, GITHUB_REF is the branch merged into" (spec §10)
    payload = {**pr_payload(number=5), "action": "closed"}
    info = detect(github_env(tmp_path, "pull_request", "refs/heads/main", payload=payload))
    assert info.ref == "refs/heads/main"
    assert info.event == "pull_request"
    assert info.pr_number == 5
    assert info.base_ref == ""  # metadata-action: only on refs/pull/ refs


def test_github_release_is_a_tag(tmp_path: Path) -> None:
    payload = {"action": "published", "release": {"tag_name": "v1.1.1"}, "repository": repository()}
    info = detect(github_env(tmp_path, "release", "refs/tags/v1.1.1", payload=payload))
    assert (info.event, info.event_name, info.ref, info.pr_number) == ("tag", "release", "refs/tags/v1.1.1", None)


def test_github_schedule_payload_has_no_default_branch(tmp_path: Path) -> None:
    env = github_env(tmp_path, "schedule", "refs/heads/main", payload={"schedule": "0 4 * * *"})
    info = detect(env)
    assert (info.event, info.event_name, info.ref) == ("schedule", "schedule", "refs/heads/main")
    assert info.default_branch is None
    # still a repository URL and name, from GITHUB_SERVER_URL / GITHUB_REPOSITORY
    assert (info.repository_url, info.repository_name) == (URL, "widget")
    assert info.description == "" and info.license == ""


def test_github_schedule_default_branch_from_git_or_config(tmp_path: Path) -> None:
    env = github_env(tmp_path, "schedule", "refs/heads/main", payload={"schedule": "0 4 * * *"})
    assert detect(env, git=FakeGit(origin_head="trunk")).default_branch == "trunk"
    assert detect(env, git=FakeGit(origin_head="trunk"), default_branch="main").default_branch == "main"


def test_github_workflow_dispatch_is_manual(tmp_path: Path) -> None:
    payload = {"inputs": {}, "ref": "refs/heads/main", "repository": repository()}
    info = detect(github_env(tmp_path, "workflow_dispatch", "refs/heads/main", payload=payload))
    assert (info.event, info.event_name, info.ref) == ("manual", "workflow_dispatch", "refs/heads/main")


def test_github_workflow_dispatch_on_a_tag_keeps_the_tag_ref(tmp_path: Path) -> None:
    info = detect(github_env(tmp_path, "workflow_dispatch", "refs/tags/v2.0.0", payload={}))
    assert (info.event, info.ref) == ("manual", "refs/tags/v2.0.0")


@pytest.mark.parametrize(("event_name", "ref", "event"), [
    ("create", "refs/tags/v1.0.0", "tag"),
    ("create", "refs/heads/new", "push"),
    ("merge_group", "refs/heads/gh-readonly-queue/main/pr-1-abc", "push"),
    ("repository_dispatch", "refs/heads/main", "manual"),
    ("issue_comment", "refs/heads/main", "push"),
    ("", "", "push"),
])
def test_github_other_events_classified_by_ref(tmp_path: Path, event_name: str, ref: str, event: str) -> None:
    info = detect(github_env(tmp_path, event_name, ref))
    assert info.event == event
    assert info.event_name == event_name
    assert info.pr_number is None


def test_github_commit_time_from_commits_list(tmp_path: Path) -> None:
    payload = {
        "head_commit": {"id": OTHER_SHA, "timestamp": "2001-01-01T00:00:00Z"},
        "commits": [{"id": OTHER_SHA, "timestamp": "2001-01-01T00:00:00Z"},
                    {"id": SHA, "timestamp": "2024-05-06T05:08:09Z"}],
    }
    info = detect(github_env(tmp_path, "push", "refs/heads/main", payload=payload))
    assert info.commit_time == T0


def test_github_commit_time_unknown_without_git(tmp_path: Path) -> None:
    info = detect(github_env(tmp_path, "pull_request", "refs/pull/15/merge", payload=pr_payload()))
    assert info.commit_time is None


def test_github_git_fills_only_what_is_missing(tmp_path: Path) -> None:
    payload = {"head_commit": {"id": SHA, "timestamp": "2024-05-06T07:08:09+02:00"},
               "repository": repository()}
    fake = FakeGit(sha=OTHER_SHA, times={SHA: GIT_TIME, OTHER_SHA: GIT_TIME}, origin_head="trunk",
                   url="https://elsewhere.example/x/y.git", symbolic="refs/heads/other")
    info = detect(github_env(tmp_path, "push", "refs/heads/main", payload=payload), git=fake)
    assert (info.sha, info.ref, info.default_branch, info.commit_time) == (SHA, "refs/heads/main", "main", T0)
    assert (info.repository_url, info.repository_name) == (URL, "widget")


def test_github_commit_time_from_git_when_payload_lacks_it(tmp_path: Path) -> None:
    env = github_env(tmp_path, "pull_request", "refs/pull/15/merge", sha=MERGE_SHA, payload=pr_payload())
    fake = FakeGit(sha=MERGE_SHA, times={MERGE_SHA: GIT_TIME})
    assert detect(env, git=fake).commit_time == GIT_TIME
    # the PR head is usually not in a merge checkout: unknown, not the wrong commit's time
    assert detect(env, git=fake, pr_head_sha=True).commit_time is None


def test_github_repository_url_never_carries_credentials(tmp_path: Path) -> None:
    env = github_env(tmp_path, "push", "refs/heads/main", GITHUB_SERVER_URL="https://x:ghs_SECRET@ghe.example.com/")
    info = detect(env)
    assert info.repository_url == "https://ghe.example.com/acme/widget"
    assert "SECRET" not in json.dumps(info.to_dict())


def test_github_payload_nulls_are_empty(tmp_path: Path) -> None:
    payload = {"repository": repository(description=None, license=None, default_branch=None)}
    info = detect(github_env(tmp_path, "push", "refs/heads/main", payload=payload))
    assert (info.description, info.license, info.default_branch) == ("", "", None)


def test_github_event_path_unset_or_empty_means_no_payload(tmp_path: Path) -> None:
    env = github_env(tmp_path, "push", "refs/heads/main", GITHUB_EVENT_PATH="")
    info = detect(env)
    assert (info.ref, info.sha, info.default_branch, info.repository_url) == ("refs/heads/main", SHA, None, URL)


def test_github_event_path_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    env = github_env(tmp_path, "push", "refs/heads/main", GITHUB_EVENT_PATH=str(missing))
    with pytest.raises(ConfigError) as err:
        detect(env)
    assert "GITHUB_EVENT_PATH" in str(err.value) and str(missing) in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '"text"'])
def test_github_event_path_bad_content_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "event.json"
    path.write_text(content, encoding="utf-8")
    env = github_env(tmp_path, "push", "refs/heads/main", GITHUB_EVENT_PATH=str(path))
    with pytest.raises(ConfigError, match="GITHUB_EVENT_PATH"):
        detect(env)


def test_github_event_path_directory_is_a_config_error(tmp_path: Path) -> None:
    env = github_env(tmp_path, "push", "refs/heads/main", GITHUB_EVENT_PATH=str(tmp_path))
    with pytest.raises(ConfigError, match=str(tmp_path)):
        detect(env)


# ---------------------------------------------------------------------------
# GitLab CI
# ---------------------------------------------------------------------------

def test_gitlab_branch_push() -> None:
    info = detect(gitlab_env(CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="feature/x", CI_COMMIT_REF_NAME="feature/x"))
    assert info == CIInfo(
        provider="gitlab", event="push", event_name="push", ref="refs/heads/feature/x", sha=SHA,
        pr_number=None, default_branch="main", base_ref="", commit_time=T0, run_id="987",
        repository_url="https://gitlab.example.com/acme/widget", repository_name="widget",
        description="A widget", license="",
    )


def test_gitlab_never_uses_the_8_char_short_sha() -> None:
    info = detect(gitlab_env(CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="main"))
    assert len(info.sha) == 40 and info.sha == SHA


@pytest.mark.parametrize("source", ["push", "web", "api", "trigger", "pipeline"])
def test_gitlab_tag_pipeline_is_always_a_tag(source: str) -> None:
    env = gitlab_env(CI_PIPELINE_SOURCE=source, CI_COMMIT_TAG="v1.2.3", CI_COMMIT_REF_NAME="v1.2.3")
    info = detect(env)
    assert (info.event, info.event_name, info.ref) == ("tag", source, "refs/tags/v1.2.3")
    assert info.pr_number is None and info.base_ref == ""


def test_gitlab_merge_request() -> None:
    env = gitlab_env(
        CI_PIPELINE_SOURCE="merge_request_event",
        CI_MERGE_REQUEST_IID="42",
        CI_MERGE_REQUEST_ID="987654",  # instance-wide id: not the number in the URL
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
        CI_MERGE_REQUEST_SOURCE_BRANCH_NAME="feature",
        CI_MERGE_REQUEST_REF_PATH="refs/merge-requests/42/head",
        CI_COMMIT_REF_NAME="feature",
    )
    info = detect(env)
    assert (info.event, info.event_name) == ("pull_request", "merge_request_event")
    assert (info.ref, info.pr_number, info.base_ref, info.sha) == ("refs/pull/42/merge", 42, "main", SHA)


def test_gitlab_merged_results_pipeline_head_sha() -> None:
    env = gitlab_env(CI_PIPELINE_SOURCE="merge_request_event", CI_MERGE_REQUEST_IID="42",
                     CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main", CI_COMMIT_SHA=MERGE_SHA,
                     CI_MERGE_REQUEST_SOURCE_BRANCH_SHA=HEAD_SHA)
    assert detect(env).sha == MERGE_SHA
    assert detect(env, pr_head_sha=True).sha == HEAD_SHA
    assert detect({**env, "DOCKER_METADATA_PR_HEAD_SHA": "true"}).sha == HEAD_SHA


def test_gitlab_merge_request_head_sha_empty_keeps_commit_sha() -> None:
    env = gitlab_env(CI_PIPELINE_SOURCE="merge_request_event", CI_MERGE_REQUEST_IID="42",
                     CI_MERGE_REQUEST_SOURCE_BRANCH_SHA="")
    assert detect(env, pr_head_sha=True).sha == SHA


def test_gitlab_external_pull_request() -> None:
    env = gitlab_env(CI_PIPELINE_SOURCE="external_pull_request_event", CI_EXTERNAL_PULL_REQUEST_IID="7",
                     CI_EXTERNAL_PULL_REQUEST_TARGET_BRANCH_NAME="develop", CI_COMMIT_BRANCH="feature")
    info = detect(env)
    assert (info.event, info.ref, info.pr_number, info.base_ref) == ("pull_request", "refs/pull/7/merge", 7, "develop")


def test_gitlab_schedule() -> None:
    info = detect(gitlab_env(CI_PIPELINE_SOURCE="schedule", CI_COMMIT_BRANCH="main"))
    assert (info.event, info.event_name, info.ref) == ("schedule", "schedule", "refs/heads/main")


@pytest.mark.parametrize("source", ["web", "api", "trigger", "chat", "webide", "pipeline", "parent_pipeline"])
def test_gitlab_manual_sources(source: str) -> None:
    info = detect(gitlab_env(CI_PIPELINE_SOURCE=source, CI_COMMIT_BRANCH="main"))
    assert (info.event, info.event_name, info.ref) == ("manual", source, "refs/heads/main")


def test_gitlab_merge_request_wins_over_a_manual_source() -> None:
    info = detect(gitlab_env(CI_PIPELINE_SOURCE="web", CI_MERGE_REQUEST_IID="3"))
    assert info.event == "pull_request"


def test_gitlab_unknown_source_is_a_push() -> None:
    info = detect(gitlab_env(CI_PIPELINE_SOURCE="ondemand_dast_scan", CI_COMMIT_BRANCH="main"))
    assert info.event == "push"


def test_gitlab_old_runner_without_commit_branch() -> None:
    info = detect(gitlab_env(CI_PIPELINE_SOURCE="push", CI_COMMIT_REF_NAME="main"))
    assert info.ref == "refs/heads/main"


def test_gitlab_bad_merge_request_iid_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CI_MERGE_REQUEST_IID"):
        detect(gitlab_env(CI_PIPELINE_SOURCE="merge_request_event", CI_MERGE_REQUEST_IID="abc"))


def test_gitlab_missing_optional_values() -> None:
    env = gitlab_env(CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="main")
    for key in ("CI_PROJECT_DESCRIPTION", "CI_COMMIT_TIMESTAMP", "CI_DEFAULT_BRANCH"):
        del env[key]
    info = detect(env)
    assert (info.description, info.commit_time, info.default_branch) == ("", None, None)
    filled = detect(env, git=FakeGit(origin_head="main"))
    assert (filled.commit_time, filled.default_branch, filled.sha) == (GIT_TIME, "main", SHA)


def test_gitlab_invalid_timestamp_is_unknown() -> None:
    info = detect(gitlab_env(CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="main", CI_COMMIT_TIMESTAMP="yesterday"))
    assert info.commit_time is None


# ---------------------------------------------------------------------------
# Jenkins
# ---------------------------------------------------------------------------

def test_jenkins_branch() -> None:
    info = detect(jenkins_env(BRANCH_NAME="feature/x", GIT_BRANCH="origin/feature/x"))
    assert info == CIInfo(
        provider="jenkins", event="push", event_name="push", ref="refs/heads/feature/x", sha=SHA,
        pr_number=None, default_branch=None, base_ref="", commit_time=None, run_id="42",
        repository_url=URL, repository_name="widget",
    )


def test_jenkins_primary_branch_is_the_default_branch() -> None:
    info = detect(jenkins_env(BRANCH_NAME="main", BRANCH_IS_PRIMARY="true"))
    assert (info.ref, info.default_branch) == ("refs/heads/main", "main")


def test_jenkins_tag_build_is_not_also_a_branch() -> None:
    info = detect(jenkins_env(TAG_NAME="v1.2.3", BRANCH_NAME="v1.2.3", BRANCH_IS_PRIMARY="true"))
    assert (info.event, info.event_name, info.ref) == ("tag", "tag", "refs/tags/v1.2.3")
    assert info.default_branch is None  # BRANCH_IS_PRIMARY only names the default on branch builds


def test_jenkins_pull_request() -> None:
    env = jenkins_env(CHANGE_ID="24", BRANCH_NAME="PR-24", CHANGE_TARGET="main", CHANGE_BRANCH="feature",
                      GIT_COMMIT=MERGE_SHA)
    info = detect(env)
    assert (info.event, info.event_name) == ("pull_request", "pull_request")
    assert (info.ref, info.pr_number, info.base_ref, info.sha) == ("refs/pull/24/merge", 24, "main", MERGE_SHA)
    assert "PR-24" not in json.dumps(info.to_dict())


def test_jenkins_bad_change_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CHANGE_ID"):
        detect(jenkins_env(CHANGE_ID="I8473b95934b5732ac55d26311a706c9c2bde9940", BRANCH_NAME="x"))


@pytest.mark.parametrize(("extra", "ref"), [
    ({"GIT_BRANCH": "origin/feature/x"}, "refs/heads/feature/x"),
    ({"GIT_BRANCH": "upstream/main"}, "refs/heads/main"),
    ({"GIT_BRANCH": "refs/remotes/origin/dev"}, "refs/heads/dev"),
    ({"GIT_LOCAL_BRANCH": "local", "GIT_BRANCH": "origin/remote"}, "refs/heads/local"),
    ({"BRANCH_NAME": "bn", "GIT_LOCAL_BRANCH": "local", "GIT_BRANCH": "origin/remote"}, "refs/heads/bn"),
    ({"GIT_BRANCH": "refs/tags/v3.0.0"}, "refs/tags/v3.0.0"),
    ({"GIT_BRANCH": "origin/HEAD"}, ""),
    ({"GIT_BRANCH": "detached"}, ""),
])
def test_jenkins_branch_fallbacks(extra: dict[str, str], ref: str) -> None:
    info = detect(jenkins_env(**extra))
    assert info.ref == ref


def test_jenkins_without_any_branch_variable_reads_git() -> None:
    fake = FakeGit(decorations=("HEAD", "tag: v0.9.0"), tags=None)
    info = detect(jenkins_env(), git=fake)
    assert (info.ref, info.event) == ("refs/tags/v0.9.0", "tag")


def test_jenkins_fills_sha_time_and_default_branch_from_git() -> None:
    env = jenkins_env(BRANCH_NAME="feature")
    del env["GIT_COMMIT"]
    del env["GIT_URL"]
    fake = FakeGit(origin_head="main", url="https://bot:s3cr3t@git.example.com/acme/widget.git")
    info = detect(env, git=fake)
    assert (info.sha, info.commit_time, info.default_branch) == (SHA, GIT_TIME, "main")
    assert (info.repository_url, info.repository_name) == ("https://git.example.com/acme/widget", "widget")
    assert "s3cr3t" not in json.dumps(info.to_dict())


def test_jenkins_git_does_not_override_the_ci() -> None:
    fake = FakeGit(sha=OTHER_SHA, times={SHA: GIT_TIME}, origin_head="trunk", symbolic="refs/heads/trunk")
    info = detect(jenkins_env(BRANCH_NAME="main", BRANCH_IS_PRIMARY="true"), git=fake)
    assert (info.sha, info.default_branch, info.ref, info.commit_time) == (SHA, "main", "refs/heads/main", GIT_TIME)


def test_jenkins_credentials_are_stripped_from_git_url() -> None:
    info = detect(jenkins_env(BRANCH_NAME="main", GIT_URL="https://user:tok3n@git.example.com/acme/widget.git"))
    assert info.repository_url == "https://git.example.com/acme/widget"
    assert "tok3n" not in json.dumps(info.to_dict())


def test_jenkins_run_id_falls_back_to_build_id() -> None:
    env = jenkins_env(BRANCH_NAME="main")
    del env["BUILD_NUMBER"]
    env["BUILD_ID"] = "77"
    assert detect(env).run_id == "77"


@pytest.mark.parametrize("cause", ["schedule", "manual", "push"])
def test_jenkins_pipeline_event_sets_the_cause_of_branch_builds(cause: str) -> None:
    info = detect(jenkins_env(BRANCH_NAME="main", PIPELINE_EVENT=cause))
    assert (info.event, info.event_name) == (cause, cause)


def test_jenkins_pipeline_event_does_not_change_tag_or_pr_builds() -> None:
    assert detect(jenkins_env(TAG_NAME="v1", BRANCH_NAME="v1", PIPELINE_EVENT="manual")).event == "tag"
    assert detect(jenkins_env(CHANGE_ID="3", PIPELINE_EVENT="schedule")).event == "pull_request"


def test_jenkins_unknown_pipeline_event_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PIPELINE_EVENT"):
        detect(jenkins_env(BRANCH_NAME="main", PIPELINE_EVENT="nightly"))


# ---------------------------------------------------------------------------
# Local git (fake reader)
# ---------------------------------------------------------------------------

def test_local_branch() -> None:
    fake = FakeGit(symbolic="refs/heads/feature/y", origin_head="main",
                   url="git@github.com:acme/widget.git", top="/home/me/src/checkout")
    info = detect({}, git=fake)
    assert info == CIInfo(
        provider="local", event="push", event_name="push", ref="refs/heads/feature/y", sha=SHA,
        pr_number=None, default_branch="main", base_ref="", commit_time=GIT_TIME, run_id="",
        repository_url=URL, repository_name="widget",
    )


def test_local_tag_at_head_wins_over_the_branch() -> None:
    fake = FakeGit(symbolic="refs/heads/main", tags=("v1.2.0", "v1.2.0-rc.1"))
    info = detect({}, git=fake)
    assert (info.ref, info.event, info.event_name) == ("refs/tags/v1.2.0", "tag", "tag")


def test_local_detached_with_tag() -> None:
    fake = FakeGit(decorations=("HEAD", "tag: v1.0.0", "origin/main"), tags=("v1.0.0",))
    assert detect({}, git=fake).ref == "refs/tags/v1.0.0"
    # the decoration alone is enough when `git tag --points-at` cannot answer
    fake = FakeGit(decorations=("HEAD", "tag: v1.0.0", "origin/main"), tags=None)
    assert detect({}, git=fake).ref == "refs/tags/v1.0.0"


def test_local_detached_with_remote_branch() -> None:
    fake = FakeGit(decorations=("HEAD", "origin/b", "b"))
    info = detect({}, git=fake)
    assert (info.ref, info.event) == ("refs/heads/b", "push")


def test_local_detached_pull_request_ref() -> None:
    fake = FakeGit(decorations=("grafted", "HEAD", "pull/7/merge"))
    info = detect({}, git=fake)
    assert (info.ref, info.event, info.pr_number) == ("refs/pull/7/merge", "pull_request", 7)


def test_local_detached_without_any_ref() -> None:
    info = detect({}, git=FakeGit(decorations=("HEAD",)))
    assert (info.ref, info.sha, info.event) == ("", SHA, "push")


def test_local_not_a_repository() -> None:
    info = detect({}, git=NO_REPO)
    assert (info.provider, info.ref, info.sha, info.event, info.event_name) == ("local", "", "", "push", "push")
    assert info.commit_time is None and info.default_branch is None and info.repository_url == ""


def test_local_without_a_git_reader() -> None:
    info = detect({})
    assert (info.provider, info.ref, info.sha, info.event) == ("local", "", "", "push")


def test_local_name_from_toplevel_without_remote() -> None:
    info = detect({}, git=FakeGit(symbolic="refs/heads/main", url=None, top="/home/me/src/gadget"))
    assert (info.repository_url, info.repository_name) == ("", "gadget")


def test_local_default_branch_override() -> None:
    fake = FakeGit(symbolic="refs/heads/main", origin_head="master")
    assert detect({}, git=fake, default_branch="main").default_branch == "main"
    assert detect({}, git=fake, default_branch="refs/heads/develop").default_branch == "develop"
    assert detect({}, git=fake, default_branch="").default_branch == "master"


@pytest.mark.parametrize(("names", "ref"), [
    (("HEAD", "tag: v1"), "refs/tags/v1"),
    (("HEAD", "tag: refs/tags/v1", "refs/remotes/origin/main"), "refs/tags/v1"),
    (("grafted", "HEAD", "tag: v2", "tag: v1"), "refs/tags/v2"),
    (("HEAD", "pull/3/merge"), "refs/pull/3/merge"),
    (("HEAD", "pull/3/head", "origin/feature"), "refs/pull/3/merge"),
    (("HEAD", "refs/remotes/pull/3/merge"), "refs/pull/3/merge"),
    (("HEAD", "refs/remotes/origin/merge-requests/4/head"), "refs/pull/4/merge"),
    (("HEAD", "origin/feature/a", "feature/a"), "refs/heads/feature/a"),
    (("HEAD", "refs/remotes/origin/feature/a"), "refs/heads/feature/a"),
    (("HEAD", "upstream/main", "origin/dev"), "refs/heads/dev"),
    (("HEAD", "origin/HEAD", "origin/main"), "refs/heads/main"),
    (("HEAD", "refs/heads/feature/local"), "refs/heads/feature/local"),
    (("HEAD", "local"), "refs/heads/local"),
    (("HEAD", "refs/stash"), ""),
    (("HEAD",), ""),
    ((), ""),
])
def test_ref_from_decorations(names: tuple[str, ...], ref: str) -> None:
    assert ref_from_decorations(names) == ref


@pytest.mark.parametrize(("url", "expected"), [
    ("git@github.com:acme/widget.git", URL),
    ("github.com:acme/widget", URL),
    ("https://user:token@github.com/acme/widget.git", URL),
    ("https://x-access-token:ghs_abc@GitHub.com/acme/widget.git/", URL),
    ("ssh://git@github.com:22/acme/widget.git", URL),
    ("git+ssh://git@github.com/acme/widget", URL),
    ("git://github.com/acme/widget.git", URL),
    ("https://github.com/acme/widget?x=1#frag", URL),
    ("https://gitlab.example.com:8443/group/sub/project.git", "https://gitlab.example.com:8443/group/sub/project"),
    ("https://gitlab.example.com:443/group/project", "https://gitlab.example.com/group/project"),
    ("http://gitea.lan:3000/o/r.git", "http://gitea.lan:3000/o/r"),
    ("  https://github.com/acme/widget  ", URL),
    ("/srv/git/widget.git", ""),
    ("file:///srv/git/widget.git", ""),
    ("C:\\src\\widget", ""),
    ("https://github.com/", ""),
    ("", ""),
])
def test_normalize_repo_url(url: str, expected: str) -> None:
    assert normalize_repo_url(url) == expected


@pytest.mark.parametrize(("name", "branch"), [
    ("origin/main", "main"),
    ("origin/feature/x", "feature/x"),
    ("refs/heads/main", "main"),
    ("refs/remotes/up/main", "main"),
    ("remotes/origin/main", "main"),
    ("origin/HEAD", ""),
    ("", ""),
])
def test_strip_remote(name: str, branch: str) -> None:
    assert strip_remote(name) == branch


def test_to_dict_is_json_ready(tmp_path: Path) -> None:
    payload = {"head_commit": {"id": SHA, "timestamp": "2024-05-06T07:08:09+02:00"}, "repository": repository()}
    data = detect(github_env(tmp_path, "push", "refs/heads/main", payload=payload)).to_dict()
    assert data["commit_time"] == "2024-05-06T07:08:09+02:00"
    assert json.loads(json.dumps(data))["ref"] == "refs/heads/main"


def test_fake_git_satisfies_the_protocol() -> None:
    assert isinstance(FakeGit(), GitReader)
    assert isinstance(Git("."), GitReader)


# ---------------------------------------------------------------------------
# Parity: one commit and ref, four providers, one answer (design invariant 3)
# ---------------------------------------------------------------------------

PARITY_URL = "https://git.example.com/acme/widget"


def _parity_envs(tmp_path: Path, scenario: str) -> dict[str, tuple[dict[str, str], FakeGit]]:
    repo = repository(html_url=PARITY_URL)
    gitlab_base = {**gitlab_env(CI_PROJECT_URL=PARITY_URL)}
    jenkins_base = jenkins_env(GIT_URL="git@git.example.com:acme/widget.git")
    remote = "https://ci:t0ken@git.example.com/acme/widget.git"
    if scenario == "branch":
        sha = SHA
        checkout = FakeGit(sha=sha, symbolic="refs/heads/main", origin_head="main", url=remote)
        gh = github_env(tmp_path, "push", "refs/heads/main", sha=sha, payload={"repository": repo})
        gl = {**gitlab_base, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main", "CI_COMMIT_SHA": sha}
        jk = {**jenkins_base, "BRANCH_NAME": "main", "BRANCH_IS_PRIMARY": "true", "GIT_COMMIT": sha}
    elif scenario == "tag":
        sha = SHA
        checkout = FakeGit(sha=sha, decorations=("HEAD", "tag: v1.2.3"), tags=("v1.2.3",),
                           origin_head="main", url=remote)
        gh = github_env(tmp_path, "push", "refs/tags/v1.2.3", sha=sha,
                        payload={"ref": "refs/tags/v1.2.3", "repository": repo})
        gl = {**gitlab_base, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_TAG": "v1.2.3", "CI_COMMIT_SHA": sha}
        jk = {**jenkins_base, "TAG_NAME": "v1.2.3", "BRANCH_NAME": "v1.2.3", "GIT_COMMIT": sha}
    else:
        sha = MERGE_SHA
        checkout = FakeGit(sha=sha, decorations=("HEAD", "pull/7/merge"), times={sha: GIT_TIME},
                           origin_head="main", url=remote)
        payload = {**pr_payload(number=7), "repository": repo}
        gh = github_env(tmp_path, "pull_request", "refs/pull/7/merge", sha=sha, payload=payload)
        gl = {**gitlab_base, "CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "7",
              "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main", "CI_COMMIT_SHA": sha}
        jk = {**jenkins_base, "CHANGE_ID": "7", "BRANCH_NAME": "PR-7", "CHANGE_TARGET": "main", "GIT_COMMIT": sha}
    return {"github": (gh, checkout), "gitlab": (gl, checkout), "jenkins": (jk, checkout), "local": ({}, checkout)}


@pytest.mark.parametrize(("scenario", "expected"), [
    ("branch", ("refs/heads/main", SHA, "push", None, "main", PARITY_URL)),
    ("tag", ("refs/tags/v1.2.3", SHA, "tag", None, "main", PARITY_URL)),
    ("pr", ("refs/pull/7/merge", MERGE_SHA, "pull_request", 7, "main", PARITY_URL)),
])
def test_parity_across_providers(tmp_path: Path, scenario: str, expected: tuple[Any, ...]) -> None:
    seen = {}
    for provider, (env, checkout) in _parity_envs(tmp_path, scenario).items():
        info = detect(env, git=checkout)
        assert info.provider == provider
        seen[provider] = (info.ref, info.sha, info.event, info.pr_number, info.default_branch, info.repository_url)
    assert seen == {provider: expected for provider in seen}


# ---------------------------------------------------------------------------
# Real git: a temporary repository driven by the git binary
# ---------------------------------------------------------------------------

COMMIT_DATE_1 = "2023-03-04T05:06:07+01:00"
COMMIT_DATE_2 = "2023-03-05T05:06:07+00:00"


@pytest.fixture
def hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's git config (signing, decorations, colours) out of the test."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(key, raising=False)


def _git(repo: Path, *args: str, date: str = COMMIT_DATE_1) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def real_repo(tmp_path: Path, hermetic_git: None) -> Path:
    repo = tmp_path / "widget-checkout"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "app").mkdir()
    (repo / "app" / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    _git(repo, "remote", "add", "origin", "https://deploy:hunter22@git.example.com/acme/widget.git")
    _git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")
    _git(repo, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
    return repo


def test_real_git_branch_tag_and_detached(real_repo: Path) -> None:
    git = Git(real_repo)
    first = _git(real_repo, "rev-parse", "HEAD")

    info = detect({}, git=git)
    assert (info.ref, info.sha, info.event) == ("refs/heads/main", first, "push")
    assert info.commit_time == datetime.fromisoformat(COMMIT_DATE_1)
    assert info.default_branch == "main"
    assert (info.repository_url, info.repository_name) == ("https://git.example.com/acme/widget", "widget")
    assert "hunter22" not in json.dumps(info.to_dict())

    # a tag on the checked-out branch tip: a tag release (annotated and rc tags too)
    _git(real_repo, "tag", "v1.0.0-rc.1")
    _git(real_repo, "tag", "-a", "v1.0.0", "-m", "release 1.0.0")
    info = detect({}, git=git)
    assert (info.ref, info.event, info.sha) == ("refs/tags/v1.0.0", "tag", first)

    # a second commit on main, pushed; then a detached checkout of it
    (real_repo / "app" / "Dockerfile").write_text("FROM scratch\nLABEL x=y\n", encoding="utf-8")
    _git(real_repo, "commit", "-q", "-am", "second", date=COMMIT_DATE_2)
    second = _git(real_repo, "rev-parse", "HEAD")
    _git(real_repo, "update-ref", "refs/remotes/origin/main", "HEAD")
    _git(real_repo, "checkout", "-q", "--detach", "HEAD")
    info = detect({}, git=git)
    assert (info.ref, info.sha, info.event) == ("refs/heads/main", second, "push")
    assert info.commit_time == datetime.fromisoformat(COMMIT_DATE_2)

    # detached on the tagged commit
    _git(real_repo, "checkout", "-q", "v1.0.0")
    info = detect({}, git=git)
    assert (info.ref, info.sha, info.event) == ("refs/tags/v1.0.0", first, "tag")

    # detached on a fetched PR merge ref (as actions/checkout leaves it)
    _git(real_repo, "update-ref", "refs/remotes/pull/9/merge", second)
    _git(real_repo, "checkout", "-q", "--detach", second)
    _git(real_repo, "update-ref", "-d", "refs/remotes/origin/main")
    info = detect({}, git=git)
    assert (info.ref, info.pr_number, info.event) == ("refs/pull/9/merge", 9, "pull_request")

    # a CI's statement still wins over this checkout
    env = gitlab_env(CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="main")
    assert detect(env, git=git).sha == SHA


def test_real_git_reader_methods(real_repo: Path) -> None:
    git = Git(real_repo)
    assert git.symbolic_ref() == "refs/heads/main"
    assert git.head_sha() == _git(real_repo, "rev-parse", "HEAD")
    assert git.tags_at_head() == ()
    _git(real_repo, "tag", "v2.0.0-rc.1")
    _git(real_repo, "tag", "v2.0.0")
    _git(real_repo, "tag", "v1.9.0")
    assert git.tags_at_head() == ("v2.0.0", "v2.0.0-rc.1", "v1.9.0")
    assert git.origin_head_branch() == "main"
    assert git.remote_url() == "https://git.example.com/acme/widget.git"
    assert git.remote_url("upstream") is None
    assert git.remote_url("--help") is None
    assert Path(git.toplevel() or "").resolve() == real_repo.resolve()
    assert git.tree_hash("app") == _git(real_repo, "rev-parse", "HEAD:app")
    assert git.tree_hash("app/Dockerfile") == _git(real_repo, "rev-parse", "HEAD:app/Dockerfile")
    assert git.tree_hash(".") == _git(real_repo, "rev-parse", "HEAD^{tree}")
    assert git.tree_hash("missing") is None
    assert git.commit_time() == datetime.fromisoformat(COMMIT_DATE_1)
    assert git.commit_time(OTHER_SHA) is None
    assert git.commit_time("--output=/tmp/x") is None
    assert git.detached_ref_names() is not None
    _git(real_repo, "checkout", "-q", "--detach")
    assert git.symbolic_ref() is None
    names = git.detached_ref_names() or ()
    assert "HEAD" in names and "refs/remotes/origin/main" in names and "tag: refs/tags/v2.0.0" in names


def test_real_git_outside_a_repository(tmp_path: Path, hermetic_git: None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    git = Git(plain)
    assert [git.symbolic_ref(), git.detached_ref_names(), git.tags_at_head(), git.head_sha(), git.commit_time(),
            git.origin_head_branch(), git.remote_url(), git.toplevel(), git.tree_hash("x")] == [None] * 9
    info = detect({}, git=git)
    assert (info.provider, info.ref, info.sha, info.event) == ("local", "", "", "push")


def test_real_git_in_a_repository_without_commits(tmp_path: Path, hermetic_git: None) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    info = detect({}, git=Git(repo))
    assert (info.ref, info.sha, info.event) == ("", "", "push")
    assert info.repository_name == "empty"


def test_git_binary_missing_is_unknown_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    git = Git(tmp_path)
    assert git.head_sha() is None
    assert detect({}, git=git).ref == ""


def test_integration_tools_are_required_on_jenkins_too(monkeypatch):
    """Jenkins sets no CI variable: the suite must still fail, not skip, when a tool is missing there."""
    from tests.integration.conftest import tools_required

    for name in ("CI", "PIPELINE_REQUIRE_TOOLS", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILD_ID",
                 "BUILD_NUMBER", "JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert tools_required() is False                 # a laptop: skips are fine
    monkeypatch.setenv("JENKINS_URL", "https://jenkins.example/")
    assert tools_required() is True
