"""Pure parts of pipeline.setup.toolchain, fed with outputs recorded on a bookworm machine
(tests/data/toolchain/) after toolchain.install() and ensure_dockerd()."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.setup import toolchain as t
from pipeline.tools import buildx, docker

DATA = Path(__file__).resolve().parents[1] / "data" / "toolchain"


def rec(name: str) -> str:
    return (DATA / name).read_text()


# ----------------------------------------------------------------- version parsers


def test_docker_client_and_daemon_versions():
    assert t.parse_docker_version(rec("docker_version.txt")) == "28.2.2"
    assert t.parse_docker_version(rec("dockerd_version.txt")) == "26.1.5+dfsg1"
    assert t.version_tuple("26.1.5+dfsg1") == (26, 1, 5)
    assert t.parse_docker_version("command not found") is None


def test_buildx_trivy_registry_skopeo_versions():
    assert t.parse_buildx_version(rec("buildx_version.txt")) == "0.13.1"
    assert t.parse_buildx_version("github.com/docker/buildx v0.17.1 257815a") == "0.17.1"
    assert t.parse_trivy_version(rec("trivy_version.txt")) == "0.59.1"
    assert t.parse_registry_version(rec("docker_registry_version.txt")) == "2.8.2+ds1"
    assert t.parse_skopeo_version(rec("skopeo_version.txt")) == "1.9.3"


def test_cosign_version_debian_build_says_devel():
    # Debian's cosign 2.5.0 is built without version ldflags: the version comes from the package
    assert t.parse_cosign_version(rec("cosign_version.txt")) is None
    assert t.parse_cosign_version(rec("cosign_version.json")) is None
    assert t.parse_cosign_version("GitVersion:    v2.4.1\nGitCommit: abc\n") == "2.4.1"
    assert t.parse_cosign_version('{"gitVersion": "v1.13.1"}') == "1.13.1"
    assert t._deb_upstream("2.5.0-2+b5") == "2.5.0"
    assert t._deb_upstream("1:1.35.0-4+deb12u1+b1") == "1.35.0"


# ----------------------------------------------------------------- engine and builder


def test_docker_info_containerd_image_store():
    info = docker.parse_docker_info(rec("docker_info_containerd.json"))
    assert info.server_version == "26.1.5+dfsg1"
    assert info.driver == "overlayfs"
    assert info.containerd_snapshotter is True


def test_docker_info_classic_store():
    info = docker.parse_docker_info(rec("docker_info_classic.json"))
    assert info.server_version == "26.1.5+dfsg1"
    assert info.driver == "overlay2"
    assert info.containerd_snapshotter is False


def test_docker_info_daemon_down_has_no_server():
    info = docker.parse_docker_info(rec("docker_info_down.json"))
    assert info.server_version is None
    assert docker.parse_docker_info("").server_version is None
    assert docker.parse_docker_info("not json").server_version is None


def test_buildx_inspect_and_multi_platform_decision():
    b = buildx.parse_buildx_inspect(rec("buildx_inspect_default.txt"))
    assert (b.name, b.driver) == ("default", "docker")
    assert {"linux/amd64", "linux/arm64"} <= set(b.platforms)
    on_containerd = docker.parse_docker_info(rec("docker_info_containerd.json"))
    classic = docker.parse_docker_info(rec("docker_info_classic.json"))
    assert buildx.multi_platform_reason(b.driver, on_containerd)[0] is True
    ok, why = buildx.multi_platform_reason(b.driver, classic)
    assert ok is False and "containerd-snapshotter" in why
    assert buildx.multi_platform_reason("docker-container", None) == (True, "docker-container driver")
    assert buildx.multi_platform_reason("remote", classic)[0] is True
    assert buildx.multi_platform_reason("", None)[0] is False


def test_buildx_inspect_classic_parses_same_shape():
    b = buildx.parse_buildx_inspect(rec("buildx_inspect_classic.txt"))
    assert b.driver == "docker" and "linux/arm/v7" in b.platforms


# ----------------------------------------------------------------- binfmt


def test_binfmt_entry_recorded():
    e = t.parse_binfmt_entry("qemu-aarch64", rec("binfmt_qemu-aarch64.txt"))
    assert e.enabled and e.fix_binary
    assert e.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert t.emulated_arches([e]) == ("arm64",)


def test_binfmt_without_f_flag_or_disabled_does_not_count():
    e = t.parse_binfmt_entry("qemu-aarch64", rec("binfmt_qemu-aarch64.txt"))
    no_f = replace(e, flags="P")
    off = t.parse_binfmt_entry("qemu-aarch64", rec("binfmt_qemu-aarch64.txt").replace("enabled", "disabled", 1))
    assert not off.enabled
    assert t.emulated_arches([no_f, off]) == ()
    assert t.emulated_arches([t.BinfmtEntry("python3.11", True, "/usr/bin/python3.11", "F")]) == ()


def test_binfmt_register_line_from_binfmt_support_spec():
    line = t.binfmt_register_line("aarch64", rec("binfmts_spec_qemu-aarch64.txt"))
    assert line.startswith(r":qemu-aarch64:M:0:\x7f\x45\x4c\x46\x02\x01")
    assert line.endswith(":/usr/libexec/qemu-binfmt/aarch64-binfmt-P:FP")


# ----------------------------------------------------------------- apt sources, dpkg, os-release


def test_trixie_sources_from_the_machines_bookworm_entry():
    text = t.side_sources_text(rec("debian.sources"), base_suite="bookworm", suite="trixie")
    assert text == rec("trixie.sources")
    assert "URIs: http://deb.debian.org/debian\n" in text
    assert "debian-security" not in text


def test_arm64_sources_for_busybox():
    text = t.side_sources_text(rec("debian.sources"), base_suite="bookworm", suite="bookworm", arch="arm64")
    assert text == rec("bookworm-arm64.sources")
    assert "Architectures: arm64" in text


def test_sources_one_line_format_and_other_mirror():
    one_line = ("# comment\ndeb-src http://src.example/debian bookworm main\n"
                "deb [arch=amd64 signed-by=/etc/apt/keyrings/x.gpg] http://mirror.example/debian bookworm main contrib\n"
                "deb http://mirror.example/debian-security bookworm-security main\n")
    text = t.side_sources_text(one_line, base_suite="bookworm", suite="trixie")
    assert "URIs: http://mirror.example/debian\n" in text
    assert "Signed-By: /etc/apt/keyrings/x.gpg" in text
    with pytest.raises(ValueError, match="bookworm"):
        t.side_sources_text("deb http://m/debian bullseye main\n", base_suite="bookworm", suite="trixie")


def test_deb822_disabled_entry_is_ignored():
    text = ("Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n"
            "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\nComponents: main\n")
    assert "http://on.example/debian" in t.side_sources_text(text, base_suite="bookworm", suite="trixie")


def test_side_apt_argv_uses_its_own_state():
    argv = t.side_apt_argv(Path("/c/apt/x"), "download", "busybox-static", arch="arm64")
    assert argv[0] == "apt-get"
    assert "Dir::Etc::sourcelist=/c/apt/x/sources.sources" in argv
    assert "Dir::Etc::sourceparts=-" in argv
    assert "Dir::State::Lists=/c/apt/x/lists" in argv
    assert "Dir::Cache=/c/apt/x/cache" in argv
    assert "APT::Architecture=arm64" in argv and "APT::Architectures=arm64" in argv
    assert argv[-2:] == ["download", "busybox-static"]


def test_dpkg_query_and_os_release():
    installed = t.parse_dpkg_query(rec("dpkg_query.txt"))
    assert installed == frozenset(t.SYSTEM_PACKAGES)
    assert t.parse_dpkg_query("foo rc \nbar ii \nbaz:arm64 ii \n") == {"bar", "baz"}
    osr = t.parse_os_release(rec("os-release.txt"))
    assert (osr["ID"], osr["VERSION_CODENAME"]) == ("debian", "bookworm")


# ----------------------------------------------------------------- the plan


BARE = t.Facts(system="Linux", os_id="debian", codename="bookworm", is_root=True, arch="amd64",
               docker_client="28.2.2", binfmt_mounted=False)
DONE = replace(BARE, installed_debs=frozenset(t.SYSTEM_PACKAGES), dockerd="26.1.5+dfsg1", buildx="0.13.1",
               cosign="2.5.0", trivy="0.59.1", registry="2.8.2+ds1", skopeo="1.9.3",
               busybox_arches=frozenset({"arm64"}), binfmt_mounted=True, emulated=("arm64", "armhf"))


def test_plan_on_a_fresh_bookworm_machine():
    steps = t.plan_install(BARE)
    assert [s.kind for s in steps] == ["mount-binfmt", "apt-install", "side-suite", "busybox", "trivy", "binfmt"]
    assert steps[1].args == t.SYSTEM_PACKAGES
    assert steps[2].args == ("trixie", "docker.io", "docker-buildx", "cosign")  # client already there
    assert steps[3].args == ("arm64",)
    assert "qemu-aarch64" in steps[5].would


def test_plan_is_empty_when_everything_is_there():
    assert t.missing_tools(DONE) == ()
    assert t.plan_install(DONE) == []


def test_plan_only_missing_parts():
    f = replace(DONE, cosign=None, installed_debs=DONE.installed_debs - {"skopeo"}, skopeo=None)
    steps = t.plan_install(f)
    assert [(s.kind, s.args) for s in steps] == [("apt-install", ("skopeo",)), ("side-suite", ("trixie", "cosign"))]


def test_old_engine_and_cosign_v1_are_replaced():
    f = replace(DONE, dockerd="20.10.24+dfsg1", cosign="1.13.1")
    assert set(t.missing_tools(f)) == {"docker-engine", "cosign"}
    assert t.plan_install(f)[0].args == ("trixie", "docker.io", "cosign")


@pytest.mark.parametrize("cosign, missing", [("2", False), ("3", False), ("v3.1.1", False), ("2.5.0", False),
                                             ("1", True), ("1.13.1", True), ("devel", True)])
def test_a_cosign_known_only_by_its_major_is_not_installed_again(cosign, missing):
    """An unpackaged Debian cosign says ``devel``; its major comes from its behaviour ("2", "3"). That is
    an installed cosign: counting it missing reinstalled it on every ``doctor --install``."""
    assert ("cosign" in t.missing_tools(replace(DONE, cosign=cosign))) is missing


def test_missing_docker_client_comes_from_docker_cli():
    f = replace(DONE, docker_client=None)
    assert t.plan_install(f)[0].args == ("trixie", "docker-cli")


def test_trixie_uses_plain_apt():
    f = replace(BARE, codename="trixie", binfmt_mounted=True)
    kinds = [(s.kind, s.args) for s in t.plan_install(f)]
    assert ("apt-install", ("docker.io", "docker-buildx", "cosign")) in kinds


def test_binfmt_step_only_when_not_emulated():
    f = replace(DONE, emulated=("armhf",))
    assert [(s.kind, s.args) for s in t.plan_install(f)] == [("binfmt", ("arm64",))]


def test_not_root_or_other_os_gives_instructions_only():
    user = replace(BARE, is_root=False)
    steps = t.plan_install(user)
    assert steps and all(s.kind == "manual" for s in steps)
    assert any(s.would.startswith("not root") and "trivy" in s.would for s in steps)
    mac = replace(BARE, system="Darwin", os_id="", codename="")
    lines = [s.would for s in t.plan_install(mac)]
    assert "trivy: brew install trivy" in lines
    fedora = replace(BARE, os_id="fedora", os_like=())
    assert all(s.kind == "manual" for s in t.plan_install(fedora))
    ubuntu = replace(BARE, os_id="ubuntu", codename="noble")
    assert t.plan_install(ubuntu)[0].kind == "mount-binfmt"


def test_instructions_cover_every_tool_everywhere():
    for family in t.INSTRUCTIONS.values():
        assert set(family) == set(t.NEEDED_BY)


# ----------------------------------------------------------------- daemon.json


def test_daemon_json_merge_keeps_other_keys():
    merged = json.loads(t.merge_daemon_json('{"debug": true, "features": {"buildkit": true}}'))
    assert merged == {"debug": True, "features": {"buildkit": True, "containerd-snapshotter": True}}
    assert json.loads(t.merge_daemon_json("")) == {"features": {"containerd-snapshotter": True}}
    once = t.merge_daemon_json("{}")
    assert t.merge_daemon_json(once) == once
    with pytest.raises(TypeError):
        t.merge_daemon_json("[]")


def test_needed_by():
    assert t.NEEDED_BY["buildx"] == ("build", "release")
    assert t.NEEDED_BY["trivy"] == ("scan", "release")
    assert t.NEEDED_BY["cosign"] == ("sign", "verify", "release")
    assert t.NEEDED_BY["docker-registry"] == ("registry", "tests")


@pytest.mark.parametrize("stdout, says", [
    (rec("buildx_inspect_daemon_down.txt"), "the docker engine is not running"),
    ("Name:   ci\nDriver: docker-container\nError:  no builder \"ci\" found\n", "cannot inspect buildx builder ci"),
])
def test_buildx_inspect_of_an_unreachable_builder_names_the_cause(monkeypatch, stdout, says):
    # buildx 0.13 exits 0 here: without the Error line a release said "builder default ( driver) cannot build
    # linux/amd64; it supports nothing listed" when the engine was simply down
    monkeypatch.setattr(buildx.proc, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(buildx.proc, "run", lambda *a, **k: buildx.proc.Completed(list(a[0]), 0, stdout, ""))
    with pytest.raises(buildx.ToolError, match=says):
        buildx.inspect_builder("ci" if "ci" in says else None)


def test_buildx_inspect_with_one_node_down_keeps_the_platforms_of_the_others(monkeypatch):
    stdout = ("Name:   multi\nDriver: docker-container\n\nNodes:\nName:      multi0\nError:     ssh: no route\n\n"
              "Name:      multi1\nStatus:    running\nPlatforms: linux/arm64*\n")
    monkeypatch.setattr(buildx.proc, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(buildx.proc, "run", lambda *a, **k: buildx.proc.Completed(list(a[0]), 0, stdout, ""))
    assert buildx.inspect_builder("multi").platforms == ("linux/arm64",)
