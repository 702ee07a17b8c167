"""buildx argv is a pure function of a BuildSpec; failures summarise to one line."""

from __future__ import annotations

import json
import os

from pipeline.build.key import build_key, dockerfile_arg_default
from pipeline.tools import buildx
from pipeline.tools.buildx import BuildSpec, build_argv, summarize_failure, unsupported_platforms
from pipeline.tools.registry import index_platforms, platform_name


def test_build_argv_single_multi_platform_to_a_local_layout():
    spec = BuildSpec(context="ctx", dockerfile="ctx/Dockerfile", platforms=("linux/amd64", "linux/arm64"),
                     build_args=(("A", "1"),), labels=(("org.opencontainers.image.version", "1.2.3"),),
                     annotations=(("manifest:org.opencontainers.image.version", "1.2.3"),), target="runtime",
                     cache_from=("type=registry,ref=reg:5000/app:buildcache",), cache_to=("type=inline",),
                     metadata_file="/tmp/m.json", progress="plain", output="type=oci,dest=/tmp/out,tar=false",
                     build_contexts=(("base.invalid/busybox:1", "oci-layout:///x@sha256:" + "a" * 64),))
    assert build_argv(spec) == [
        "docker", "buildx", "build", "--file", "ctx/Dockerfile", "--platform", "linux/amd64,linux/arm64",
        "--progress=plain", "--provenance=false", "--target", "runtime", "--build-arg", "A=1",
        "--label", "org.opencontainers.image.version=1.2.3",
        "--annotation", "manifest:org.opencontainers.image.version=1.2.3",
        "--build-context", "base.invalid/busybox:1=oci-layout:///x@sha256:" + "a" * 64,
        "--cache-from", "type=registry,ref=reg:5000/app:buildcache",
        "--cache-to", "type=inline", "--metadata-file", "/tmp/m.json",
        "--output", "type=oci,dest=/tmp/out,tar=false", "ctx"]


def test_only_builders_that_can_export_a_layout_get_one():
    from pipeline.tools.buildx import exports_oci
    from pipeline.tools.docker import EngineInfo

    assert exports_oci("docker", EngineInfo("26.1.5", "overlayfs", True))
    assert not exports_oci("docker", EngineInfo("26.1.5", "overlay2", False)) and not exports_oci("docker", None)
    assert exports_oci("docker-container", None) and exports_oci("kubernetes", None)


def test_build_argv_builder_provenance_no_push():
    argv = build_argv(BuildSpec(context=".", dockerfile="Dockerfile", platforms=("linux/arm64",), builder="remote",
                                provenance=True))
    assert argv[:5] == ["docker", "buildx", "build", "--builder", "remote"]
    assert "--provenance=mode=max" in argv and "--output" not in argv and argv[-1] == "."


def test_secrets_never_go_on_the_build_command_line():
    argv = build_argv(BuildSpec(context=".", dockerfile="Dockerfile", platforms=("linux/amd64",)))
    assert not any("password" in a.lower() or "token" in a.lower() for a in argv)


def test_unsupported_platforms():
    supported = ("linux/amd64", "linux/amd64/v2", "linux/arm64", "linux/riscv64")
    assert unsupported_platforms(["linux/amd64", "linux/arm64"], supported) == []
    assert unsupported_platforms(["linux/arm/v7", "linux/arm64/v8"], supported) == ["linux/arm/v7"]


def test_failure_summary_names_file_and_line():
    out = """#9 [runtime 3/4] RUN exit 7
#9 ERROR: process "/bin/sh -c exit 7" did not complete successfully: exit code: 7
------
 > [runtime 3/4] RUN exit 7:
------
Dockerfile:8
--------------------
   6 |     COPY app.txt /app.txt
   7 | >>> RUN exit 7
--------------------
ERROR: failed to solve: process "/bin/sh -c exit 7" did not complete successfully: exit code: 7"""
    assert summarize_failure(out, "ctx/Dockerfile") == (
        'ctx/Dockerfile:8: failed to solve: process "/bin/sh -c exit 7" did not complete successfully: exit code: 7')
    assert "exec format error" not in summarize_failure("ERROR: boom", "D")
    assert "qemu" in summarize_failure("exec /bin/sh: exec format error\nERROR: failed to solve", "D")


def test_build_key_depends_on_every_input_but_not_on_order_of_keys():
    base = {"context": "git:abc", "dockerfile": "d", "build_args": {"A": "1", "B": "2"},
            "platforms": ["linux/amd64"], "target": None, "labels": {}, "annotations": {}, "provenance": False}
    same = dict(base, build_args={"B": "2", "A": "1"})
    assert build_key(base) == build_key(same)
    for key, value in (("context", "git:abd"), ("platforms", ["linux/arm64"]), ("target", "x"),
                       ("build_args", {"A": "2", "B": "2"})):
        assert build_key(dict(base, **{key: value})) != build_key(base)


