"""ECR lifecycle policies: the documented worked examples (specs/lifecycle.md §2), ECR's validation, JSON.

Ages in the examples are "pushed N days ago"; each image gets an exact timestamp so that
ties (E8's "1 day ago" for D and E) follow the documented order.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.errors import EXIT_USAGE, ConfigError
from pipeline.hygiene import lifecycle as L

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


def rule(priority, status, count_type, number, *, prefixes=None, patterns=None, unit=None):
    sel = {"tagStatus": status}
    if prefixes is not None:
        sel["tagPrefixList"] = prefixes
    if patterns is not None:
        sel["tagPatternList"] = patterns
    sel["countType"] = count_type
    if count_type == "sinceImagePushed":
        sel["countUnit"] = unit or "days"
    sel["countNumber"] = number
    return {"rulePriority": priority, "selection": sel, "action": {"type": "expire"}}


def policy(*rules):
    return L.parse_document({"rules": list(rules)}, source="policy.json")


def images(spec):
    """{"A": (["beta-1", "prod-1"], 10), ...} → Images named by letter; minutes break same-day ties."""
    out = []
    for i, (name, (tags, days)) in enumerate(spec.items()):
        out.append(L.Image(name, tuple(tags), NOW - timedelta(days=days, minutes=len(spec) - i)))
    return out


def expired(pol, imgs):
    return sorted(L.evaluate(pol, imgs, NOW).expired)


# --------------------------------------------------------------------------- the worked examples (§2)


def test_e1_untagged_older_than_14_days():
    imgs = [L.Image("old", (), NOW - timedelta(days=15)), L.Image("new", (), NOW - timedelta(days=13)),
            L.Image("tagged-old", ("v1",), NOW - timedelta(days=30))]
    assert expired(policy(rule(1, "untagged", "sinceImagePushed", 14)), imgs) == ["old"]


def test_e1_current_page_variant_prod_pattern():
    imgs = [L.Image("p-old", ("prod",), NOW - timedelta(days=20)),
            L.Image("p1-old", ("prod1",), NOW - timedelta(days=15)),
            L.Image("p2-new", ("prod2",), NOW - timedelta(days=2)),
            L.Image("dev-old", ("dev",), NOW - timedelta(days=40))]
    pol = policy(rule(1, "tagged", "sinceImagePushed", 14, patterns=["prod*"]))
    assert expired(pol, imgs) == ["p-old", "p1-old"]


def test_e2_keep_one_untagged():
    imgs = [L.Image(f"u{i}", (), NOW - timedelta(days=i)) for i in range(1, 5)]
    assert expired(policy(rule(1, "untagged", "imageCountMoreThan", 1)), imgs) == ["u2", "u3", "u4"]


E3_REPO = {"A": (["beta-1", "prod-1"], 10), "B": (["beta-2", "prod-2"], 9), "C": (["beta-3"], 8)}


def test_e3_multiple_rules_example_a():
    pol = policy(rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["prod"]),
                 rule(2, "tagged", "imageCountMoreThan", 1, prefixes=["beta"]))
    ev = L.evaluate(pol, images(E3_REPO), NOW)
    assert sorted(ev.expired) == ["A"]
    assert ev.verdicts["A"].expired_by.priority == 1
    assert ev.verdicts["B"].claimed_by.priority == 1 and not ev.verdicts["B"].expire   # "would violate Rule 1"
    assert ev.verdicts["C"].claimed_by.priority == 2


def test_e4_multiple_rules_example_b():
    pol = policy(rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["beta"]),
                 rule(2, "tagged", "imageCountMoreThan", 1, prefixes=["prod"]))
    assert expired(pol, images(E3_REPO)) == ["A", "B"]


def test_e5_multiple_tags_in_a_single_rule_a():
    repo = {"A": (["alpha-1"], 12), "B": (["beta-1"], 11), "C": (["alpha-2", "beta-2"], 10),
            "D": (["alpha-3"], 4), "E": (["beta-3"], 3), "F": (["alpha-4", "beta-4"], 2)}
    pol = policy(rule(1, "tagged", "sinceImagePushed", 5, prefixes=["alpha", "beta"]))
    ev = L.evaluate(pol, images(repo), NOW)
    assert sorted(ev.expired) == ["C"]
    assert {d for d, v in ev.verdicts.items() if v.claimed_by} == {"C", "F"}   # must match all prefixes


def test_e6_tags_are_not_exclusive():
    repo = {"A": (["alpha-1", "beta-1", "gamma-1"], 10), "B": (["alpha-2", "beta-2"], 9),
            "C": (["alpha-3", "beta-3", "gamma-2"], 8)}
    pol = policy(rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["alpha", "beta"]))
    assert expired(pol, images(repo)) == ["A", "B"]


def test_e7_all_images_a():
    repo = {"A": (["alpha-1"], 4), "B": (["beta-1"], 3), "C": ([], 2), "D": (["alpha-2"], 1)}
    assert expired(policy(rule(1, "any", "imageCountMoreThan", 1)), images(repo)) == ["A", "B", "C"]


def test_e8_all_images_b():
    # E is strictly newer than D (both "1 day ago"); B is older than one day, E is not
    imgs = [L.Image("A", ("alpha-1", "beta-1"), NOW - timedelta(days=4)),
            L.Image("B", (), NOW - timedelta(days=3)),
            L.Image("C", ("alpha-2",), NOW - timedelta(days=2)),
            L.Image("D", ("git hash",), NOW - timedelta(days=1, minutes=5)),
            L.Image("E", (), NOW - timedelta(days=1) + timedelta(minutes=5))]
    pol = policy(rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["alpha"]),
                 rule(2, "untagged", "sinceImagePushed", 1),
                 rule(3, "any", "imageCountMoreThan", 1))
    ev = L.evaluate(pol, imgs, NOW)
    assert sorted(ev.expired) == ["A", "B", "D"]
    assert {d: v.expired_by.priority for d, v in ev.verdicts.items() if v.expire} == {"A": 1, "B": 2, "D": 3}
    assert ev.verdicts["E"].claimed_by.priority == 2 and not ev.verdicts["E"].expire


# --------------------------------------------------------------------------- semantics details


def test_patterns_are_all_of_and_exact_without_wildcard():
    imgs = [L.Image("both", ("prod", "staging")), L.Image("prod-only", ("prod",)),
            L.Image("prod1", ("prod1", "staging"))]
    pol = policy(rule(1, "tagged", "imageCountMoreThan", 1, patterns=["prod", "staging"]))
    ev = L.evaluate(pol, imgs, NOW)
    assert {d for d, v in ev.verdicts.items() if v.claimed_by} == {"both"}


def test_wildcards_anywhere():
    r = L.parse_rules([rule(1, "tagged", "imageCountMoreThan", 1, patterns=["*test*1*2*3"])], source="x").rules[0]
    assert r.selects(["a-test-x1y2z3"]) and not r.selects(["a-test-x1y2z3-"]) and not r.selects(["test123x"])
    dots = L.parse_rules([rule(1, "tagged", "imageCountMoreThan", 1, patterns=["v1.*"])], source="x").rules[0]
    assert dots.selects(["v1.2"]) and not dots.selects(["v1x2"])   # '.' is literal


def test_unknown_push_time_sorts_newest_and_never_expires_by_age():
    imgs = [L.Image("known-old", ("v1",), NOW - timedelta(days=100)), L.Image("unknown", ("v2",), None),
            L.Image("known-new", ("v3",), NOW - timedelta(days=1))]
    assert expired(policy(rule(1, "tagged", "imageCountMoreThan", 2, patterns=["v*"])), imgs) == ["known-old"]
    assert expired(policy(rule(1, "tagged", "sinceImagePushed", 1, patterns=["v*"])), imgs) == ["known-old"]


def test_ties_are_broken_by_digest_not_by_listing_order():
    t = NOW - timedelta(days=3)
    a = [L.Image("sha256:b", ("x1",), t), L.Image("sha256:a", ("x2",), t)]
    pol = policy(rule(1, "tagged", "imageCountMoreThan", 1, patterns=["x*"]))
    assert expired(pol, a) == expired(pol, list(reversed(a))) == ["sha256:b"]


def test_builtin_candidate_rule_selects_only_candidate_only_images():
    cand = L.candidate_rule("candidate-", 1)
    imgs = [L.Image("c-old", ("candidate-aaaaaaa-111111111111",), NOW - timedelta(days=5)),
            L.Image("c-split", ("candidate-bbbbbbb-222222222222-linux-amd64",), NOW - timedelta(days=4)),
            L.Image("c-released", ("candidate-ccccccc-333333333333", "1.2.3"), NOW - timedelta(days=30)),
            L.Image("c-cache", ("candidate-ddddddd-444444444444", "buildcache"), NOW - timedelta(days=20)),
            L.Image("c-new", ("candidate-eeeeeee-555555555555",), NOW - timedelta(days=1))]
    user = policy(rule(1, "tagged", "imageCountMoreThan", 5, patterns=["1.*"]))
    pol = user.with_builtin([cand])
    ev = L.evaluate(pol, imgs, NOW)
    assert sorted(ev.expired) == ["c-old", "c-split"]
    assert ev.verdicts["c-released"].claimed_by.priority == 1 and ev.verdicts["c-cache"].claimed_by is None
    assert pol.to_ecr() == user.to_ecr()   # ECR cannot express it: never emitted


# --------------------------------------------------------------------------- validation (ECR's rules)


def error(rules) -> str:
    with pytest.raises(ConfigError) as exc:
        L.parse_rules(rules, source="cfg.toml", where="lifecycle.rules")
    msg = str(exc.value)
    assert "\n" not in msg and exc.value.exit_code == EXIT_USAGE
    return msg


OK = rule(1, "tagged", "imageCountMoreThan", 3, patterns=["v*"])


@pytest.mark.parametrize("bad, where, words", [
    ({**OK, "selection": {**OK["selection"], "countNumber": 0}}, "lifecycle.rules[0].selection.countNumber",
     "0 is not a positive integer"),
    ({**OK, "selection": {**OK["selection"], "countNumber": True}}, "lifecycle.rules[0].selection.countNumber",
     "positive integer"),
    ({**OK, "selection": {**OK["selection"], "countUnit": "days"}}, "lifecycle.rules[0].selection.countUnit",
     "not allowed with countType imageCountMoreThan"),
    ({**rule(1, "tagged", "sinceImagePushed", 3, patterns=["v*"]), "selection": {
        "tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "sinceImagePushed", "countNumber": 3}},
     "lifecycle.rules[0].selection.countUnit", "required with countType sinceImagePushed"),
    (rule(1, "tagged", "sinceImagePushed", 3, patterns=["v*"], unit="hours"),
     "lifecycle.rules[0].selection.countUnit", "'hours' is not a valid unit"),
    ({**OK, "selection": {**OK["selection"], "tagPrefixList": ["v"]}}, "lifecycle.rules[0].selection",
     "cannot both be specified"),
    ({**OK, "selection": {"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1}},
     "lifecycle.rules[0].selection", "needs a tagPrefixList or a tagPatternList"),
    (rule(1, "untagged", "imageCountMoreThan", 1, prefixes=["v"]), "lifecycle.rules[0].selection.tagPrefixList",
     "only allowed with tagStatus tagged"),
    (rule(1, "any", "imageCountMoreThan", 1, patterns=["v*"]), "lifecycle.rules[0].selection.tagPatternList",
     "only allowed with tagStatus tagged"),
    (rule(1, "tagged", "imageCountMoreThan", 1, patterns=["test*1*2*3*4*5*6"]),
     "lifecycle.rules[0].selection.tagPatternList[0]", "at most 4 '*'"),
    ({**OK, "selection": {**OK["selection"], "tagStatus": "all"}}, "lifecycle.rules[0].selection.tagStatus",
     "'all' is not one of tagged, untagged, any"),
    ({**OK, "selection": {**OK["selection"], "countType": "sinceImagePulled"}},
     "lifecycle.rules[0].selection.countType", "sinceImagePulled needs ECR's pull/archive records"),
    ({**OK, "selection": {**OK["selection"], "countType": "imageCountLessThan"}},
     "lifecycle.rules[0].selection.countType", "is not one of"),
    ({**OK, "action": {"type": "transition", "targetStorageClass": "archive"}}, "lifecycle.rules[0].action.type",
     "transition"),
    ({**OK, "action": {"type": "delete"}}, "lifecycle.rules[0].action.type", "'delete' is not a valid action"),
    ({k: v for k, v in OK.items() if k != "action"}, "lifecycle.rules[0].action", "required"),
    ({k: v for k, v in OK.items() if k != "rulePriority"}, "lifecycle.rules[0].rulePriority", "required"),
    ({**OK, "rulePriority": 0}, "lifecycle.rules[0].rulePriority", "0 is not a positive integer"),
    ({**OK, "rulePriority": "1"}, "lifecycle.rules[0].rulePriority", "not a positive integer"),
    ({**OK, "selection": {**OK["selection"], "tagPatternList": []}}, "lifecycle.rules[0].selection.tagPatternList",
     "non-empty list"),
    ({**OK, "priority": 3}, "lifecycle.rules[0].priority", "unknown property"),
    ({**OK, "selection": {**OK["selection"], "countNumbr": 3}}, "lifecycle.rules[0].selection.countNumbr",
     "unknown property"),
    ({**OK, "selection": {**OK["selection"], "storageClass": "archive"}},
     "lifecycle.rules[0].selection.storageClass", "only standard"),
])
def test_invalid_rules_get_one_line_errors_naming_the_field(bad, where, words):
    msg = error([bad])
    assert msg.startswith(f"cfg.toml: {where}: "), msg
    assert words in msg


def test_policy_level_checks():
    assert "lifecycle.rules[1].rulePriority: 1 is used by lifecycle.rules[0] too" in error(
        [OK, rule(1, "tagged", "imageCountMoreThan", 3, patterns=["x*"])])
    msg = error([rule(5, "any", "imageCountMoreThan", 3), rule(6, "tagged", "imageCountMoreThan", 3, patterns=["x*"])])
    assert "lifecycle.rules[0].rulePriority: 5: a rule with tagStatus any must have the highest rulePriority" in msg
    assert "only one rule may have tagStatus any" in error(
        [rule(5, "any", "imageCountMoreThan", 3), rule(6, "any", "imageCountMoreThan", 4)])
    assert "lifecycle.rules[1].selection.tagStatus: only one rule may select untagged images" in error(
        [rule(1, "untagged", "imageCountMoreThan", 3), rule(2, "untagged", "sinceImagePushed", 4)])
    assert "unique set of tag prefixes" in error(
        [rule(1, "tagged", "imageCountMoreThan", 3, prefixes=["a", "b"]),
         rule(2, "tagged", "sinceImagePushed", 3, prefixes=["b", "a"])])
    assert "must be a list of rules" in error({"rulePriority": 1})


def test_valid_policy_with_gaps_in_priorities():
    pol = L.parse_rules([rule(10, "tagged", "imageCountMoreThan", 3, prefixes=["v"]),
                         rule(2, "untagged", "sinceImagePushed", 7),
                         rule(99, "any", "imageCountMoreThan", 50)], source="x")
    assert [r.priority for r in pol.rules] == [2, 10, 99]


# --------------------------------------------------------------------------- the ECR JSON document


def test_json_document_round_trip():
    doc = {"rules": [
        {"rulePriority": 1, "description": "keep 10 releases",
         "selection": {"tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan",
                       "countNumber": 10}, "action": {"type": "expire"}},
        {"rulePriority": 2, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                          "countUnit": "days", "countNumber": 14}, "action": {"type": "expire"}}]}
    pol = L.parse_json(json.dumps(doc), source="lifecycle.json")
    assert pol.to_ecr() == doc
    assert L.parse_json(pol.ecr_json(), source="again").to_ecr() == doc


def test_json_document_errors():
    with pytest.raises(ConfigError, match=r"^p.json: not valid JSON"):
        L.parse_json("{", source="p.json")
    with pytest.raises(ConfigError, match=r"^p.json: rules\[0\].selection.countNumber: "):
        L.parse_json(json.dumps({"rules": [{**OK, "selection": {**OK["selection"], "countNumber": -1}}]}),
                     source="p.json")
    with pytest.raises(ConfigError, match=r"^p.json: registryId: unknown property"):
        L.parse_json(json.dumps({"rules": [OK], "registryId": "1"}), source="p.json")
