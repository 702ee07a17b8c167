"""Generated CI files run green on a runner-like host (issue 13).

``pipeline ci-init github|jenkins`` writes the file; :mod:`tests.support.cirunner` reads that file
back and runs its jobs/stages in order — every ``run:``/``sh`` step as written, as a user who is
not root and on whose machine trivy, cosign, the registry and buildx are not installed (the nox
sessions install them with ``pipeline doctor --install`` from the test's mirror of their release
files, standing in for GitHub). The ``uses:`` actions that cannot run here have the substitutes that
module names. Each run must end with a released, signed index of both platforms in the session's
registries; the split variant (one build job per platform, then the merge job) included.

Every job runs in a fresh copy of the checkout (what passes between jobs is artifacts or stashes);
their ``.nox`` virtualenvs are one shared directory, as a CI cache would restore them.
"""

from __future__ import annotations

import json
import os
import secrets as secrets_mod
from pathlib import Path

import pytest

from pipeline.tools.registry import Registry
from tests.support import cirunner, project, trivydb
from tests.support.project import SHA, http_manifest, http_tags

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN echo "built for $(uname -m) in CI" > /built.txt
COPY app.txt /app.txt
"""
TAGS = ["1.2.3", "1.2"]


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "trivy", "cosign", "qemu-arm64"):
        require_tool(tool)


@pytest.fixture(scope="module")
def ci_host(runner, tool_mirror, registries, offline_base):
    """The workspace (a checkout of this repository) and what every job of every run gets."""
    host_runner = runner.fresh("ci")
    workspace = host_runner.work / "checkout"
    cirunner.copy_checkout(ROOT, workspace)
    with Registry(registries["ecr"].host, insecure=True) as client:
        trivydb.push(client, "mirror/trivy-db", "2", trivydb.pack(trivydb.minimal_db()))
    password = "ci-" + secrets_mod.token_urlsafe(12)
    host = cirunner.Host(host_runner, workspace, {
        "PIPELINE_DOWNLOAD_BASE": tool_mirror,             # the substitute for the tools' GitHub releases
        "SOURCE_DATE_EPOCH": "1700000000",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_CACHE_DIR": str(host_runner.work / "pip-cache"),
    })
    # the signing key, made beforehand as a user would (with the root install's cosign)
    keygen = project.run_process(["keygen", "--output", str(workspace / "keys" / "release")],
                                 {**os.environ, "COSIGN_PASSWORD": password, "PYTHONPATH": str(ROOT)}, workspace)
    assert keygen.returncode == 0, keygen.stderr[-2000:]
    host_runner.own(host_runner.work)
    return host, password


def _project(host: cirunner.Host, registries, offline_base: str, name: str, mode: str) -> str:
    """The project's config in the checkout (``ci/<name>/pipeline.toml``); the path ci-init writes into the
    file, relative to the checkout."""
    folder = host.checkout / "ci" / name
    cfg = project.write_project(folder, registries, offline_base, name=f"ci/{name}", dockerfile=DOCKERFILE,
                                mode=mode, rules='"type=semver,pattern={{version}}", '
                                                 '"type=semver,pattern={{major}}.{{minor}}"',
                                scan=f'db_repository = ["{registries["ecr"].host}/mirror/trivy-db:2"]\n'
                                     f'cache_dir = "{host.checkout.parent / "trivy-cache"}"',
                                sign=f'key = "{host.checkout / "keys" / "release.key"}"\ntlog_upload = false',
                                extra=f'[ci]\npython = "{_python()}"\n')
    # reports inside the checkout, by a relative path: CI artifacts are paths in the project
    text = cfg.read_text().replace(f'dir = "{folder / "dist"}"', f'dir = "ci/{name}/dist"')
    assert f'dir = "ci/{name}/dist"' in text
    cfg.write_text(text)
    host.runner.own(host.checkout.parent)
    return str(cfg.relative_to(host.checkout))


def _python() -> str:
    import sys

    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _ci_init(host: cirunner.Host, kind: str, config: str) -> str:
    out = host.checkout.parent / f"generated-{kind}-{Path(config).parent.name}"
    made = host.runner.pipeline(["ci-init", kind, "--config", config, "--output", str(out), "--force"],
                                cwd=host.checkout)
    assert made.returncode == 0, made.stderr[-2000:]
    return out.read_text()


def _secrets(registries, password: str) -> dict[str, str]:
    out = {"COSIGN_PASSWORD": password}
    for reg in registries.values():
        if reg.username_env:
            out[reg.username_env], out[reg.password_env] = reg.username, reg.password
    return out


def _assert_released(registries, repo: str, digest: str | None = None) -> str:
    """Both platforms under one index with the release tags in every registry, and its signature."""
    found = None
    for name in ("ghcr", "ecr", "hub"):
        reg = registries[name]
        tags = http_tags(reg, repo)
        assert set(TAGS) <= set(tags), (name, tags)
        body, _ = http_manifest(reg, repo, "1.2.3")
        index = json.loads(body)
        platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]
                           if m.get("platform", {}).get("os") != "unknown")
        assert platforms == ["linux/amd64", "linux/arm64"], (name, index)
        found = found or project.digest_of(body)
        assert project.digest_of(body) == found
        assert f"{found.replace(':', '-')}.sig" in tags, (name, tags)   # cosign's signature, by digest
    if digest is not None:
        assert digest == found
    return found


@pytest.mark.parametrize("mode", ["auto", "split"])
def test_the_generated_github_workflow_releases(ci_host, registries, offline_base, mode):
    host, password = ci_host
    config = _project(host, registries, offline_base, f"github-{mode}", mode)
    text = _ci_init(host, "github", config)
    gh = cirunner.GitHub(host, text, event="push", ref="refs/tags/v1.2.3", sha=SHA,
                         secrets=_secrets(registries, password))
    outputs = gh.run()
    jobs = [w.split(" ")[0] for w in gh.ran]
    assert "plan" not in jobs                                     # a tag push runs no plan
    if mode == "split":
        assert jobs == ["build", "build", "release"], gh.ran        # one build job per platform, then the merge
    else:
        assert jobs == ["release"], gh.ran
    digest = outputs["release"]["digest"]
    assert digest.startswith("sha256:") and set(TAGS) <= set(outputs["release"]["tags"].split("\n"))
    _assert_released(registries, f"ci/github-{mode}", digest)
    steps = [s.command for s in host.log if s.where.startswith("release")]
    assert "nox -s release" in steps[-1]
    if mode == "auto":
        # the schedule runs only the rescan, in a fresh checkout (no dist/: the registries' tags say what is
        # released), and it passes: the released image is as clean under today's DB as at release time
        nightly = cirunner.GitHub(host, text, event="schedule", ref="refs/heads/main", sha=SHA,
                                  secrets=_secrets(registries, password))
        nightly.run()
        assert [w.split(" ")[0] for w in nightly.ran] == ["rescan"], nightly.ran
        rescan = [s for s in host.log if s.where.startswith("rescan")]
        assert rescan and rescan[-1].command.endswith("nox -s rescan") and rescan[-1].code == 0
        assert f"ci/github-{mode}:1.2.3" in rescan[-1].out, rescan[-1].out[-2000:]
    print(f"\ngithub ({mode}): {' → '.join(gh.ran)}; {len(host.log)} steps so far; released {digest}")


@pytest.mark.parametrize("mode", ["auto", "split"])
def test_the_generated_jenkinsfile_releases(ci_host, registries, offline_base, mode):
    host, password = ci_host
    config = _project(host, registries, offline_base, f"jenkins-{mode}", mode)
    text = _ci_init(host, "jenkins", config)
    secrets = _secrets(registries, password)
    credentials: dict[str, object] = {"cosign-password": password}
    for reg in registries.values():
        if reg.username_env:
            credentials[reg.name] = (reg.username, reg.password)
    jenkins = cirunner.Jenkins(host, text, branch="v1.2.3", tag="v1.2.3", credentials=credentials)
    jenkins.env["GIT_COMMIT"] = SHA
    jenkins.run()
    stages = [w.split(" / ")[-1] for w in jenkins.ran]
    assert "plan" not in stages
    if mode == "split":
        assert {"linux/amd64", "linux/arm64", "release"} <= set(stages), jenkins.ran
    digest = _assert_released(registries, f"ci/jenkins-{mode}")
    report = json.loads((jenkins.workspace / "ci" / f"jenkins-{mode}" / "dist" / "release.json").read_text())
    assert report["digest"] == digest
    assert not any(v in (s.out + s.err) for s in host.log for v in secrets.values()), "a secret in a job log"
    if mode == "auto":
        nightly = cirunner.Jenkins(host, text, branch="main", tag=None, credentials=credentials, timer=True)
        nightly.env["GIT_COMMIT"] = SHA
        nightly.run()
        assert [w.split(" / ")[-1] for w in dict.fromkeys(nightly.ran)] == ["rescan"], nightly.ran
        assert any(f"ci/jenkins-{mode}:1.2.3" in s.out for s in host.log if s.where == "rescan")
    print(f"\njenkins ({mode}): {' → '.join(dict.fromkeys(jenkins.ran))}; released {digest}")


@pytest.mark.parametrize("mode", ["auto", "split"])
def test_the_generated_gitlab_file_runs_green_under_gitlab_ci_local(ci_host, registries, offline_base, mode):
    from pipeline.setup import toolchain as toolchain_mod

    gcl = toolchain_mod.gitlab_ci_local()
    if not gcl.exists():
        pytest.fail(f"{gcl} missing: run 'pipeline doctor --install --tests'", pytrace=False)
    host, password = ci_host
    config = _project(host, registries, offline_base, f"gitlab-{mode}", mode)
    text = _ci_init(host, "gitlab", config)
    secrets = _secrets(registries, password)
    ran, ws = cirunner.gitlab_local(host, text, gcl, tag="v1.2.3", variables=secrets)
    assert "PASS  release" in ran.out, ran.out[-3000:]
    assert "plan" not in [ln.split()[1] for ln in ran.out.splitlines() if ln.startswith((" PASS", " FAIL"))]
    if mode == "split":
        assert ran.out.count(" PASS  build") == 2, ran.out[-3000:]    # one job per platform, then the merge
    try:
        digest = _assert_released(registries, f"ci/gitlab-{mode}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- gitlab-ci-local\n{ran.out[-6000:]}") from None
    dotenv = (ws / "ci" / f"gitlab-{mode}" / "dist" / "release.env").read_text()
    assert f"PIPELINE_DIGEST={digest}" in dotenv
    assert not any(v in ran.out + ran.err for v in secrets.values()), "a secret in the job log"
    print(f"\ngitlab ({mode}) under gitlab-ci-local: {', '.join(ln.strip() for ln in ran.out.splitlines() if ln.startswith(' PASS'))}")
