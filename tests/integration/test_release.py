"""The release engine on the real toolchain (issue 3 acceptance).

Every release here runs `python -m pipeline` as a separate process, as CI would,
against three real distribution registries; results are checked with an
independent client (skopeo) and raw HTTP, never through our own registry code.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import project
from tests.support.project import RELEASE_TAGS, digest_of, github_env, http_tags, skopeo_raw
from tests.support.project import run_process as pipeline

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS build
ARG MARK=one
RUN echo "built for $(uname -m) ${MARK}" > /built.txt
FROM ${BASE_IMAGE}
COPY --from=build /built.txt /built.txt
COPY app.txt /app.txt
"""


@pytest.fixture(scope="module", autouse=True)
def toolchain(docker_engine, registries, require_tool):
    for tool in ("buildx", "docker-registry", "skopeo"):
        require_tool(tool)


def write_project(tmp: Path, registries: dict[str, Any], offline_base: str, *, name: str,
                  dockerfile: str = DOCKERFILE, **kw: Any) -> Path:
    return project.write_project(tmp, registries, offline_base, name=name, dockerfile=dockerfile, **kw)


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, registries: dict[str, Any]) -> str:
    assert proc.returncode == code, proc.stderr[-3000:]
    err = proc.stderr
    assert "Traceback" not in err and "Traceback" not in proc.stdout
    last = [ln for ln in err.splitlines() if ln.startswith("pipeline: error:")]
    assert len(last) == 1, err[-2000:]
    for reg in registries.values():
        if reg.password:
            assert reg.password not in err and reg.password not in proc.stdout
    return last[0]


# --------------------------------------------------------------------------- the release


@pytest.fixture(scope="module")
def released(tmp_path_factory, registries, offline_base):
    """One tag release of v1.2.3 to the three registries, plus the release manifest."""
    tmp = tmp_path_factory.mktemp("release")
    cfg = write_project(tmp, registries, offline_base, name="team/app")
    proc = pipeline(["release", "--config", str(cfg), "--format", "json"], github_env(), tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, cfg, json.loads(proc.stdout)


def test_same_index_digest_with_release_tags_in_every_registry(released, registries):
    _, _, manifest = released
    digest = manifest["digest"]
    assert manifest["tags"] == RELEASE_TAGS
    for reg in registries.values():
        for tag in RELEASE_TAGS:
            raw = skopeo_raw(reg, f"team/app:{tag}")
            assert raw is not None, f"{reg.name} lacks team/app:{tag}"
            assert digest_of(raw) == digest, f"{reg.name} team/app:{tag}"
        index = json.loads(skopeo_raw(reg, f"team/app@{digest}"))
        assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
        platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]}
        assert platforms == {"linux/amd64", "linux/arm64"}
        for m in index["manifests"]:  # every platform's manifest is there too, by digest
            assert skopeo_raw(reg, f"team/app@{m['digest']}") is not None


def test_release_manifest_describes_the_release(released, registries):
    tmp, _, manifest = released
    on_disk = json.loads((tmp / "dist" / "release.json").read_text())
    assert on_disk["digest"] == manifest["digest"] and on_disk["status"] == "ok"
    assert set(on_disk["platforms"]) == {"linux/amd64", "linux/arm64"}
    by_name = {r["name"]: r for r in on_disk["registries"]}
    assert set(by_name) == {"ghcr", "ecr", "hub"}
    for r in by_name.values():
        assert r["digest"] == manifest["digest"] and sorted(r["tags_written"]) == sorted(RELEASE_TAGS)
    assert [s["stage"] for s in on_disk["stages"]][:3] == ["tags", "mirror", "build"]


def test_release_registries_never_see_candidate_tags(released, registries):
    for reg in registries.values():
        assert sorted(http_tags(reg, "team/app")) == sorted(RELEASE_TAGS)
    assert any(t.startswith("candidate-") for t in http_tags(registries["ecr"], "staging/team/app"))


