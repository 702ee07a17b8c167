"""The base-image mirror's pure parts: FROM discovery as BuildKit reads it, the lock file, the config section."""

from __future__ import annotations

import json

import pytest

from pipeline import config
from pipeline.build import froms, lock
from pipeline.errors import ConfigError
from pipeline.refs import parse
from pipeline.tools.registry import rate_limit_of

PLATFORMS = ("linux/amd64", "linux/arm64")


def bases(text: str, args: dict[str, str] | None = None, platforms=PLATFORMS,
          target: str | None = None) -> list[tuple[str, tuple[str, ...]]]:
    st = froms.read(text, args or {}, platforms, "linux/amd64", target)
    return [(froms.full_name(b.ref), b.platforms) for b in st.bases]


def test_args_defaults_build_args_stage_names_and_scratch():
    text = """# syntax=docker/dockerfile:1
ARG BASE=alpine:3.20
ARG GO=1.22
FROM golang:${GO}-bookworm AS build
RUN echo
FROM build AS test
FROM scratch AS empty
from ${BASE}
COPY --from=build /x /x
"""
    assert bases(text) == [("docker.io/library/golang:1.22-bookworm", PLATFORMS),
                           ("docker.io/library/alpine:3.20", PLATFORMS)]
    # a build arg overrides a declared ARG's default; an undeclared one is not seen by FROM
    assert bases(text, {"BASE": "ghcr.io/acme/base:2", "OTHER": "x"})[1][0] == "ghcr.io/acme/base:2"
    st = froms.read(text, {}, PLATFORMS, "linux/amd64")
    assert froms.full_name(st.final_base().ref) == "docker.io/library/alpine:3.20"
    assert froms.full_name(st.final_base("test").ref) == "docker.io/library/golang:1.22-bookworm"
    assert st.final_base("empty") is None


def test_platform_flag_continuations_and_expansion_forms():
    text = """ARG REG
FROM --platform=$BUILDPLATFORM \\
  # a comment inside a continuation
  ${REG:-docker.io}/library/node:20 AS tools
FROM --platform=linux/arm64 busybox AS armtools
FROM ${UNSET-busybox}:${REG:+never}1.36
COPY --from=tools /a /a
RUN --mount=type=bind,from=armtools,target=/x true
"""
    out = bases(text)
    assert out[0] == ("docker.io/library/node:20", ("linux/amd64",))
    assert out[1] == ("docker.io/library/busybox:latest", ("linux/arm64",))
    assert out[2] == ("docker.io/library/busybox:1.36", PLATFORMS)


def test_only_the_stages_the_target_reaches_and_copy_from_images():
    text = """FROM golang:1.22 AS build
FROM debian:12 AS dev
FROM alpine:3.20 AS final
COPY --from=build /app /app
COPY --from=docker.io/tonistiigi/xx:1.4 / /
FROM final AS debug
COPY --from=dev / /dev
"""
    assert [r for r, _ in bases(text, target="final")] == [
        "docker.io/library/golang:1.22", "docker.io/library/alpine:3.20", "docker.io/tonistiigi/xx:1.4"]
    assert {r for r, _ in bases(text)} == {"docker.io/library/golang:1.22", "docker.io/library/debian:12",
                                           "docker.io/library/alpine:3.20", "docker.io/tonistiigi/xx:1.4"}
    with pytest.raises(froms.DockerfileError, match="no stage named 'nope'"):
        froms.read(text, {}, PLATFORMS, "linux/amd64", "nope")


def test_heredoc_bodies_are_not_instructions():
    text = """FROM postgres:16
RUN <<EOF psql
FROM users SELECT 1;
EOF
COPY <<-"END" /etc/motd
\tFROM nothing
\tEND
RUN echo done
"""
    assert bases(text) == [("docker.io/library/postgres:16", PLATFORMS)]


def test_global_args_expand_earlier_args_and_keep_automatic_platform_args():
    text = """\ufeffARG V=3.19
ARG BASE=alpine:${V}
ARG BUILDPLATFORM
ARG NESTED=${UNSET:-${V}}
FROM\t--platform=$BUILDPLATFORM ${BASE} AS b
FROM alpine:${NESTED}
COPY --from=b / /
"""
    assert bases(text) == [("docker.io/library/alpine:3.19", ("linux/amd64",)),
                           ("docker.io/library/alpine:3.19", PLATFORMS)]
    assert bases(text, {"V": "3.20"})[0][0] == "docker.io/library/alpine:3.20"


def test_docker_hub_under_any_name_is_docker_io():
    (one,) = froms.read("FROM index.docker.io/library/alpine:3.19\n", {}, PLATFORMS, "linux/amd64").bases
    assert froms.full_name(one.ref) == "docker.io/library/alpine:3.19"
    assert froms.context_name(one.ref) == "alpine:3.19"


def test_platform_entries_match_with_arm64_default_variant():
    from pipeline.build.mirror import platform_digest
    available = {"linux/amd64": "a", "linux/arm64/v8": "b", "linux/arm/v7": "c", "linux/arm/v6": "d"}
    assert platform_digest(available, "linux/arm64") == "b"
    assert platform_digest(available, "linux/arm/v7") == "c"
    assert platform_digest(available, "linux/s390x") is None


