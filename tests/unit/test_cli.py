"""The command line: exit codes, one-line errors, JSON shapes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pipeline.cli import main

SHA = "860c1904a1ce19322e91ac35af1ab07466440c37"
CONFIG = """
[image]
name = "app"
platforms = ["linux/amd64", "linux/arm64"]

[tags]
rules = ["type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}",
         "type=semver,pattern={{major}}", "type=ref,event=branch", "type=sha"]

[[registries]]
name = "ghcr"
url = "ghcr.io/acme"

[[registries]]
name = "local"
url = "localhost:5000"
"""


def run(args, env=None, tmp_path: Path | None = None):
    out, err = io.StringIO(), io.StringIO()
    code = main(args, env=env or {}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "pipeline.toml"
    p.write_text(CONFIG)
    return p


def github_env(tmp_path: Path, ref: str, event: str = "push", payload: dict | None = None) -> dict[str, str]:
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(payload or {"repository": {
        "name": "app", "html_url": "https://github.com/acme/app", "default_branch": "main",
        "description": "An app", "license": {"spdx_id": "MIT"}}}))
    return {"GITHUB_ACTIONS": "true", "GITHUB_REF": ref, "GITHUB_SHA": SHA, "GITHUB_EVENT_NAME": event,
            "GITHUB_EVENT_PATH": str(event_path), "GITHUB_REPOSITORY": "acme/app",
            "GITHUB_SERVER_URL": "https://github.com", "GITHUB_RUN_ID": "42", "SOURCE_DATE_EPOCH": "1578616200"}


def test_tags_json_as_github_actions_calls_it(tmp_path, cfg):
    code, out, err = run(["tags", "--config", str(cfg), "--format", "json"],
                         github_env(tmp_path, "refs/tags/v1.2.3"))
    assert code == 0, err
    data = json.loads(out)
    assert data["version"] == "1.2.3"
    assert data["tags"] == ["1.2.3", "1.2", "1", "sha-860c190", "latest"]
    assert data["latest"] is True
    assert data["refs"][:2] == ["ghcr.io/acme/app:1.2.3", "ghcr.io/acme/app:1.2"]
    assert data["refs"][5] == "localhost:5000/app:1.2.3" and len(data["refs"]) == 10
    assert data["labels"]["org.opencontainers.image.created"] == "2020-01-10T00:30:00.000Z"
    assert data["labels"]["org.opencontainers.image.version"] == "1.2.3"
    assert data["annotations"]["manifest:org.opencontainers.image.revision"] == SHA
    assert data["context"]["provider"] == "github" and data["context"]["event"] == "tag"
    assert set(data) == {"version", "tags", "latest", "refs", "labels", "annotations", "context"}


def test_tags_text_output(tmp_path, cfg):
    code, out, _ = run(["tags", "--config", str(cfg)], github_env(tmp_path, "refs/heads/main"))
    assert code == 0
    assert "  main" in out and "sha-860c190" in out


def test_bad_config_is_exit_2_one_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[image]\nname = "app"\n[tags]\nrules = ["type=nope"]\n')
    code, out, err = run(["tags", "--config", str(p)], {})
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "tags.rules[0]" in err and "type=nope" in err


def test_missing_config(tmp_path):
    code, _, err = run(["tags", "--config", str(tmp_path / "none.toml")])
    assert code == 2 and "none.toml: not found" in err


@pytest.mark.parametrize("args", [["frobnicate"], ["tags", "--format", "xml"], [], ["plan", "--bogus"]])
def test_usage_errors_are_exit_2_one_line(args):
    code, _, err = run(args)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err and "usage:" not in err


def test_unknown_skip_stage(tmp_path, cfg):
    code, _, err = run(["plan", "--config", str(cfg), "--skip", "scna"], github_env(tmp_path, "refs/heads/main"))
    assert code == 2 and "--skip scna" in err and "scan" in err


def test_bad_source_date_epoch(tmp_path, cfg):
    env = github_env(tmp_path, "refs/heads/main") | {"SOURCE_DATE_EPOCH": "yesterday"}
    code, _, err = run(["tags", "--config", str(cfg)], env)
    assert code == 2 and "SOURCE_DATE_EPOCH" in err


def test_bad_short_sha_length_env(tmp_path, cfg):
    env = github_env(tmp_path, "refs/heads/main") | {"DOCKER_METADATA_SHORT_SHA_LENGTH": "abc"}
    code, _, err = run(["tags", "--config", str(cfg)], env)
    assert code == 2 and "DOCKER_METADATA_SHORT_SHA_LENGTH" in err


def test_short_sha_length_env(tmp_path, cfg):
    env = github_env(tmp_path, "refs/heads/main") | {"DOCKER_METADATA_SHORT_SHA_LENGTH": "12"}
    code, out, _ = run(["tags", "--config", str(cfg), "--format", "json"], env)
    assert code == 0 and "sha-860c1904a1ce" in json.loads(out)["tags"]


def test_plan_lists_every_stage_in_order(tmp_path, cfg):
    code, out, err = run(["plan", "--config", str(cfg), "--format", "json"], github_env(tmp_path, "refs/tags/v1.2.3"))
    assert code == 0, err
    stages = json.loads(out)["stages"]
    assert [s["stage"] for s in stages] == ["tags", "mirror", "build", "scan", "staging", "copy", "sign", "tag", "verify", "report"]
    assert stages[0]["action"] == "run" and "1.2.3" in stages[0]["detail"]


def test_plan_says_why_a_stage_skips(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(CONFIG + "\n[scan]\nenabled = false\n")
    code, out, _ = run(["plan", "--config", str(p), "--format", "json", "--skip", "sign"],
                       github_env(tmp_path, "refs/heads/main"))
    stages = {s["stage"]: s for s in json.loads(out)["stages"]}
    assert stages["scan"] == {"stage": "scan", "action": "skip", "detail": "scan.enabled = false"}
    assert stages["sign"]["detail"] == "skipped with --skip sign"


def test_version_flag():
    code, out, _ = run(["--version"])
    assert code == 0


def test_event_path_secret_free_errors(tmp_path, cfg):
    env = github_env(tmp_path, "refs/heads/main")
    env["GITHUB_EVENT_PATH"] = str(tmp_path / "missing.json")
    code, _, err = run(["tags", "--config", str(cfg)], env)
    assert "Traceback" not in err and err.count("\n") <= 1


def test_release_manifests_keep_a_history_of_published_releases(tmp_path):
    from pipeline.report import write_manifest

    published = {"digest": "sha256:" + "ab" * 32, "released_at": "2026-01-02T03:04:05+00:00",
                 "registries": [{"name": "r", "tags_written": ["1.0"]}]}
    write_manifest(published, tmp_path)
    write_manifest({"digest": "sha256:" + "cd" * 32, "released_at": "2026-01-03T00:00:00+00:00",
                    "registries": [{"name": "r", "tags_written": []}]}, tmp_path)   # nothing published
    assert json.loads((tmp_path / "release.json").read_text())["digest"].endswith("cd" * 32)
    history = sorted(p.name for p in (tmp_path / "releases").iterdir())
    assert history == ["20260102T030405-" + "ab" * 6 + ".json"]