def test_second_release_does_no_build_and_uploads_nothing(released, registries):
    tmp, cfg, first = released
    offsets = {name: reg.log_offset() for name, reg in registries.items()}
    proc = pipeline(["release", "--config", str(cfg), "--format", "json"], github_env(), tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = json.loads(proc.stdout)
    assert second["digest"] == first["digest"]
    assert second["candidate"]["reused"] is True
    assert "build.started" not in proc.stderr
    for name, reg in registries.items():
        assert reg.uploads_since(offsets[name]) == [], f"{name} received blob uploads on a re-release"
        entry = next(r for r in second["registries"] if r["name"] == name)
        assert entry["tags_written"] == [] and sorted(entry["tags_present"]) == sorted(RELEASE_TAGS)


# --------------------------------------------------------------------------- split mode


def test_split_builds_merge_into_the_same_index_shape(tmp_path, registries, offline_base, released):
    cfg = write_project(tmp_path, registries, offline_base, name="team/split", mode="split")
    digests = tmp_path / "digests"
    for platform in ("linux/amd64", "linux/arm64"):  # as two CI runners would, separately
        proc = pipeline(["build", "--config", str(cfg), "--platform", platform, "--digest-out", str(digests)],
                        github_env(), tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in digests.iterdir()) == ["linux-amd64.json", "linux-arm64.json"]
    proc = pipeline(["release", "--config", str(cfg), "--from-digests", str(digests), "--format", "json"],
                    github_env(), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    split = json.loads(skopeo_raw(registries["hub"], "team/split:1.2.3"))
    single = json.loads(skopeo_raw(registries["hub"], "team/app:1.2.3"))

    def shape(index: dict) -> tuple:
        return (index["mediaType"], tuple((m["mediaType"], m["platform"]["os"], m["platform"]["architecture"])
                                          for m in index["manifests"]))

    assert shape(split) == shape(single)


def test_from_digests_missing_platform_is_a_usage_error(tmp_path, registries, offline_base):
    cfg = write_project(tmp_path, registries, offline_base, name="team/split2", mode="split")
    digests = tmp_path / "digests"
    proc = pipeline(["build", "--config", str(cfg), "--platform", "linux/amd64", "--digest-out", str(digests)],
                    github_env(), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = pipeline(["release", "--config", str(cfg), "--from-digests", str(digests)], github_env(), tmp_path)
    line = assert_clean_failure(proc, 2, registries)
    assert "linux/arm64" in line


# --------------------------------------------------------------------------- crash and resume


def test_killed_between_copy_and_tag_leaves_no_release_tag_then_resumes(tmp_path, registries, offline_base):
    cfg = write_project(tmp_path, registries, offline_base, name="team/crash")
    env = github_env() | {"PIPELINE_CRASH_AFTER": "copy"}
    proc = pipeline(["release", "--config", str(cfg)], env, tmp_path)
    assert proc.returncode == -9, proc.stderr[-3000:]
    for reg in registries.values():
        assert http_tags(reg, "team/crash") == [], f"{reg.name} got a tag from a killed release"
    proc = pipeline(["release", "--config", str(cfg), "--format", "json"], github_env(), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digest = json.loads(proc.stdout)["digest"]
    for reg in registries.values():
        assert digest_of(skopeo_raw(reg, "team/crash:1.2.3")) == digest


# --------------------------------------------------------------------------- failures are one clean line


def test_unreachable_registry_names_it(tmp_path, registries, offline_base):
    cfg = write_project(tmp_path, registries, offline_base, name="team/unreach", release=("ecr",),
                        extra='\n[[registries]]\nname = "gone"\nurl = "127.0.0.1:9"\nauth = "none"\n')
    proc = pipeline(["release", "--config", str(cfg)], github_env(), tmp_path)
    line = assert_clean_failure(proc, 3, registries)
    assert "gone" in line and "127.0.0.1:9" in line
    assert http_tags(registries["ecr"], "team/unreach") == []  # all-or-nothing: no registry got tags


def test_wrong_password_names_the_registry_and_hides_the_password(tmp_path, registries, offline_base):
    cfg = write_project(tmp_path, registries, offline_base, name="team/wrongpw")
    wrong = "not-the-right-password-" + "x" * 8
    env = github_env() | {registries["ghcr"].password_env: wrong}
    proc = pipeline(["release", "--config", str(cfg)], env, tmp_path)
    line = assert_clean_failure(proc, 3, registries)
    assert "ghcr" in line and ("authentication" in line or "denied" in line or "401" in line)
    assert wrong not in proc.stderr and wrong not in proc.stdout
    for reg in registries.values():
        assert http_tags(reg, "team/wrongpw") == []


def test_dockerfile_error_names_file_and_line(tmp_path, registries, offline_base):
    bad = DOCKERFILE + "RUN exit 7\n"
    cfg = write_project(tmp_path, registries, offline_base, name="team/bad", dockerfile=bad)
    proc = pipeline(["release", "--config", str(cfg)], github_env(), tmp_path)
    line = assert_clean_failure(proc, 3, registries)
    assert "Dockerfile:8" in line and "exit code: 7" in line


def test_platform_the_builder_cannot_build(tmp_path, registries, offline_base):
    cfg = write_project(tmp_path, registries, offline_base, name="team/plat", platforms=("linux/amd64", "linux/arm/v7"))
    proc = pipeline(["release", "--config", str(cfg)], github_env(), tmp_path)
    line = assert_clean_failure(proc, 3, registries)
    assert "linux/arm/v7" in line


def test_missing_buildx_is_a_clear_tool_error(tmp_path, registries, offline_base):
    real = subprocess.run(["sh", "-c", "command -v docker"], capture_output=True, text=True).stdout.strip()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(f'#!/bin/sh\ncase " $* " in *" buildx "*)\n'
                    f'  echo "docker: \'buildx\' is not a docker command." >&2; exit 1;;\nesac\nexec {real} "$@"\n')
    fake.chmod(0o755)
    cfg = write_project(tmp_path, registries, offline_base, name="team/nobuildx")
    env = github_env() | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = pipeline(["release", "--config", str(cfg)], env, tmp_path)
    line = assert_clean_failure(proc, 3, registries)
    assert "buildx" in line and "doctor" in line


def test_bad_config_is_exit_2(tmp_path, registries, offline_base):
    cfg = write_project(tmp_path, registries, offline_base, name="team/cfg", extra="\n[copy]\nfailure_policy = \"sometimes\"\n")
    proc = pipeline(["release", "--config", str(cfg)], github_env(), tmp_path)
    line = assert_clean_failure(proc, 2, registries)
    assert "copy.failure_policy" in line


def test_best_effort_tags_where_the_copy_worked_and_names_the_rest(tmp_path, registries, offline_base):
    cfg = write_project(tmp_path, registries, offline_base, name="team/besteffort", release=("ecr", "hub"),
                        extra='\n[copy]\nfailure_policy = "best-effort"\n'
                              '\n[[registries]]\nname = "gone"\nurl = "127.0.0.1:9"\nauth = "none"\n')
    proc = pipeline(["release", "--config", str(cfg), "--format", "json"], github_env(), tmp_path)
    line = assert_clean_failure(proc, 3, registries)
    assert "gone" in line
    manifest = json.loads(proc.stdout)
    for name in ("ecr", "hub"):
        assert sorted(http_tags(registries[name], "team/besteffort")) == sorted(RELEASE_TAGS)
        assert digest_of(skopeo_raw(registries[name], "team/besteffort:1.2.3")) == manifest["digest"]
    gone = next(r for r in manifest["registries"] if r["name"] == "gone")
    assert gone["digest"] is None and "gone" in gone["error"]
