"""Tag engine tests written from specs/tags.md (section numbers in the test names)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipeline.metadata.ci import CIInfo
from pipeline.metadata.rules import (
    TagOptions,
    TagRuleError,
    compute,
    parse_flavor,
    parse_rule,
    parse_rules,
    sanitize_tag,
    split_csv_record,
)

SHA = "860c1904a1ce19322e91ac35af1ab07466440c37"
NOW = datetime(2020, 1, 10, 0, 30, 0, tzinfo=timezone.utc)


def ci(ref: str = "refs/heads/master", *, event: str | None = None, event_name: str | None = None,
       sha: str = SHA, default_branch: str | None = "master", base_ref: str = "",
       commit_time: datetime | None = None) -> CIInfo:
    if event is None:
        event = ("tag" if ref.startswith("refs/tags/") else
                 "pull_request" if ref.startswith("refs/pull/") else "push")
    return CIInfo(provider="github", event=event, event_name=event_name or event, ref=ref, sha=sha,
                  default_branch=default_branch, base_ref=base_ref, commit_time=commit_time,
                  repository_url="https://github.com/octocat/Hello-World", repository_name="Hello-World",
                  description="This your first repo!", license="MIT")


def tags(rules: list[str], ref: str = "refs/heads/master", flavor: list[str] | None = None,
         short: int = 7, **kw) -> list[str]:
    return result(rules, ref, flavor, short, **kw).tags


def result(rules, ref="refs/heads/master", flavor=None, short=7, labels=(), annotations=(),
           levels=("manifest",), **kw):
    return compute(parse_rules(rules), parse_flavor(flavor or []), ci(ref, **kw),
                   TagOptions(now=NOW, short_sha_length=short, annotation_levels=levels),
                   labels=labels, annotations=annotations)


# ---------------------------------------------------------------- §1 parsing


def test_csv_record_quotes_and_escapes():
    assert split_csv_record('type=match,"pattern=^v(\\d+)\\.\\d{1,2}",group=1') == [
        "type=match", "pattern=^v(\\d+)\\.\\d{1,2}", "group=1"]
    assert split_csv_record('type=raw,"value=a,b"') == ["type=raw", "value=a,b"]
    assert split_csv_record('"a ""quoted"" word"') == ['a "quoted" word']
    with pytest.raises(ValueError):
        split_csv_record('type=raw,value=a"b')
    with pytest.raises(ValueError):
        split_csv_record('"unterminated')


def test_attribute_split_at_first_equals_and_bare_word_is_raw_value():
    rule = parse_rule("type=raw,value=a=b")
    assert rule.attrs["value"] == "a=b"
    bare = parse_rule("foo")
    assert bare.type == "raw" and bare.attrs["value"] == "foo"


def test_keys_are_case_insensitive_and_trimmed():
    rule = parse_rule(" Type = semver , Pattern = {{version}} ")
    assert rule.type == "semver" and rule.attrs["pattern"] == "{{version}}"


@pytest.mark.parametrize("line, message", [
    ("type=foo", "unknown tag type"),
    ("type=semver", "pattern"),
    ("type=pep440", "pattern"),
    ("type=match", "pattern"),
    ("type=ref", "event"),
    ("type=ref,event=push", "invalid event"),
    ("type=raw", "value"),
    ("type=sha,format=medium", "sha format"),
    ("type=match,pattern=v(.*),group=one", "match group"),
    ("type=raw,value=x,priority=high", "priority"),
    ("type=raw,value={{", "expression"),
    ("", "empty"),
])
def test_parse_errors(line, message):
    with pytest.raises(TagRuleError) as exc:
        parse_rules(["type=sha", line])
    assert message in str(exc.value)
    assert exc.value.index == 1


def test_defaults_when_no_rules():
    # §1.2 the four default rules
    assert tags([], "refs/heads/dev") == ["dev"]
    assert tags([], "refs/tags/v1.1.1") == ["v1.1.1", "latest"]
    assert tags([], "refs/pull/15/merge") == ["pr-15"]
    assert tags([], "refs/heads/master", event="schedule", event_name="schedule")[0] == "nightly"


def test_priority_sort_is_stable_and_descending():
    assert tags(["type=raw,value=a", "type=raw,value=b", "type=sha", "type=raw,value=c,priority=950"],
                "refs/heads/master") == ["c", "a", "b", "sha-860c190"]


# ---------------------------------------------------------------- §2 types


def test_semver_patterns_on_release_tag():
    rules = ["type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}",
             "type=semver,pattern={{major}}", "type=semver,pattern={{raw}}"]
    assert tags(rules, "refs/tags/v1.1.1") == ["1.1.1", "1.1", "1", "v1.1.1", "latest"]


def test_semver_skips_branches_and_invalid_versions():
    assert tags(["type=semver,pattern={{version}}"], "refs/heads/master") == []
    assert tags(["type=semver,pattern={{version}}"], "refs/tags/1.2") == []
    assert tags(["type=semver,pattern={{version}}"], "refs/tags/20200110-RC2") == []


def test_semver_value_on_branch_sets_latest():
    # push14
    assert tags(["type=semver,pattern={{version}},value=v1.2.3", "type=edge"],
                "refs/heads/master") == ["1.2.3", "edge", "latest"]


def test_semver_build_metadata_is_dropped():
    assert tags(["type=semver,pattern={{version}}"], "refs/tags/v1.2.3+build.5") == ["1.2.3", "latest"]


def test_semver_match_attribute_keeps_unmatched_value():
    rules = ["type=semver,pattern={{version}},match=p1/v(\\d.\\d.\\d)"]
    assert tags(rules, "refs/tags/p1/v1.2.3") == ["1.2.3", "latest"]
    # no match: warning only, the value is kept and validated as is
    assert tags(["type=semver,pattern={{version}},match=^x(.*)"], "refs/tags/v2.0.0") == ["2.0.0", "latest"]


def test_pep440_release_and_prereleases():
    rules = ["type=pep440,pattern={{version}}", "type=pep440,pattern={{major}}.{{minor}}"]
    assert tags(rules, "refs/tags/v1.2.3") == ["1.2.3", "1.2", "latest"]
    assert tags(rules, "refs/tags/1.2.3rc2") == ["1.2.3rc2"]
    assert tags(rules, "refs/tags/1.2.3beta2") == ["1.2.3b2"]
    assert tags(rules, "refs/tags/1.2.3post1") == ["1.2.3.post1"]  # post counts as prerelease
    assert tags(rules, "refs/tags/1.0.dev4") == ["1.0.dev4"]
    assert tags(["type=pep440,pattern={{raw}}"], "refs/tags/v1.2.3rc2") == ["v1.2.3rc2"]


def test_pep440_accepts_two_part_versions():
    assert tags(["type=pep440,pattern={{version}}"], "refs/tags/1.2") == ["1.2", "latest"]


def test_match_group_and_latest_even_for_prerelease():
    rule = 'type=match,"pattern=^v(\\d+)\\.\\d{1,2}",group=1'
    assert tags([rule], "refs/tags/v12.3.4-rc1") == ["12", "latest"]
    assert tags(["type=match,pattern=\\d.\\d.\\d"], "refs/tags/v1.2.3-beta") == ["1.2.3", "latest"]


def test_match_without_match_or_group_emits_nothing():
    assert tags(["type=match,pattern=^x(\\d)"], "refs/tags/v1.2.3") == []
    assert tags(["type=match,pattern=^v(\\d),group=3"], "refs/tags/v1.2.3") == []


def test_match_slash_form_with_flags():
    assert tags(["type=match,pattern=/^V(\\d+)/i,group=1"], "refs/tags/v7.0.0") == ["7", "latest"]


def test_match_sees_the_raw_tag_with_slash():
    assert tags(["type=match,pattern=p1/v(\\d.\\d.\\d),group=1"], "refs/tags/p1/v1.2.3") == ["1.2.3", "latest"]


def test_edge_on_default_branch_only():
    assert tags(["type=edge"], "refs/heads/master") == ["edge"]
    assert tags(["type=edge"], "refs/heads/dev") == []
    assert tags(["type=edge,branch=dev"], "refs/heads/dev") == ["edge"]


def test_ref_branch_sanitized_and_pr_number():
    assert tags(["type=ref,event=branch"], "refs/heads/feature/foo") == ["feature-foo"]
    assert tags(["type=ref,event=pr"], "refs/pull/15/merge") == ["pr-15"]
    assert tags(["type=ref,event=tag"], "refs/tags/releases/v1") == ["releases-v1", "latest"]


def test_ref_tag_latest_without_prerelease_check():
    assert tags(["type=ref,event=tag"], "refs/tags/v2.0.8-beta.67") == ["v2.0.8-beta.67", "latest"]


def test_sha_short_long_and_length_override():
    assert tags(["type=sha"]) == ["sha-860c190"]
    assert tags(["type=sha,format=long"]) == [f"sha-{SHA}"]
    assert tags(["type=sha"], short=12) == ["sha-860c1904a1ce"]
    assert tags(["type=sha"], short=99) == [f"sha-{SHA}"]
    assert tags(["type=sha"], sha="") == []


def test_raw_with_expressions_and_empty_value_skipped():
    assert tags(["type=raw,value=mytag-{{branch}}"], "refs/heads/dev") == ["mytag-dev"]
    assert tags(["type=raw,value=mytag-tag-{{tag}}"], "refs/heads/dev") == ["mytag-tag-"]
    assert tags(["type=raw,value={{tag}}"], "refs/heads/dev") == []


def test_schedule_pattern_with_date_and_zone():
    rules = ["type=schedule,pattern={{date 'YYYYMMDD'}}"]
    assert tags(rules, event="schedule") == ["20200110"]
    rules = ["type=schedule,pattern={{date 'YYYYMMDD-HHmm' tz='Asia/Tokyo'}}"]
    assert tags(rules, event="schedule") == ["20200110-0930"]
    assert tags(rules, event="push") == []


def test_schedule_pattern_sees_only_date_helpers():
    assert tags(["type=schedule,pattern=nightly-{{branch}}"], event="schedule") == ["nightly-"]


def test_commit_date_uses_commit_time():
    commit = datetime(2019, 12, 31, 23, 0, tzinfo=timezone.utc)
    assert tags(["type=raw,value={{commit_date 'YYYY-MM-DD'}}"], commit_time=commit) == ["2019-12-31"]


def test_unknown_date_attribute_is_an_error():
    with pytest.raises(TagRuleError):
        tags(["type=raw,value={{date 'YYYY' zone='UTC'}}"])


# ---------------------------------------------------------------- §3 prefix, suffix, flavor


def test_flavor_prefix_does_not_reach_sha_or_pr_but_suffix_does():
    flavor = ["prefix=foo-", "suffix=-dev"]
    assert tags(["type=ref,event=branch", "type=sha"], "refs/heads/master", flavor) == [
        "foo-master-dev", "sha-860c190-dev"]
    assert tags(["type=ref,event=pr"], "refs/pull/3/merge", flavor) == ["pr-3-dev"]


def test_rule_affix_even_empty_replaces_flavor():
    assert tags(["type=ref,event=branch,prefix=,suffix="], "refs/heads/master", ["prefix=foo-", "suffix=-x"]) == [
        "master"]


def test_onlatest_applies_to_preceding_key():
    assert tags(["type=ref,event=tag"], "refs/tags/v1.0.0", ["suffix=-dev,onlatest=true"]) == [
        "v1.0.0-dev", "latest-dev"]
    assert tags(["type=ref,event=tag"], "refs/tags/v1.0.0", ["prefix=foo-,onlatest=true", "suffix=-dev,onlatest=true"]) == [
        "foo-v1.0.0-dev", "foo-latest-dev"]
    assert tags(["type=ref,event=tag"], "refs/tags/v1.0.0", ["prefix=foo-"]) == ["foo-v1.0.0", "latest"]


def test_flavor_errors():
    for bad in (["latest=maybe"], ["onlatest=yes"], ["foo=bar"], ["prefix"]):
        with pytest.raises(TagRuleError):
            parse_flavor(bad)


# ---------------------------------------------------------------- §4 latest and prereleases


def test_latest_from_first_emitted_only():
    # tag16
    assert tags(["type=raw,priority=2000,foo", "type=ref,event=tag"], "refs/tags/v1.1.1") == ["foo", "v1.1.1"]


def test_latest_true_and_false_force():
    assert tags(["type=ref,event=branch"], "refs/heads/dev", ["latest=true"]) == ["dev", "latest"]
    assert tags(["type=ref,event=tag"], "refs/tags/v1.0.0", ["latest=false"]) == ["v1.0.0"]
    # latest is only added when another tag was emitted
    assert tags(["type=ref,event=tag"], "refs/heads/dev", ["latest=true"]) == []


def test_semver_prerelease_collapses_to_version():
    rules = ["type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}",
             "type=semver,pattern=v{{major}}", "type=semver,pattern={{version}}-foo"]
    assert tags(rules, "refs/tags/v2.0.8-beta.67") == ["2.0.8-beta.67"]
    assert tags(["type=semver,pattern={{raw}}"], "refs/tags/v2.0.8-beta.67") == ["v2.0.8-beta.67"]


def test_major_zero_is_not_special():
    assert tags(["type=semver,pattern={{major}}"], "refs/tags/v0.1.2") == ["0", "latest"]


# ---------------------------------------------------------------- §5 sanitisation


@pytest.mark.parametrize("raw, clean", [
    ("feature/foo", "feature-foo"), ("my/feature#1245", "my-feature-1245"), ("a//b", "a-b"),
    ("20200110-RC2", "20200110-RC2"), (".lead", ".lead"), ("x" * 200, "x" * 200),
])
def test_sanitize(raw, clean):
    assert sanitize_tag(raw) == clean


def test_html_escaping_happens_before_sanitising():
    assert tags(["type=raw,value={{branch}}"], "refs/heads/a&b") == ["a-amp-b"]


# ---------------------------------------------------------------- §6 expressions


def test_is_default_branch():
    rules = ["type=raw,value=default,enable={{is_default_branch}}",
             "type=raw,value=other,enable={{is_not_default_branch}}"]
    assert tags(rules, "refs/heads/master") == ["default"]
    assert tags(rules, "refs/heads/dev") == ["other"]
    assert tags(rules, "refs/tags/v1.0.0") == ["other"]
    assert tags(rules, "refs/pull/2/merge") == ["other"]
    assert tags(rules, "refs/heads/dev", event="schedule") == ["default"]


def test_enable_must_render_true_or_false():
    with pytest.raises(TagRuleError) as exc:
        tags(["type=raw,value=x,enable={{branch}}"], "refs/heads/dev")
    assert "true or false" in str(exc.value)


def test_base_ref_and_sha_expressions():
    assert tags(["type=raw,value={{base_ref}}-{{sha}}"], "refs/pull/2/merge", base_ref="main") == ["main-860c190"]
    assert tags(["type=raw,value=x{{base_ref}}"], "refs/heads/dev", base_ref="main") == ["x"]


# ---------------------------------------------------------------- §7 ordering and dedup


def test_ordering_and_dedup():
    # raw05
    rules = ["type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}",
             "type=semver,pattern={{major}}", "type=raw,value=my", "type=raw,value=custom",
             "type=raw,value=tags", "type=raw,value=my"]
    assert tags(rules, "refs/tags/v1.1.1") == ["1.1.1", "1.1", "1", "my", "custom", "tags", "latest"]


def test_no_match_means_zero_tags_not_an_error():
    r = result(["type=semver,pattern={{version}}"], "refs/heads/dev")
    assert r.tags == [] and r.version is None and r.latest is False


# ---------------------------------------------------------------- §8 labels and annotations


def test_oci_labels_sorted_and_user_value_wins():
    r = result(["type=ref,event=tag"], "refs/tags/v1.0.0",
               labels=["maintainer=CrazyMax", "org.opencontainers.image.title=MyCustom=Title", "novalue", "empty="])
    assert list(r.labels) == sorted(r.labels)
    assert r.labels["org.opencontainers.image.title"] == "MyCustom=Title"
    assert r.labels["org.opencontainers.image.version"] == "v1.0.0"
    assert r.labels["org.opencontainers.image.created"] == "2020-01-10T00:30:00.000Z"
    assert r.labels["org.opencontainers.image.revision"] == SHA
    assert r.labels["org.opencontainers.image.source"] == "https://github.com/octocat/Hello-World"
    assert r.labels["org.opencontainers.image.licenses"] == "MIT"
    assert r.labels["empty"] == "" and "novalue" not in r.labels


def test_annotations_per_level():
    r = result(["type=ref,event=tag"], "refs/tags/v1.0.0", levels=("manifest", "index"))
    assert r.annotations["manifest:org.opencontainers.image.version"] == "v1.0.0"
    assert r.annotations["index:org.opencontainers.image.version"] == "v1.0.0"


def test_refs_image_major_and_lowercased():
    r = result(["type=ref,event=tag"], "refs/tags/v1.0.0")
    assert r.refs(["ghcr.io/MyUser/App", "localhost:5000/app"]) == [
        "ghcr.io/myuser/app:v1.0.0", "ghcr.io/myuser/app:latest",
        "localhost:5000/app:v1.0.0", "localhost:5000/app:latest"]