def test_escape_directive():
    text = "# escape=`\nFROM `\n  busybox:1.36\n"
    assert bases(text) == [("docker.io/library/busybox:1.36", PLATFORMS)]


@pytest.mark.parametrize("text, message", [
    ("RUN echo\n", "no FROM"),
    ("ARG B\nFROM ${B}\n", "expands to nothing"),
    ("FROM busybox AS a b\n", "expected FROM"),
    ("FROM Busybox\n", "not a valid repository"),
    ("FROM busybox:${TARGETARCH}\n", "different image per platform"),
])
def test_dockerfiles_the_mirror_cannot_read(text, message):
    with pytest.raises(froms.DockerfileError, match=message):
        froms.read(text, {}, PLATFORMS, "linux/amd64")


def test_context_names_are_docker_short_form():
    assert froms.context_name(parse("docker.io/library/busybox:1.36")) == "busybox:1.36"
    assert froms.context_name(parse("busybox")) == "busybox"
    assert froms.context_name(parse("docker.io/acme/app:latest")) == "acme/app"
    assert froms.context_name(parse("127.0.0.1:9/library/base:1")) == "127.0.0.1:9/library/base:1"
    pinned = "busybox:1.36@sha256:" + "a" * 64
    assert froms.context_name(parse(pinned)) == pinned


def test_lock_round_trip_is_sorted_and_rejects_damage(tmp_path):
    path = tmp_path / "base-images.lock"
    lk = lock.read(path)
    assert not lk.existed and lk.pins == {}
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    lk.pins["docker.io/library/z:1"] = lock.Pin(d1, "application/vnd.oci.image.index.v1+json",
                                                {"linux/arm64": d2, "linux/amd64": d1})
    lk.pins["docker.io/library/a:1"] = lock.Pin(d2, "application/vnd.oci.image.manifest.v1+json")
    assert lk.write() is True
    assert lk.write() is False                    # unchanged content: not rewritten
    data = json.loads(path.read_text())
    assert list(data["images"]) == ["docker.io/library/a:1", "docker.io/library/z:1"]
    assert list(data["images"]["docker.io/library/z:1"]["platforms"]) == ["linux/amd64", "linux/arm64"]
    assert lock.read(path).pins == lk.pins
    path.write_text(json.dumps({"version": 1, "images": {"x": {"digest": "sha256:abc"}}}))
    with pytest.raises(ConfigError, match=r'base-images.lock: images."x".digest: .* not a sha256 digest'):
        lock.read(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        lock.read(path)


def _cfg(mirror: str) -> str:
    return f"""
[image]
name = "app"
[[registries]]
name = "local"
url = "localhost:5000"
[[registries]]
name = "ghcr"
url = "ghcr.io/acme"
[mirror]
{mirror}
"""


@pytest.mark.parametrize("mirror, where", [
    ('enabled = true\nregistry = "nope"', "mirror.registry"),
    ('enabled = true\nprefix = "Bad Prefix"', "mirror.prefix"),
    ('enabled = true\nimages = ["UPPER:1"]', "mirror.images[0]"),
    ('enabled = true\nlock = "  "', "mirror.lock"),
    ('enabled = true\nextra = 1', "mirror.extra"),
])
def test_mirror_config_errors_name_the_field(tmp_path, mirror, where):
    import re
    import tomllib
    with pytest.raises(ConfigError, match=re.escape(f"pipeline.toml: {where}:")):
        config.parse(tomllib.loads(_cfg(mirror)), "pipeline.toml")


def test_mirror_registry_defaults_to_staging_and_owns_its_prefix():
    import tomllib
    cfg = config.parse(tomllib.loads(_cfg('enabled = true')), "x")
    assert cfg.mirror_registry.name == "local"
    assert cfg.is_mirror_repository("local", "mirror/docker.io/library/busybox")
    assert not cfg.is_mirror_repository("local", "app")
    assert not cfg.is_mirror_repository("ghcr", "mirror/docker.io/library/busybox")
    cfg = config.parse(tomllib.loads(_cfg('enabled = true\nregistry = "ghcr"')), "x")
    assert cfg.is_mirror_repository("ghcr", "acme/mirror/docker.io/library/busybox")

    from pipeline.build.mirror import mirror_repository
    assert mirror_repository(cfg, parse("127.0.0.1:5001/team/base:1")) == "acme/mirror/127.0.0.1-5001/team/base"


def test_rate_limit_headers_as_docker_hub_sends_them():
    import httpx
    r = httpx.Response(200, headers={"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "7;w=21600"})
    quota = rate_limit_of(r)
    assert (quota.limit, quota.remaining, quota.window_seconds) == (100, 7, 21600)
    assert quota.low and quota.describe() == "7 of 100 pulls left per 6 h"
    assert not rate_limit_of(httpx.Response(200, headers={"ratelimit-limit": "200;w=21600",
                                                           "ratelimit-remaining": "150;w=21600"})).low
    assert rate_limit_of(httpx.Response(200)) is None
