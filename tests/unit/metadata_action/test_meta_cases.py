"""docker/metadata-action's own test cases, run through `pipeline tags` as GitHub Actions would call it.

The cases live in tests/data/metadata_action/cases.json (one entry per upstream test, id = upstream
test name; the pr-head-sha table's ids get a ``pr-head-sha-`` prefix because upstream reuses pr01…pr12).
Each case names an upstream ``.env`` fixture, rewritten as fixtures/<name>.json (GITHUB_* variables plus
the event payload it points to, under payloads/).

How an upstream test run is reproduced:

- env: the fixture's GITHUB_* variables, GITHUB_ACTIONS=true, GITHUB_EVENT_PATH -> the payload written to
  tmp_path, SOURCE_DATE_EPOCH=1578616200 (upstream mocks ``Date.toISOString`` and ``moment-timezone`` to
  2020-01-10T00:30:00.000Z), plus the DOCKER_METADATA_* variables a case sets. Nothing from os.environ.
- repository data: upstream computes the title/description/url/source/licenses labels from the *REST API*
  repo (mocked with fixtures/repo.json), while our code reads them from the payload's ``repository``. The
  fixture payloads describe docker/test-docker-action, repo.json describes octocat/Hello-World, so the API
  values are copied over the payload's (name, description, html_url, clone_url, license) - that is the
  repository the action "sees" in these tests. ``default_branch`` keeps the payload's value when there is
  one (upstream's ``{{is_default_branch}}`` reads the payload) and takes repo.json's otherwise (``edge``
  uses the API value). Both say "master" wherever both exist, so no case depends on the difference.
- commit_date: upstream's ``jest.mock('moment-timezone')`` makes *every* ``moment(x)`` call return the frozen
  instant, including ``moment(commitDate)``; so in upstream's tests ``{{commit_date}}`` is the frozen clock,
  not the payload's commit timestamp. To reproduce that, commit timestamps are removed from the payload
  before it is written (our commit date then falls back to SOURCE_DATE_EPOCH). The stored payloads keep them.
- the working directory is tmp_path (no git repository), so git cannot fill in anything.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main

DATA = Path(__file__).resolve().parents[2] / "data" / "metadata_action"
CASES_DOC = json.loads((DATA / "cases.json").read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = CASES_DOC["cases"]
REPO = json.loads((DATA / "repo.json").read_text(encoding="utf-8"))
API_REPO_FIELDS = ("name", "full_name", "description", "html_url", "clone_url", "license")


def _toml_str(value: str) -> str:
    # A JSON string literal is a valid TOML basic string (same escapes: \" \\ \n \t \uXXXX).
    return json.dumps(value)


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def write_config(path: Path, inputs: dict[str, list[str]]) -> Path:
    lines = ["[image]", 'name = "app"', "", "[tags]"]
    for key, toml_key in (("tags", "rules"), ("flavor", "flavor"), ("labels", "labels"),
                          ("annotations", "annotations")):
        if key in inputs:
            lines.append(f"{toml_key} = {_toml_list(inputs[key])}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_payload(name: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if name:
        payload = json.loads((DATA / "payloads" / name).read_text(encoding="utf-8"))
    payload = copy.deepcopy(payload)
    payload.pop("_trimmed", None)
    # Emulate upstream's moment-timezone mock: commit_date == the frozen clock.
    for commit in [payload.get("head_commit"), *(payload.get("commits") or [])]:
        if isinstance(commit, dict):
            commit.pop("timestamp", None)
    repo = dict(payload.get("repository") or {})
    for key in API_REPO_FIELDS:
        if key in REPO:
            repo[key] = copy.deepcopy(REPO[key])
    repo.setdefault("default_branch", REPO["default_branch"])
    payload["repository"] = repo
    return payload


def build_env(case: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    fixture = json.loads((DATA / "fixtures" / f"{case['fixture']}.json").read_text(encoding="utf-8"))
    env = {k: v for k, v in fixture["env"].items() if k != "GITHUB_EVENT_PATH"}
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(build_payload(fixture["payload"])), encoding="utf-8")
    env["GITHUB_ACTIONS"] = "true"
    env["GITHUB_EVENT_PATH"] = str(event_path)
    env["SOURCE_DATE_EPOCH"] = CASES_DOC["source_date_epoch"]
    env.update(case.get("env") or {})
    return env


def run_tags(case: dict[str, Any], tmp_path: Path) -> tuple[int, str, str]:
    cfg_path = write_config(tmp_path / "pipeline.toml", case["inputs"])
    env = build_env(case, tmp_path)
    out, err = io.StringIO(), io.StringIO()
    code = main(["tags", "--config", str(cfg_path), "--format", "json"], env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_metadata_action_case(case: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no git repository around: nothing may leak in from the checkout
    expected = case["expected"]
    code, stdout, stderr = run_tags(case, tmp_path)
    where = f"{case['id']} ({case['upstream']})"

    if expected["exit_code"] != 0:
        assert code == expected["exit_code"], f"{where}: exit {code}, stdout={stdout!r} stderr={stderr!r}"
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0], f"{where}: expected one stderr line, got {stderr!r}"
        return

    assert code == 0, f"{where}: exit {code}, stderr={stderr!r}"
    data = json.loads(stdout)
    got = {"tags": data["tags"], "latest": data["latest"]}
    want = {"tags": expected["tags"], "latest": expected["latest"]}
    if expected.get("version_checked", True):
        got["version"], want["version"] = data["version"], expected["version"]
    got["labels"], want["labels"] = list(data["labels"].items()), list(expected["labels"].items())
    if expected.get("annotations") is not None:
        got["annotations"] = list(data["annotations"].items())
        want["annotations"] = list(expected["annotations"].items())
    assert got == want, where
