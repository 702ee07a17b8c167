"""Tests for pipeline.metadata.versions: node-semver (strict) and @renovate/pep440 as metadata-action uses them.

Expected values come from the libraries' own test suites and from
docker/metadata-action ``__tests__/meta.test.ts``; each block names its source.
Values marked "[oracle]" were produced by running the real JS libraries
(semver 7.8.6, @renovate/pep440 1.0.0) on the same input.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.metadata.versions import (
    MAX_LENGTH,
    MAX_SAFE_INTEGER,
    Pep440,
    SemVer,
    js_number_to_string,
    parse_pep440,
    parse_semver,
)

# =========================================================================== #
# node-semver
# =========================================================================== #

# npm/node-semver test/fixtures/valid-versions.js
# [version, major, minor, patch, prerelease, build]
NODE_SEMVER_VALID = [
    ("1.0.0", 1, 0, 0, (), ()),
    ("2.1.0", 2, 1, 0, (), ()),
    ("3.2.1", 3, 2, 1, (), ()),
    ("v1.2.3", 1, 2, 3, (), ()),
    ("1.2.3-0", 1, 2, 3, (0,), ()),
    ("1.2.3-123", 1, 2, 3, (123,), ()),
    ("1.2.3-1.2.3", 1, 2, 3, (1, 2, 3), ()),
    ("1.2.3-1a", 1, 2, 3, ("1a",), ()),
    ("1.2.3-a1", 1, 2, 3, ("a1",), ()),
    ("1.2.3-alpha", 1, 2, 3, ("alpha",), ()),
    ("1.2.3-alpha.1", 1, 2, 3, ("alpha", 1), ()),
    ("1.2.3-alpha-1", 1, 2, 3, ("alpha-1",), ()),
    ("1.2.3-alpha-.-beta", 1, 2, 3, ("alpha-", "-beta"), ()),
    ("1.2.3+456", 1, 2, 3, (), ("456",)),
    ("1.2.3+build", 1, 2, 3, (), ("build",)),
    ("1.2.3+new-build", 1, 2, 3, (), ("new-build",)),
    ("1.2.3+build.1", 1, 2, 3, (), ("build", "1")),
    ("1.2.3+build.1a", 1, 2, 3, (), ("build", "1a")),
    ("1.2.3+build.a1", 1, 2, 3, (), ("build", "a1")),
    ("1.2.3+build.alpha", 1, 2, 3, (), ("build", "alpha")),
    ("1.2.3+build.alpha.beta", 1, 2, 3, (), ("build", "alpha", "beta")),
    ("1.2.3-alpha+build", 1, 2, 3, ("alpha",), ("build",)),
]


@pytest.mark.parametrize(("text", "major", "minor", "patch", "pre", "build"), NODE_SEMVER_VALID)
def test_semver_node_semver_valid_fixture(text, major, minor, patch, pre, build):
    sv = parse_semver(text)
    assert sv == SemVer(major, minor, patch, pre, build)
    assert sv.raw == text


# npm/node-semver test/fixtures/invalid-versions.js (string cases)
@pytest.mark.parametrize(
    "text",
    [
        "1" * (MAX_LENGTH - 1) + ".0.0",  # too long
        f"{MAX_SAFE_INTEGER}0.0.0",  # too big
        f"0.{MAX_SAFE_INTEGER}0.0",
        f"0.0.{MAX_SAFE_INTEGER}0",
        "hello, world",
        "xyz",
    ],
)
def test_semver_node_semver_invalid_fixture(text):
    assert parse_semver(text) is None


@pytest.mark.parametrize("value", [None, 123, 1.2, ["1.2.3"]])
def test_semver_non_strings_are_invalid(value):
    # node-semver: "regexp is not a string", "obj with a tostring is not a string"
    assert parse_semver(value) is None


# tags.md §2 notes and metadata-action meta.test.ts tag02/tag14/tag24/tag27.
@pytest.mark.parametrize(
    "text",
    [
        "1.2",  # tag24 uses pep440 for this
        "1.2.3rc2",  # tag27: pep440 only
        "20200110-RC2",  # tag02: not semver
        "release1",  # tag01
        "sometag",  # tag14 / tag30
        "v1.1",
        "1",
        "",
        "01.2.3",  # leading zeros are not allowed in strict mode
        "1.02.3",
        "1.2.03",
        "1.2.3-01",  # numeric prerelease identifier with a leading zero
        "1.2.3-alpha.01",
        "=1.2.3",  # '=' is loose-only
        "V1.2.3",  # only lower-case v
        "vv1.2.3",
        "v 1.2.3",
        "1.2.3.4",
        "1.2.3-",
        "1.2.3+",
        "1.2.3-a..b",
        "1.2.3+a..b",
        "1.2.3-beta_1",
        "1.2.3 beta",
        "1.2.3-é",  # JS [a-zA-Z] is ASCII only
        "١.٢.٣",  # Arabic-Indic digits: JS \d is ASCII only
        "1.2.3alpha",  # loose only (prerelease without hyphen)
        "\x1c1.2.3",  # Python strips \x1c, JS trim() does not
        "1.2.3\x85",
    ],
)
def test_semver_strict_rejections(text):
    assert parse_semver(text) is None


# metadata-action meta.test.ts tag11/tag12/tag13/tag31, push14, and tags.md §4.
@pytest.mark.parametrize(
    ("text", "version", "major", "minor", "patch", "is_pre"),
    [
        ("v1.1.1", "1.1.1", "1", "1", "1", False),  # tag11/tag12
        ("v2.0.8-beta.67", "2.0.8-beta.67", "2", "0", "8", True),  # tag13/tag31
        ("v1.2.3", "1.2.3", "1", "2", "3", False),  # push14 value=v1.2.3
        ("v0.1.2", "0.1.2", "0", "1", "2", False),  # tags.md §4: major zero emits "0"
        ("1.0.0-rc.1+build.5", "1.0.0-rc.1", "1", "0", "0", True),  # build dropped
        ("10.20.30", "10.20.30", "10", "20", "30", False),
    ],
)
def test_semver_metadata_action_placeholders(text, version, major, minor, patch, is_pre):
    sv = parse_semver(text)
    assert sv is not None
    assert sv.version == version
    assert sv.is_prerelease is is_pre
    assert sv.placeholders(text) == {
        "raw": text,
        "version": version,
        "major": major,
        "minor": minor,
        "patch": patch,
    }


def test_semver_whitespace_is_js_trimmed_and_raw_keeps_it():
    # classes/semver.js: version.trim().match(...); this.raw = version
    for text in [" 1.2.3 ", "\t1.2.3\n", "\ufeff1.2.3", "1.2.3\u3000", "\u2028v1.2.3\u00a0"]:
        sv = parse_semver(text)
        assert sv is not None, repr(text)
        assert sv.version == "1.2.3"
        assert sv.raw == text


def test_semver_max_length_counts_untrimmed_input():
    # classes/semver.js checks version.length > MAX_LENGTH before trimming.
    base = "1.2.3+" + "b" * (MAX_LENGTH - 6)
    assert len(base) == MAX_LENGTH
    assert parse_semver(base) is not None
    assert parse_semver(base + "b") is None
    assert parse_semver(" " + base) is None  # 257 characters before trim
    assert parse_semver(" " + base[:-1]) is not None


def test_semver_max_safe_integer_bounds():
    # [oracle] major/minor/patch up to Number.MAX_SAFE_INTEGER; one more is invalid.
    assert parse_semver(f"{MAX_SAFE_INTEGER}.0.0").major == MAX_SAFE_INTEGER
    assert parse_semver(f"0.0.{MAX_SAFE_INTEGER}").version == f"0.0.{MAX_SAFE_INTEGER}"
    assert parse_semver(f"{MAX_SAFE_INTEGER + 1}.0.0") is None
    assert parse_semver(f"0.{MAX_SAFE_INTEGER + 2}.0") is None


def test_semver_big_prerelease_numbers_stay_strings():
    # classes/semver.js numberifies only ids with 0 <= num < MAX_SAFE_INTEGER.
    sv = parse_semver(f"1.2.3-{MAX_SAFE_INTEGER - 1}.{MAX_SAFE_INTEGER}.99999999999999999999")
    assert sv.prerelease == (MAX_SAFE_INTEGER - 1, str(MAX_SAFE_INTEGER), "99999999999999999999")
    assert sv.version == f"1.2.3-{MAX_SAFE_INTEGER - 1}.{MAX_SAFE_INTEGER}.99999999999999999999"


def test_semver_trailing_newline_is_trimmed_not_matched_by_dollar():
    # A Python `$` would accept "1.2.3\nfoo"-like tails; JS anchors at the end.
    assert parse_semver("1.2.3\nx") is None
    assert parse_semver("1.2.3\n").version == "1.2.3"


def test_semver_equality_ignores_raw_and_str_is_version():
    assert parse_semver("v1.2.3") == parse_semver("1.2.3")
    assert str(parse_semver("v1.2.3-rc.1+b")) == "1.2.3-rc.1"


_num = st.integers(min_value=0, max_value=MAX_SAFE_INTEGER)
_alnum = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=8
)
_pre_id = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    _alnum.filter(lambda s: not s.isdigit()),
)


@st.composite
def _semver_strings(draw):
    major, minor, patch = draw(_num), draw(_num), draw(_num)
    pre = draw(st.lists(_pre_id, max_size=3))
    build = draw(st.lists(_alnum, max_size=3))
    prefix = draw(st.sampled_from(["", "v"]))
    core = f"{major}.{minor}.{patch}" + (("-" + ".".join(pre)) if pre else "")
    text = prefix + core + (("+" + ".".join(build)) if build else "")
    return text, core, (major, minor, patch), bool(pre)


@settings(max_examples=300)
@given(_semver_strings())
def test_semver_generated_versions_round_trip(case):
    text, core, (major, minor, patch), has_pre = case
    if len(text) > MAX_LENGTH:
        assert parse_semver(text) is None
        return
    sv = parse_semver(text)
    assert sv is not None
    assert (sv.major, sv.minor, sv.patch) == (major, minor, patch)
    assert sv.version == core
    assert sv.is_prerelease is has_pre
    again = parse_semver(sv.version)  # build metadata is not part of `version`
    assert again == SemVer(sv.major, sv.minor, sv.patch, sv.prerelease)
    assert again.version == sv.version


@settings(max_examples=300)
@given(st.text(alphabet="0123456789.-+vV= abAZ\n\t", max_size=20))
def test_semver_never_crashes_and_version_is_stable(text):
    sv = parse_semver(text)
    if sv is not None:
        assert parse_semver(sv.version).version == sv.version


# =========================================================================== #
# @renovate/pep440
# =========================================================================== #

# renovatebot/pep440 test/fixture.js VERSIONS (all valid)
PEP440_VERSIONS = [
    "1.0.dev456", "1.0a1", "1.0a2.dev456", "1.0a12.dev456", "1.0a12", "1.0b1.dev456", "1.0b2",
    "1.0b2.post345.dev456", "1.0b2.post345", "1.0b2-346", "1.0c1.dev456", "1.0c1", "1.0rc2", "1.0c3",
    "1.0", "1.0.post456.dev34", "1.0.post456", "1.1.dev1", "1.2+123abc", "1.2+123abc456", "1.2+abc",
    "1.2+abc123", "1.2+abc123def", "1.2+1234.abc", "1.2+123456", "1.2.r32+123456", "1.2.rev33+123456",
    "1!1.0.dev456", "1!1.0a1", "1!1.0a2.dev456", "1!1.0a12.dev456", "1!1.0a12", "1!1.0b1.dev456",
    "1!1.0b2", "1!1.0b2.post345.dev456", "1!1.0b2.post345", "1!1.0b2-346", "1!1.0c1.dev456", "1!1.0c1",
    "1!1.0rc2", "1!1.0c3", "1!1.0", "1!1.0.post456.dev34", "1!1.0.post456", "1!1.1.dev1",
    "1!1.2+123abc", "1!1.2+123abc456", "1!1.2+abc", "1!1.2+abc123", "1!1.2+abc123def",
    "1!1.2+1234.abc", "1!1.2+123456", "1!1.2.r32+123456", "1!1.2.rev33+123456",
]  # fmt: skip


@pytest.mark.parametrize("text", PEP440_VERSIONS)
def test_pep440_fixture_versions_are_valid(text):
    assert parse_pep440(text) is not None


# renovatebot/pep440 test/fixture.js INVALID_VERSIONS (+ non-strings)
@pytest.mark.parametrize(
    "text",
    ["french toast", "1.0+a+", "1.0++", "1.0+_foobar", "1.0+foo&asd", "1.0+1+1", "", None, True, [], {}],
)
def test_pep440_fixture_invalid_versions(text):
    assert parse_pep440(text) is None


# renovatebot/pep440 test/version.test.js "clean(version)" table.
PEP440_CLEAN = [
    ("1.0dev", "1.0.dev0"), ("1.0.dev", "1.0.dev0"), ("1.0dev1", "1.0.dev1"), ("1.0-dev", "1.0.dev0"),
    ("1.0-dev1", "1.0.dev1"), ("1.0DEV", "1.0.dev0"), ("1.0.DEV", "1.0.dev0"), ("1.0DEV1", "1.0.dev1"),
    ("1.0.DEV1", "1.0.dev1"), ("1.0-DEV", "1.0.dev0"), ("1.0-DEV1", "1.0.dev1"),
    ("1.0a", "1.0a0"), ("1.0.a", "1.0a0"), ("1.0.a1", "1.0a1"), ("1.0-a", "1.0a0"), ("1.0-a1", "1.0a1"),
    ("1.0alpha", "1.0a0"), ("1.0.alpha", "1.0a0"), ("1.0.alpha1", "1.0a1"), ("1.0-alpha", "1.0a0"),
    ("1.0-alpha1", "1.0a1"), ("1.0A", "1.0a0"), ("1.0.A", "1.0a0"), ("1.0.A1", "1.0a1"), ("1.0-A", "1.0a0"),
    ("1.0-A1", "1.0a1"), ("1.0ALPHA", "1.0a0"), ("1.0.ALPHA", "1.0a0"), ("1.0.ALPHA1", "1.0a1"),
    ("1.0-ALPHA", "1.0a0"), ("1.0-ALPHA1", "1.0a1"),
    ("1.0b", "1.0b0"), ("1.0.b", "1.0b0"), ("1.0.b1", "1.0b1"), ("1.0-b", "1.0b0"), ("1.0-b1", "1.0b1"),
    ("1.0beta", "1.0b0"), ("1.0.beta", "1.0b0"), ("1.0.beta1", "1.0b1"), ("1.0-beta", "1.0b0"),
    ("1.0-beta1", "1.0b1"), ("1.0B", "1.0b0"), ("1.0.B", "1.0b0"), ("1.0.B1", "1.0b1"), ("1.0-B", "1.0b0"),
    ("1.0-B1", "1.0b1"), ("1.0BETA", "1.0b0"), ("1.0.BETA", "1.0b0"), ("1.0.BETA1", "1.0b1"),
    ("1.0-BETA", "1.0b0"), ("1.0-BETA1", "1.0b1"),
    ("1.0c", "1.0rc0"), ("1.0.c", "1.0rc0"), ("1.0.c1", "1.0rc1"), ("1.0-c", "1.0rc0"), ("1.0-c1", "1.0rc1"),
    ("1.0rc", "1.0rc0"), ("1.0.rc", "1.0rc0"), ("1.0.rc1", "1.0rc1"), ("1.0-rc", "1.0rc0"),
    ("1.0-rc1", "1.0rc1"), ("1.0C", "1.0rc0"), ("1.0.C", "1.0rc0"), ("1.0.C1", "1.0rc1"), ("1.0-C", "1.0rc0"),
    ("1.0-C1", "1.0rc1"), ("1.0RC", "1.0rc0"), ("1.0.RC", "1.0rc0"), ("1.0.RC1", "1.0rc1"),
    ("1.0-RC", "1.0rc0"), ("1.0-RC1", "1.0rc1"),
    ("1.0post", "1.0.post0"), ("1.0.post", "1.0.post0"), ("1.0post1", "1.0.post1"), ("1.0-post", "1.0.post0"),
    ("1.0-post1", "1.0.post1"), ("1.0POST", "1.0.post0"), ("1.0.POST", "1.0.post0"),
    ("1.0POST1", "1.0.post1"), ("1.0r", "1.0.post0"), ("1.0rev", "1.0.post0"), ("1.0.POST1", "1.0.post1"),
    ("1.0.r1", "1.0.post1"), ("1.0.rev1", "1.0.post1"), ("1.0-POST", "1.0.post0"),
    ("1.0-POST1", "1.0.post1"), ("1.0-5", "1.0.post5"), ("1.0-r5", "1.0.post5"), ("1.0-rev5", "1.0.post5"),
    ("1.0+AbC", "1.0+abc"),
    ("1.01", "1.1"), ("1.0a05", "1.0a5"), ("1.0b07", "1.0b7"), ("1.0c056", "1.0rc56"), ("1.0rc09", "1.0rc9"),
    ("1.0.post000", "1.0.post0"), ("1.1.dev09000", "1.1.dev9000"), ("00!1.2", "1.2"), ("0100!0.0", "100!0.0"),
    ("v1.0", "1.0"), ("1.0c1", "1.0rc1"),
    # pep440 test/version.test.js also has "pre"/"preview" via the regex; [oracle]:
    ("1.0pre2", "1.0rc2"), ("1.0-preview.3", "1.0rc3"), ("1.0_PREVIEW", "1.0rc0"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "normalized"), PEP440_CLEAN)
def test_pep440_clean_table(text, normalized):
    assert parse_pep440(text).normalized == normalized


def test_pep440_whitespace_is_rejected_by_valid():
    # metadata-action validates with valid() (no \s*), so clean()'s whitespace
    # tolerance ("   v1.0\t\n" -> "1.0") never applies.
    for text in ["   v1.0\t\n", " 1.0", "1.0 ", "1.0\n"]:
        assert parse_pep440(text) is None


# renovatebot/pep440 test/version.explain.test.js: public, base_version, epoch,
# release, local, pre, dev, post, for each version.
# (version, public, base_version, epoch, release, local, pre, dev, post)
PEP440_EXPLAIN = [
    ("1.0", "1.0", "1.0", 0, (1, 0), None, None, None, None),
    ("1.0.dev0", "1.0.dev0", "1.0", 0, (1, 0), None, None, 0, None),
    ("1.0.dev6", "1.0.dev6", "1.0", 0, (1, 0), None, None, 6, None),
    ("1.0a1", "1.0a1", "1.0", 0, (1, 0), None, ("a", 1), None, None),
    ("1.0a1.post5", "1.0a1.post5", "1.0", 0, (1, 0), None, ("a", 1), None, 5),
    ("1.0a1.post5.dev6", "1.0a1.post5.dev6", "1.0", 0, (1, 0), None, ("a", 1), 6, 5),
    ("1.0rc4", "1.0rc4", "1.0", 0, (1, 0), None, ("rc", 4), None, None),
    ("1.0.post5", "1.0.post5", "1.0", 0, (1, 0), None, None, None, 5),
    ("1!1.0", "1!1.0", "1!1.0", 1, (1, 0), None, None, None, None),
    ("1!1.0.dev6", "1!1.0.dev6", "1!1.0", 1, (1, 0), None, None, 6, None),
    ("1!1.0a1", "1!1.0a1", "1!1.0", 1, (1, 0), None, ("a", 1), None, None),
    ("1!1.0a1.post5", "1!1.0a1.post5", "1!1.0", 1, (1, 0), None, ("a", 1), None, 5),
    ("1!1.0a1.post5.dev6", "1!1.0a1.post5.dev6", "1!1.0", 1, (1, 0), None, ("a", 1), 6, 5),
    ("1!1.0rc4", "1!1.0rc4", "1!1.0", 1, (1, 0), None, ("rc", 4), None, None),
    ("1!1.0.post5", "1!1.0.post5", "1!1.0", 1, (1, 0), None, None, None, 5),
    ("1.0+deadbeef", "1.0", "1.0", 0, (1, 0), "deadbeef", None, None, None),
    ("1.0.dev6+deadbeef", "1.0.dev6", "1.0", 0, (1, 0), "deadbeef", None, 6, None),
    ("1.0a1+deadbeef", "1.0a1", "1.0", 0, (1, 0), "deadbeef", ("a", 1), None, None),
    ("1.0a1.post5+deadbeef", "1.0a1.post5", "1.0", 0, (1, 0), "deadbeef", ("a", 1), None, 5),
    ("1.0a1.post5.dev6+deadbeef", "1.0a1.post5.dev6", "1.0", 0, (1, 0), "deadbeef", ("a", 1), 6, 5),
    ("1.0rc4+deadbeef", "1.0rc4", "1.0", 0, (1, 0), "deadbeef", ("rc", 4), None, None),
    ("1.0.post5+deadbeef", "1.0.post5", "1.0", 0, (1, 0), "deadbeef", None, None, 5),
    ("1!1.0+deadbeef", "1!1.0", "1!1.0", 1, (1, 0), "deadbeef", None, None, None),
    ("1!1.0.dev6+deadbeef", "1!1.0.dev6", "1!1.0", 1, (1, 0), "deadbeef", None, 6, None),
    ("1!1.0a1+deadbeef", "1!1.0a1", "1!1.0", 1, (1, 0), "deadbeef", ("a", 1), None, None),
    ("1!1.0a1.post5+deadbeef", "1!1.0a1.post5", "1!1.0", 1, (1, 0), "deadbeef", ("a", 1), None, 5),
    ("1!1.0a1.post5.dev6+deadbeef", "1!1.0a1.post5.dev6", "1!1.0", 1, (1, 0), "deadbeef", ("a", 1), 6, 5),
    ("1!1.0rc4+deadbeef", "1!1.0rc4", "1!1.0", 1, (1, 0), "deadbeef", ("rc", 4), None, None),
    ("1!1.0.post5+deadbeef", "1!1.0.post5", "1!1.0", 1, (1, 0), "deadbeef", None, None, 5),
]


@pytest.mark.parametrize(
    ("text", "public", "base_version", "epoch", "release", "local", "pre", "dev", "post"), PEP440_EXPLAIN
)
def test_pep440_explain_table(text, public, base_version, epoch, release, local, pre, dev, post):
    pv = parse_pep440(text)
    assert pv.public == public
    assert pv.base_version == base_version
    assert pv.epoch == epoch
    assert pv.release == release
    assert pv.local == local
    assert pv.pre == pre
    assert pv.dev == dev
    assert pv.post == post
    assert pv.is_devrelease is (dev is not None)
    assert pv.is_postrelease is (post is not None)


# renovatebot/pep440 test/version.explain.test.js "explain(version).is_prerelease"
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.0.dev0", True), ("1.0.dev1", True), ("1.0a1.dev1", True), ("1.0b1.dev1", True),
        ("1.0c1.dev1", True), ("1.0rc1.dev1", True), ("1.0a1", True), ("1.0b1", True), ("1.0c1", True),
        ("1.0rc1", True), ("1.0a1.post1.dev1", True), ("1.0b1.post1.dev1", True),
        ("1.0c1.post1.dev1", True), ("1.0rc1.post1.dev1", True), ("1.0a1.post1", True),
        ("1.0b1.post1", True), ("1.0c1.post1", True), ("1.0rc1.post1", True), ("1.0", False),
        ("1.0+dev", False), ("1.0.post1", False), ("1.0.post1+dev", False),
    ],
)  # fmt: skip
def test_pep440_is_prerelease_table(text, expected):
    assert parse_pep440(text).is_prerelease is expected


# renovatebot/pep440 "explain(version).is_postrelease"
@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.0.dev1", False), ("1.0", False), ("1.0+foo", False), ("1.0.post1.dev1", True), ("1.0.post1", True)],
)
def test_pep440_is_postrelease_table(text, expected):
    assert parse_pep440(text).is_postrelease is expected


def test_pep440_post0_and_dev0_still_count():
    # explain(): is_postrelease = Boolean(post) where post is ["post", 0] -> true.
    assert parse_pep440("1.0.post0").is_postrelease
    assert parse_pep440("1.0-0").is_postrelease  # implicit post with number 0
    assert parse_pep440("1.0-0").normalized == "1.0.post0"
    assert parse_pep440("1.0.dev").is_devrelease


# renovatebot/pep440 test/semantic.test.js major/minor/patch.
def test_pep440_semantic_major_minor_patch():
    assert parse_pep440("1.2.3").major == 1
    assert parse_pep440("25!1.2.3").major == 1  # "handles epoch"
    assert parse_pep440("1.2.3").minor == 2
    assert parse_pep440("1").minor == 0  # "pads zeros"
    assert parse_pep440("1.2.3").patch == 3
    assert parse_pep440("1.2").patch == 0  # "pads zeros"


# metadata-action __tests__/meta.test.ts tag23-tag33 and tags.md §4.
# (tag name, {{version}}, {{major}}, {{minor}}, {{patch}}, final release?)
@pytest.mark.parametrize(
    ("text", "version", "major", "minor", "patch", "final"),
    [
        ("v1.1.1", "1.1.1", "1", "1", "1", True),  # tag23 ({{raw}} -> v1.1.1), tag28, tag33
        ("1.2", "1.2", "1", "2", "0", True),  # tag24: {{major}}.{{minor}} -> 1.2
        ("1.1beta2", "1.1b2", "1", "1", "0", False),  # tag25
        ("1.0dev4", "1.0.dev4", "1", "0", "0", False),  # tag26
        ("1.2.3rc2", "1.2.3rc2", "1", "2", "3", False),  # tag27
        ("1.2post1", "1.2.post1", "1", "2", "0", False),  # tag29: post counts as non-final
        ("v1.2.3rc2", "1.2.3rc2", "1", "2", "3", False),  # tag32
        ("v1.2.3", "1.2.3", "1", "2", "3", True),  # push14 value=v1.2.3
        ("1.2.3beta2", "1.2.3b2", "1", "2", "3", False),  # tags.md §4
        ("1.2.3post1", "1.2.3.post1", "1", "2", "3", False),  # tags.md §4
        ("v1.2", "1.2", "1", "2", "0", True),
        ("1.0-1", "1.0.post1", "1", "0", "0", False),
        ("1", "1", "1", "0", "0", True),  # missing minor/patch render as 0
        ("2!3.4", "2!3.4", "3", "4", "0", True),  # epoch ignored by major
        ("1.2.3.4", "1.2.3.4", "1", "2", "3", True),
    ],
)
def test_pep440_metadata_action_placeholders(text, version, major, minor, patch, final):
    pv = parse_pep440(text)
    assert pv is not None
    final_release = not (pv.is_prerelease or pv.is_postrelease or pv.is_devrelease)
    assert final_release is final
    assert pv.placeholders(text) == {
        "raw": text,
        "version": version,
        "major": major,
        "minor": minor,
        "patch": patch,
    }


@pytest.mark.parametrize(
    "text", ["sometag", "release1", "1.0+", "1.0+\u212a", "1.0+\u0131", "1.2.3-beta.x", "1.2.3-SNAPSHOT"]
)
def test_pep440_metadata_action_rejections(text):
    # tag30: "sometag" emits nothing for pep440. Python's re would fold the
    # Kelvin sign / dotless i into [a-z] without re.ASCII; JS does not.
    assert parse_pep440(text) is None


@pytest.mark.parametrize(
    ("text", "normalized"),
    [("20200110-RC2", "20200110rc2"), ("1.2.3-beta.1", "1.2.3b1"), ("v1.2.3-rc.1", "1.2.3rc1")],
)
def test_pep440_accepts_some_semver_style_prereleases(text, normalized):
    # [oracle] the separators [-_.] around the pre-release letter make these PEP 440.
    pv = parse_pep440(text)
    assert pv.normalized == normalized
    assert pv.is_prerelease


def test_pep440_local_version_quirks_match_the_js_library():
    # [oracle] clean() interpolates the local array, so segments join with ",";
    # explain().local joins with "."; numeric segments go through JS Number().
    pv = parse_pep440("1.0+abc.1")
    assert pv.normalized == "1.0+abc,1"
    assert pv.local == "abc.1"
    assert pv.public == "1.0"
    assert parse_pep440("1.0+ABC.01").normalized == "1.0+abc,1"
    assert parse_pep440("1.0+1e5").normalized == "1.0+100000"
    assert parse_pep440("1.0+0x1f").normalized == "1.0+31"
    assert parse_pep440("1.0+0b101_0o17").normalized == "1.0+5,15"
    assert parse_pep440("1.0+Infinity").normalized == "1.0+Infinity"
    assert parse_pep440("1.0+infinity").normalized == "1.0+infinity"
    assert parse_pep440("1.0+1e400").local == "Infinity"
    assert parse_pep440("1.0+ubuntu-1").normalized == "1.0+ubuntu,1"


def test_pep440_huge_numbers_follow_js_doubles():
    # [oracle] Number("12345678901234567890") prints as 12345678901234567000.
    pv = parse_pep440("12345678901234567890.1")
    assert pv.normalized == "12345678901234567000.1"
    assert pv.placeholders("x")["major"] == "12345678901234567000"
    assert parse_pep440("20240101120000123.0").normalized == "20240101120000124.0"
    assert parse_pep440("1" + "0" * 21).normalized == "1e+21"
    assert parse_pep440("1.0a99999999999999999999").normalized == "1.0a100000000000000000000"


def test_pep440_case_folding_is_ascii_only():
    assert parse_pep440("V1.0RC1").normalized == "1.0rc1"
    assert parse_pep440("1.0+\u212a") is None  # Kelvin sign is not "k"
    assert parse_pep440("1.0+\u0130") is None  # dotted capital I is not "i"
    assert parse_pep440("1.0+\u017f") is None  # long s is not "s"


def test_pep440_dataclass_is_frozen_value():
    pv = parse_pep440("v1.2.3")
    assert pv == Pep440(epoch=0, release=(1, 2, 3))
    assert str(pv) == "1.2.3"
    with pytest.raises(AttributeError):
        pv.epoch = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (2**53, "9007199254740992"),
        (12345678901234567168, "12345678901234567000"),
        (10**21, "1e+21"),
        (12345 * 10**21, "1.2345e+25"),
        (math.inf, "Infinity"),
    ],
)
def test_js_number_to_string(value, text):
    assert js_number_to_string(value) == text


@st.composite
def _canonical_pep440(draw):
    ints = st.integers(min_value=0, max_value=10**6)
    epoch = draw(ints)
    release = draw(st.lists(ints, min_size=1, max_size=4))
    text = (f"{epoch}!" if epoch else "") + ".".join(map(str, release))
    pre = draw(st.one_of(st.none(), st.tuples(st.sampled_from(["a", "b", "rc"]), ints)))
    post = draw(st.one_of(st.none(), ints))
    dev = draw(st.one_of(st.none(), ints))
    if pre:
        text += f"{pre[0]}{pre[1]}"
    if post is not None:
        text += f".post{post}"
    if dev is not None:
        text += f".dev{dev}"
    return text, release, pre is not None or dev is not None, post is not None


@settings(max_examples=300)
@given(_canonical_pep440(), st.sampled_from(["", "v", "V"]))
def test_pep440_canonical_versions_round_trip(case, prefix):
    text, release, is_pre, is_post = case
    pv = parse_pep440(prefix + text)
    assert pv is not None
    assert pv.normalized == text
    assert pv.public == text
    assert list(pv.release) == release
    assert pv.is_prerelease is is_pre
    assert pv.is_postrelease is is_post
    assert parse_pep440(pv.normalized) == pv
    ph = pv.placeholders(prefix + text)
    assert ph["minor"] == str(release[1] if len(release) > 1 else 0)
    assert ph["patch"] == str(release[2] if len(release) > 2 else 0)


@settings(max_examples=300)
@given(st.text(alphabet="0123456789.!-_+vVabcdeilnoprstw", max_size=20))
def test_pep440_never_crashes_and_clean_is_idempotent_without_local(text):
    pv = parse_pep440(text)
    if pv is not None and pv.local_parts is None:
        again = parse_pep440(pv.normalized)
        assert again is not None and again.normalized == pv.normalized
