"""`pipeline ci-init`: generated GitHub/GitLab/Jenkins files parse, hold the described jobs, call only nox."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import config
from pipeline.ci_files import templates as citemplates
from pipeline.cli import main

BASE = """
[image]
name = "team/app"
platforms = ["linux/amd64", "linux/arm64"]
[[registries]]
name = "ghcr"
url = "ghcr.io/acme"
auth = "ghcr"
[[registries]]
name = "hub"
url = "docker.io/acme"
auth = "dockerhub"
[[registries]]
name = "internal"
url = "registry.internal:5000"
username_env = "INTERNAL_USER"
password_env = "INTERNAL_PASSWORD"
[sign]
key = "env://COSIGN_PRIVATE_KEY"
"""
SPLIT = BASE + ('[build]\nmode = "split"\n[ci]\nrunners = {"linux/arm64" = "arm-runner"}\n'
                'release_tags = ["v*", "release-*"]\n')
ECR = BASE + '[[registries]]\nname = "ecr"\nurl = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"\nauth = "ecr"\n'
NOX_STEP = re.compile(r"^(python3? -m pip install (--quiet )?nox|nox -s (plan|release|build|rescan)( -- .*)?)$")
SECRETS = ["GITHUB_TOKEN", "DOCKERHUB_USERNAME", "DOCKERHUB_TOKEN", "INTERNAL_USER", "INTERNAL_PASSWORD",
           "COSIGN_PRIVATE_KEY", "COSIGN_PASSWORD"]


def cfg_of(tmp_path: Path, text: str) -> config.Config:
    p = tmp_path / "pipeline.toml"
    p.write_text(text)
    return config.load(p, {})


def load_github(text: str) -> dict:
    data = yaml.safe_load(text)
    assert "on" in data  # written quoted: YAML 1.1 readers would take a bare `on` for true
    return data


def run_steps(job: dict) -> list[str]:
    return [s["run"] for s in job["steps"] if "run" in s]


def validate(path: Path, schema: str) -> None:
    r = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------- GitHub


@pytest.mark.parametrize("text", [BASE, SPLIT, ECR], ids=["single", "split", "ecr"])
def test_github_validates_against_the_workflow_schema(tmp_path, text):
    path = tmp_path / "release.yml"
    path.write_text(citemplates.render("github", cfg_of(tmp_path, text), "config/pipeline.toml"))
    validate(path, "vendor.github-workflows")


def test_github_single_plan_on_prs_release_on_tags_and_default_branch(tmp_path):
    wf = load_github(citemplates.render("github", cfg_of(tmp_path, BASE), "config/pipeline.toml"))
    assert set(wf["on"]) == {"pull_request", "push", "workflow_dispatch", "schedule"}
    assert wf["on"]["push"] == {"branches": ["main"], "tags": ["v*"]}
    assert wf["on"]["schedule"] == [{"cron": "17 5 * * *"}]
    assert wf["permissions"] == {"contents": "read"}
    plan, release = wf["jobs"]["plan"], wf["jobs"]["release"]
    assert plan["if"] == "github.event_name == 'pull_request'" and run_steps(plan)[-1] == "nox -s plan"
    assert release["if"] == "github.event_name != 'pull_request' && github.event_name != 'schedule'"
    assert "nox -s release" in run_steps(release)
    rescan = wf["jobs"]["rescan"]                  # the scheduled run rescans, and only that
    assert rescan["if"] == "github.event_name == 'schedule'" and run_steps(rescan)[-1] == "nox -s rescan"
    assert rescan["permissions"] == {"contents": "read", "packages": "read"}
    assert release["permissions"] == {"contents": "read", "packages": "write"}   # a key signs: no OIDC token
    assert set(release["outputs"]) == {"digest", "version", "tags", "refs"}
    assert wf["env"]["PIPELINE_CONFIG"] == "config/pipeline.toml"
    for job in wf["jobs"].values():
        assert all(NOX_STEP.match(r) for r in run_steps(job)), run_steps(job)
        cache = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@"))
        assert cache["with"]["path"] == ".nox" and "hashFiles('pyproject.toml', 'noxfile.py')" in cache["with"]["key"]
        assert any(s.get("uses", "").startswith("actions/setup-python@") for s in job["steps"])


def test_github_wires_registry_secrets_by_name(tmp_path):
    wf = load_github(citemplates.render("github", cfg_of(tmp_path, BASE), "config/pipeline.toml"))
    env = wf["jobs"]["release"]["env"]
    assert env["GITHUB_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    for name in SECRETS:
        assert env[name] == f"${{{{ secrets.{name} }}}}"
    assert "GITHUB_ACTOR" not in env  # the runner's own variable
    assert "secrets" not in str(wf["jobs"]["plan"])  # plans get no credentials


def test_github_split_is_a_platform_matrix_plus_a_merge_job(tmp_path):
    wf = load_github(citemplates.render("github", cfg_of(tmp_path, SPLIT), "config/pipeline.toml"))
    build, release = wf["jobs"]["build"], wf["jobs"]["release"]
    include = build["strategy"]["matrix"]["include"]
    assert [(m["platform"], m["runner"]) for m in include] == [("linux/amd64", "ubuntu-latest"),
                                                              ("linux/arm64", "arm-runner")]
    assert build["runs-on"] == "${{ matrix.runner }}"
    assert run_steps(build)[-1] == "nox -s build -- --platform ${{ matrix.platform }} --digest-out digests"
    assert release["needs"] == "build"
    assert run_steps(release)[-1] == "nox -s release -- --from-digests digests"
    assert any(s.get("with", {}).get("pattern") == "digests-*" for s in release["steps"])
    assert wf["on"]["push"]["tags"] == ["v*", "release-*"]
    assert "id-token" not in build["permissions"]
    assert not any("setup-qemu" in st.get("uses", "") for j in wf["jobs"].values() for st in j["steps"])


KEYLESS = BASE.replace('key = "env://COSIGN_PRIVATE_KEY"', 'keyless = true\nissuer = "https://token.actions.'
                       'githubusercontent.com"\nidentity_regexp = "^https://github.com/acme/"')


@pytest.mark.parametrize("text, oidc", [(BASE, False), (KEYLESS, True), (ECR, True)], ids=["key", "keyless", "ecr"])
def test_an_oidc_token_only_where_one_is_used(tmp_path, text, oidc):
    wf = load_github(citemplates.render("github", cfg_of(tmp_path, text), "config/pipeline.toml"))
    assert ("id-token" in wf["jobs"]["release"]["permissions"]) is oidc
    lab = yaml.safe_load(citemplates.render("gitlab", cfg_of(tmp_path, text), "config/pipeline.toml"))
    assert ("id_tokens" in lab["release"]) is oidc
    if text is KEYLESS:
        assert lab["release"]["id_tokens"] == {"SIGSTORE_ID_TOKEN": {"aud": "sigstore"}}


def test_github_sets_up_qemu_where_one_runner_builds_several_platforms(tmp_path):
    wf = load_github(citemplates.render("github", cfg_of(tmp_path, BASE), "config/pipeline.toml"))
    steps = wf["jobs"]["release"]["steps"]
    uses = [st.get("uses", "") for st in steps]
    assert any(u.startswith("docker/setup-qemu-action@") for u in uses)
    assert uses.index(next(u for u in uses if "setup-qemu" in u)) < [st.get("id") for st in steps].index("release")
    one = BASE.replace('platforms = ["linux/amd64", "linux/arm64"]', 'platforms = ["linux/amd64"]')
    wf = load_github(citemplates.render("github", cfg_of(tmp_path, one), "config/pipeline.toml"))
    assert not any("setup-qemu" in st.get("uses", "") for st in wf["jobs"]["release"]["steps"])


def test_github_ecr_assumes_a_role_through_oidc(tmp_path):
    wf = load_github(citemplates.render("github", cfg_of(tmp_path, ECR), "config/pipeline.toml"))
    step = next(s for s in wf["jobs"]["release"]["steps"] if "configure-aws-credentials" in s.get("uses", ""))
    assert step["with"] == {"role-to-assume": "${{ vars.AWS_ROLE_ARN }}", "aws-region": "eu-west-1"}


# --------------------------------------------------------------------------- GitLab


@pytest.mark.parametrize("text", [BASE, SPLIT, ECR], ids=["single", "split", "ecr"])
def test_gitlab_validates_against_the_gitlab_ci_schema(tmp_path, text):
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(citemplates.render("gitlab", cfg_of(tmp_path, text), "config/pipeline.toml"))
    validate(path, "vendor.gitlab-ci")


def test_gitlab_jobs(tmp_path):
    doc = yaml.safe_load(citemplates.render("gitlab", cfg_of(tmp_path, BASE), "config/pipeline.toml"))
    base = doc[".nox"]
    assert base["before_script"] == ["python3 -m venv .nox-bin", ".nox-bin/bin/python -m pip install --quiet nox",
                                     'export PATH="$PWD/.nox-bin/bin:$PATH"']
    assert base["cache"] == {"key": {"files": ["pyproject.toml", "noxfile.py"]}, "paths": [".nox/"]}
    assert doc["plan"]["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert doc["plan"]["script"] == ["nox -s plan"]
    release = doc["release"]
    assert {"if": "$CI_COMMIT_TAG =~ /^v.*$/"} in release["rules"]
    assert {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"} in release["rules"]
    assert "id_tokens" not in release          # a key signs
    assert release["artifacts"]["reports"] == {"dotenv": "dist/release.env", "junit": "dist/junit.xml"}
    assert release["script"] == ["nox -s release"]
    text = citemplates.render("gitlab", cfg_of(tmp_path, BASE), "config/pipeline.toml")
    for name in SECRETS:
        assert name in text.split("\n", 3)[2]  # the variables to define, by name


def test_gitlab_split_parallel_matrix_and_merge(tmp_path):
    doc = yaml.safe_load(citemplates.render("gitlab", cfg_of(tmp_path, SPLIT), "config/pipeline.toml"))
    assert doc["stages"] == ["plan", "build", "release", "rescan"]
    assert doc["rescan"]["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}]
    assert doc["release"]["rules"][0] == {"if": '$CI_PIPELINE_SOURCE == "schedule"', "when": "never"}
    build = doc["build"]
    assert build["parallel"]["matrix"] == [{"PLATFORM": "linux/amd64", "RUNNER": "saas-linux-small-amd64"},
                                           {"PLATFORM": "linux/arm64", "RUNNER": "arm-runner"}]
    assert build["tags"] == ["$RUNNER"]
    assert build["script"] == ["nox -s build -- --platform $PLATFORM --digest-out digests"]
    assert doc["release"]["needs"] == ["build"]
    assert doc["release"]["script"] == ["nox -s release -- --from-digests digests"]
    assert {"if": "$CI_COMMIT_TAG =~ /^release-.*$/"} in doc["release"]["rules"]


# --------------------------------------------------------------------------- Jenkins


def jenkins_sh(text: str) -> list[str]:
    return re.findall(r"\bsh '([^']*)'", text)


def test_jenkinsfile_stages_credentials_and_junit(tmp_path):
    text = citemplates.render("jenkins", cfg_of(tmp_path, BASE), "config/pipeline.toml")
    assert text.count("{") == text.count("}")
    assert "stage('plan') {\n            when { changeRequest() }" in text
    assert ("when { allOf { not { triggeredBy 'TimerTrigger' }; anyOf { branch 'main'; tag pattern: 'v*',"
            " comparator: 'GLOB' } } }") in text
    assert "triggers {\n        cron('17 5 * * *')\n    }" in text
    assert "stage('rescan') {\n            when { triggeredBy 'TimerTrigger' }" in text
    assert "usernamePassword(credentialsId: 'hub', usernameVariable: 'DOCKERHUB_USERNAME'," \
           " passwordVariable: 'DOCKERHUB_TOKEN')" in text
    assert "string(credentialsId: 'cosign-password', variable: 'COSIGN_PASSWORD')" in text
    assert "junit allowEmptyResults: true, testResults: 'dist/junit.xml'" in text
    install = "python3 -m venv .nox-bin && .nox-bin/bin/pip install --quiet nox"
    for cmd in jenkins_sh(text):
        nox = cmd.removeprefix(".nox-bin/bin/")
        assert cmd == install or (nox != cmd and NOX_STEP.match(nox)), cmd


def test_jenkinsfile_split_parallel_stages_stash_and_merge(tmp_path):
    text = citemplates.render("jenkins", cfg_of(tmp_path, SPLIT), "config/pipeline.toml")
    assert text.count("{") == text.count("}")
    assert "agent { label 'arm-runner' }" in text and "agent { label 'linux-amd64' }" in text
    assert "nox -s build -- --platform linux/arm64 --digest-out digests" in text
    assert "stash name: 'digests-linux-arm64', includes: 'digests/**'" in text
    assert "unstash 'digests-linux-amd64'" in text
    assert ".nox-bin/bin/nox -s release -- --from-digests digests" in text


# --------------------------------------------------------------------------- the command


def run(args: list[str], cwd: Path, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    out, err = io.StringIO(), io.StringIO()
    return main(args, env={}, stdout=out, stderr=err), out.getvalue(), err.getvalue()


def test_ci_init_writes_default_paths_and_refuses_to_overwrite(tmp_path, monkeypatch):
    (tmp_path / "pipeline.toml").write_text(BASE)
    for kind, path in (("github", ".github/workflows/release.yml"), ("gitlab", ".gitlab-ci.yml"),
                       ("jenkins", "Jenkinsfile")):
        code, out, err = run(["ci-init", kind, "--config", "pipeline.toml"], tmp_path, monkeypatch)
        assert code == 0, err
        assert f"wrote {path}" in out and (tmp_path / path).is_file()
        (tmp_path / path).write_text("mine\n")
        code, out, err = run(["ci-init", kind, "--config", "pipeline.toml"], tmp_path, monkeypatch)
        assert code == 2 and "exists; pass --force" in err and (tmp_path / path).read_text() == "mine\n"
        code, out, err = run(["ci-init", kind, "--config", "pipeline.toml", "--force"], tmp_path, monkeypatch)
        assert code == 0 and (tmp_path / path).read_text() != "mine\n"
    code, out, _ = run(["ci-init", "github", "--config", "pipeline.toml", "--output", "-"], tmp_path, monkeypatch)
    assert code == 0 and load_github(out)["env"]["PIPELINE_CONFIG"] == "pipeline.toml"


def test_project_config_generates_valid_files(tmp_path):
    cfg = config.load(Path(__file__).parents[2] / "config" / "pipeline.toml", {})
    for kind in citemplates.KINDS:
        text = citemplates.render(kind, cfg, "config/pipeline.toml")
        if kind != "jenkins":
            yaml.safe_load(text)
        assert "nox -s release" in text and "nox -s plan" in text
