"""Which shared tags a newer release claims (pure: the tag rules asked about other versions)."""

from __future__ import annotations

from pipeline.metadata.claims import Claims, order_key
from pipeline.metadata.rules import TagOptions, compute, parse_flavor, parse_rules
from tests.unit.test_tags import NOW, ci

SEMVER = ["type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}",
          "type=semver,pattern={{major}}", "type=sha"]


def claims(ref: str, rules: list[str] = SEMVER, flavor: list[str] = ()) -> Claims:
    options = TagOptions(now=NOW, short_sha_length=7, annotation_levels=("manifest",))
    r, f = parse_rules(rules), parse_flavor(list(flavor))
    return Claims(r, f, ci(ref), options, compute(r, f, ci(ref), options))


def test_semver_precedence_orders_releases_after_their_prereleases_and_numbers_by_value():
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11",
               "1.0.0-rc.1", "1.0.0", "v1.0.1", "1.2.0", "1.10.0", "2.0.0"]
    assert sorted(ordered[::-1], key=order_key) == ordered
    assert order_key("1.0.0+build.5") == order_key("1.0.0")
    for not_a_version in ("latest", "6", "6.1", "sha-1234567", "main", "20240101"):
        assert order_key(not_a_version) is None, not_a_version


def test_a_backport_yields_latest_and_the_major_to_the_newer_release_but_keeps_its_minor():
    c = claims("refs/tags/v6.1.1")
    assert c.active and c.main == "6.1.1"
    assert set(c.shared) == {"6.1", "6", "latest"} and c.own == ["6.1.1", "sha-860c190"]   # the commit's tag is ours
    held = c.holders(["6.0.0", "6.1.0", "6.1", "6", "6.2.0", "6.2", "latest", "7.0.0-rc.1", "sha-abcdef0"])
    # 6.2.0 claims 6 and latest; the prerelease 7.0.0-rc.1 claims only itself; nobody claims our sha tag
    assert held == {"6": "6.2.0", "latest": "6.2.0"}


def test_the_newest_claimant_wins_and_older_or_equal_releases_claim_nothing():
    c = claims("refs/tags/v6.1.0")
    assert c.holders(["7.1.0", "6.3.0", "7.0.0", "6.1.0", "5.9.9"]) == {"6": "6.3.0", "latest": "7.1.0"}
    assert c.holders(["6.0.0", "5.0.0", "6.1.0", "latest"]) == {}


def test_with_a_flavor_prefix_the_main_tags_of_other_releases_still_claim():
    c = claims("refs/tags/v1.4.0", flavor=["prefix=app-"])
    assert c.main == "app-1.4.0"
    assert c.holders(["app-1.5.0", "1.9.0"]) == {"app-1": "app-1.5.0", "latest": "app-1.5.0"}


def test_a_branch_build_or_a_single_tag_has_no_rivals():
    assert not claims("refs/heads/main", ["type=ref,event=branch", "type=raw,value=latest"]).active
    only = claims("refs/tags/v1.0.0", ["type=semver,pattern={{version}}"], flavor=["latest=false"])
    assert not only.active and only.holders(["2.0.0"]) == {}


def test_tags_from_the_commit_or_the_clock_are_this_builds_own_and_never_yielded():
    c = claims("refs/tags/v6.1.1", SEMVER + ["type=raw,value={{date 'YYYYMMDD'}}", "type=raw,value=git-{{sha}}"])
    assert set(c.own) == {"6.1.1", "sha-860c190", "20200110", "git-860c190"}
    assert c.holders(["6.2.0"]) == {"6": "6.2.0", "latest": "6.2.0"}


def test_the_version_tag_is_found_whatever_the_rule_order_and_with_a_flavor_suffix():
    minor_first = claims("refs/tags/v6.1.1", ["type=semver,pattern={{major}}.{{minor}}",
                                              "type=semver,pattern={{version}}"])
    assert minor_first.main == "6.1.1" and minor_first.own[0] == "6.1.1"
    assert minor_first.holders(["6.2.0", "6.1.0"]) == {"latest": "6.2.0"}
    alpine = claims("refs/tags/v6.1.1", SEMVER, flavor=["suffix=-alpine"])
    assert alpine.main == "6.1.1-alpine"
    assert alpine.holders(["6.2.0-alpine", "7.0.0"]) == {"6-alpine": "6.2.0-alpine", "latest": "6.2.0-alpine"}


def test_only_tags_spelt_as_our_release_tags_count_a_stray_version_tag_claims_nothing():
    c = claims("refs/tags/v6.1.0", ["type=ref,event=tag"], flavor=["latest=true"])
    assert c.main == "v6.1.0" and c.shared == ["latest"]
    assert c.holders(["v6.2.0", "6.2.0", "99.0.0"]) == {"latest": "v6.2.0"}