def test_dockerfile_arg_default():
    text = "# x\nARG BASE_IMAGE=busybox:1.36\nFROM ${BASE_IMAGE}\n"
    assert dockerfile_arg_default(text, "BASE_IMAGE") == "busybox:1.36"
    assert dockerfile_arg_default("ARG BASE_IMAGE\n", "BASE_IMAGE") is None


def test_index_platforms_leave_attestations_out():
    index = {"manifests": [
        {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:c", "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
    ]}
    assert index_platforms(index) == {"linux/amd64": "sha256:a", "linux/arm64/v8": "sha256:b"}
    assert platform_name(index["manifests"][2]["platform"]) is None   # the attestation names no platform


# --------------------------------------------------------------------------- the plugin the docker CLI would run


def _plugin(directory, executable=True):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "docker-buildx"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755 if executable else 0o644)
    return str(path)


def test_buildx_runs_as_the_plugin_the_docker_cli_would_pick(tmp_path, monkeypatch):
    system = tmp_path / "system"
    monkeypatch.setattr(buildx, "SYSTEM_PLUGIN_DIRS", (str(system),))
    config = tmp_path / "docker"
    config.mkdir()
    env = {"DOCKER_CONFIG": str(config)}
    client = tmp_path / "client" / "docker"                       # a docker CLI binary (not a script)
    client.parent.mkdir()
    client.write_bytes(b"\x7fELF\x02\x01")
    client.chmod(0o755)
    monkeypatch.setenv("PATH", f"{client.parent}:{os.environ['PATH']}")
    assert buildx.direct(["docker", "buildx", "inspect"], env) == ["docker", "buildx", "inspect"]   # none: docker
    sys_plugin = _plugin(system)
    assert buildx.direct(["docker", "buildx", "build", "."], env) == [sys_plugin, "build", "."]
    user_plugin = _plugin(config / "cli-plugins")                 # $DOCKER_CONFIG/cli-plugins before system dirs
    assert buildx.direct(["docker", "buildx", "inspect"], env) == [user_plugin, "inspect"]
    extra = _plugin(tmp_path / "extra")                           # cliPluginsExtraDirs before both
    (config / "config.json").write_text(json.dumps({"cliPluginsExtraDirs": [str(tmp_path / "extra")]}))
    assert buildx.direct(["docker", "buildx", "inspect"], env)[0] == extra
    _plugin(tmp_path / "extra", executable=False)                 # not executable: the docker CLI skips it too
    assert buildx.direct(["docker", "buildx", "inspect"], env)[0] == user_plugin
    assert buildx.direct(["docker", "info"], env) == ["docker", "info"]
    wrapper = tmp_path / "bin" / "docker"                         # docker is a wrapper script: it decides
    wrapper.parent.mkdir()
    wrapper.write_text("#!/bin/sh\nexec /usr/bin/docker \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{client.parent}")
    assert buildx.direct(["docker", "buildx", "inspect"], env) == ["docker", "buildx", "inspect"]


def test_only_a_build_that_failed_on_its_cache_is_run_again_without_it():
    log = ("#3 importing cache manifest from 127.0.0.1:5000/app:buildcache\n#3 DONE 0.0s\n"
           "#7 [2/2] RUN false\n#7 ERROR: process \"/bin/sh -c false\" did not complete successfully: exit code: 1\n")
    assert not buildx.cache_failure(log + "ERROR: failed to solve: process \"/bin/sh -c false\" did not complete"
                                          " successfully: exit code: 1\n")
    assert not buildx.cache_failure("ERROR: failed to solve: failed to compute cache key: \"/app.txt\": not found")
    assert buildx.cache_failure(log + "ERROR: failed to solve: 127.0.0.1:5000/app:buildcache: unexpected status"
                                      " from HEAD request: 503 Service Unavailable\n")
    assert buildx.cache_failure("ERROR: failed to solve: failed to fetch cache manifest: EOF")


def test_old_layouts_are_pruned_but_never_one_in_use(tmp_path):
    import time as _time

    from pipeline.build import local

    root = tmp_path / "images"
    old = _time.time() - 7200
    for name in ("a", "b", "c", "d", ".x.building"):
        (root / name).mkdir(parents=True)
        os.utime(root / name, (old, old))
    os.utime(root / "b", (old + 60, old + 60))                    # the newest of the old ones
    (root / "fresh").mkdir()                                      # used a minute ago by another release
    local.prune_layouts(root, keep=3, current=root / "a")
    assert sorted(p.name for p in root.iterdir()) == ["a", "b", "fresh"]


def test_build_secrets_go_to_buildkit_as_files_never_as_values():
    argv = build_argv(BuildSpec(context=".", dockerfile="Dockerfile", platforms=("linux/amd64",),
                                secrets=(("npm", "/tmp/pipeline-secrets-x/secret-0"),)))
    assert argv[argv.index("--secret") + 1] == "id=npm,src=/tmp/pipeline-secrets-x/secret-0"
    assert not any(a.startswith("env=") or ",env=" in a for a in argv)
