"""ECR lifecycle policies, pure: schema, validation as ECR does it, and evaluation with ECR's semantics.

A policy is the ECR document (``{"rules": [...]}``), written in TOML under ``[lifecycle]``
(``[[lifecycle.rules]]`` with the same camelCase keys) or kept as the ECR JSON file itself
(``lifecycle.policy_file``). The portable subset of ECR's schema is supported
(specs/lifecycle.md §1.1): ``rulePriority``, ``description``, ``selection.tagStatus``
(tagged | untagged | any), ``tagPrefixList``, ``tagPatternList`` (``*`` wildcards),
``countType`` (imageCountMoreThan | sinceImagePushed), ``countUnit`` (days), ``countNumber``,
``action.type`` (expire). The archive storage class parts are refused with a sentence.

Evaluation is ECR's claim model (specs/lifecycle.md §1.3–1.4):

1. every rule *selects* the images its tag filter matches, over all images of the repository;
2. its *candidates* are the selected images past the count (newest first by push time) or
   older than the age;
3. a candidate expires only if no higher-priority rule selected it ("claimed" it, whether
   that rule expired it or kept it);
4. the result is the union; an image (digest, with all its tags) expires by exactly one or
   zero rules.

The unit is always an image (one manifest digest with every tag on it). Images whose push
time is unknown sort as the newest (a count rule keeps them first) and are never "older
than" anything: without a time, nothing expires by age. Ties in push time are broken by
digest, so the result never depends on listing order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipeline.errors import ConfigError

TAG_STATUSES = ("tagged", "untagged", "any")
COUNT_TYPES = ("imageCountMoreThan", "sinceImagePushed")
ARCHIVE_COUNT_TYPES = ("sinceImagePulled", "sinceImageTransitioned")
MAX_WILDCARDS = 4
RULE_KEYS = ("rulePriority", "description", "selection", "action")
SELECTION_KEYS = ("tagStatus", "tagPrefixList", "tagPatternList", "storageClass", "countType", "countUnit",
                  "countNumber")
ACTION_KEYS = ("type", "targetStorageClass")


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Rule:
    """One validated rule. ``only_matching`` is for built-in rules (never written as ECR JSON):
    the image is selected when *every* tag matches one of the patterns, not ECR's all-of-patterns."""

    priority: int
    tag_status: str
    count_type: str
    count_number: int
    description: str = ""
    prefixes: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    count_unit: str | None = None
    only_matching: bool = False
    builtin: bool = False

    def selects(self, tags: Iterable[str]) -> bool:
        tags = tuple(tags)
        if self.tag_status == "any":
            return True
        if self.tag_status == "untagged":
            return not tags
        if not tags:
            return False
        if self.only_matching:
            regexes = [_pattern_regex(p) for p in self.patterns] + [_prefix_regex(p) for p in self.prefixes]
            return all(any(rx.fullmatch(t) for rx in regexes) for t in tags)
        if self.prefixes:  # ALL of the prefixes, each matched by some tag (specs §1.2, E5/E6)
            return all(any(t.startswith(p) for t in tags) for p in self.prefixes)
        return all(any(_pattern_regex(p).fullmatch(t) for t in tags) for p in self.patterns)

    def summary(self) -> str:
        """``#2 tagged [v*] imageCountMoreThan 10``: how previews name the rule."""
        what = self.tag_status
        if self.prefixes:
            what += " prefix " + ",".join(self.prefixes)
        if self.patterns:
            what += (" only " if self.only_matching else " ") + ",".join(self.patterns)
        count = (f"keep {self.count_number}" if self.count_type == "imageCountMoreThan"
                 else f"older than {self.count_number} {self.count_unit or 'days'}")
        name = "built-in" if self.builtin else f"#{self.priority}"
        return f"{name} {what}: {count}"

    def to_ecr(self) -> dict[str, Any]:
        selection: dict[str, Any] = {"tagStatus": self.tag_status}
        if self.prefixes:
            selection["tagPrefixList"] = list(self.prefixes)
        if self.patterns:
            selection["tagPatternList"] = list(self.patterns)
        selection["countType"] = self.count_type
        if self.count_unit:
            selection["countUnit"] = self.count_unit
        selection["countNumber"] = self.count_number
        out: dict[str, Any] = {"rulePriority": self.priority}
        if self.description:
            out["description"] = self.description
        out["selection"] = selection
        out["action"] = {"type": "expire"}
        return out


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(sorted(self.rules, key=lambda r: r.priority)))

    def to_ecr(self) -> dict[str, Any]:
        """The ECR lifecycle policy document (built-in rules left out: ECR cannot express them)."""
        return {"rules": [r.to_ecr() for r in self.rules if not r.builtin]}

    def ecr_json(self) -> str:
        return json.dumps(self.to_ecr(), indent=2) + "\n"

    def with_builtin(self, builtin: Sequence[Rule]) -> Policy:
        """Built-in rules (priority 0, before every ECR rule, so they claim what they select) plus this
        policy's rules, unchanged."""
        return Policy((*(_renumber(r, 0) for r in builtin), *self.rules))


def _renumber(rule: Rule, priority: int) -> Rule:
    from dataclasses import replace

    return replace(rule, priority=priority)


@dataclass(frozen=True)
class Image:
    """What evaluation needs: the digest, its tags and its push time (None: unknown)."""

    digest: str
    tags: tuple[str, ...] = ()
    pushed_at: datetime | None = None


@dataclass(frozen=True)
class Verdict:
    digest: str
    expire: bool
    claimed_by: Rule | None        # the highest-priority rule that selected the image
    expired_by: Rule | None = None
    reason: str = ""


@dataclass(frozen=True)
class Evaluation:
    verdicts: dict[str, Verdict] = field(default_factory=dict)

    @property
    def expired(self) -> set[str]:
        return {d for d, v in self.verdicts.items() if v.expire}

    @property
    def kept(self) -> set[str]:
        return {d for d, v in self.verdicts.items() if not v.expire}


# --------------------------------------------------------------------------- evaluation


def _newest_first(images: Iterable[Image]) -> list[Image]:
    """Newest → oldest by push time; unknown times count as the newest; ties by digest."""
    def key(img: Image) -> tuple[int, float, str]:
        if img.pushed_at is None:
            return (0, 0.0, img.digest)
        return (1, -img.pushed_at.timestamp(), img.digest)
    return sorted(images, key=key)


def candidates(rule: Rule, selected: Sequence[Image], now: datetime) -> list[Image]:
    if rule.count_type == "imageCountMoreThan":
        return _newest_first(selected)[rule.count_number:]
    limit = now - timedelta(days=rule.count_number)
    return [img for img in selected if img.pushed_at is not None and img.pushed_at < limit]


def evaluate(policy: Policy, images: Sequence[Image], now: datetime) -> Evaluation:
    """ECR's claim model over one repository's images (see the module docstring)."""
    first: dict[str, Rule] = {}
    selected: list[list[Image]] = []
    for rule in policy.rules:
        chosen = [img for img in images if rule.selects(img.tags)]
        selected.append(chosen)
        for img in chosen:
            first.setdefault(img.digest, rule)
    expired: dict[str, Rule] = {}
    for rule, chosen in zip(policy.rules, selected):
        for img in candidates(rule, chosen, now):
            if first[img.digest] is rule:
                expired.setdefault(img.digest, rule)
    verdicts: dict[str, Verdict] = {}
    for img in images:
        claimed = first.get(img.digest)
        by = expired.get(img.digest)
        if by is not None:
            reason = ("past the newest " + str(by.count_number) if by.count_type == "imageCountMoreThan"
                      else f"pushed more than {by.count_number} days ago")
        elif claimed is not None:
            reason = "within the rule's limit"
        else:
            reason = "no rule selects it"
        verdicts[img.digest] = Verdict(img.digest, by is not None, claimed, by, reason)
    return Evaluation(verdicts)


# --------------------------------------------------------------------------- patterns


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    return _compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$")


def _prefix_regex(prefix: str) -> re.Pattern[str]:
    return _compile("^" + re.escape(prefix) + ".*$")


_compiled: dict[str, re.Pattern[str]] = {}


def _compile(rx: str) -> re.Pattern[str]:
    found = _compiled.get(rx)
    if found is None:
        found = _compiled[rx] = re.compile(rx, re.S)
    return found


# --------------------------------------------------------------------------- validation (as ECR does it)


class _Invalid(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _Invalid(where, "must be a non-empty list of strings")
    for i, s in enumerate(value):
        if not isinstance(s, str) or not s:
            raise _Invalid(f"{where}[{i}]", "must be a non-empty string")
    if len(set(value)) != len(value):
        raise _Invalid(where, "lists the same value twice")
    return tuple(value)


def _unknown_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise _Invalid(f"{where}.{key}" if where else str(key),
                           f"unknown property (ECR accepts {', '.join(allowed)})")


def _rule(data: Any, where: str) -> Rule:
    if not isinstance(data, Mapping):
        raise _Invalid(where, "a rule must be an object with rulePriority, selection and action")
    _unknown_keys(data, RULE_KEYS, where)
    if "rulePriority" not in data:
        raise _Invalid(f"{where}.rulePriority", "required (a unique integer; rules apply lowest first)")
    priority = data["rulePriority"]
    if not _is_int(priority) or priority < 1:
        raise _Invalid(f"{where}.rulePriority", f"{priority!r} is not a positive integer")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _Invalid(f"{where}.description", "must be a string")
    sel = data.get("selection")
    if sel is None:
        raise _Invalid(f"{where}.selection", "required")
    if not isinstance(sel, Mapping):
        raise _Invalid(f"{where}.selection", "must be an object")
    w = f"{where}.selection"
    _unknown_keys(sel, SELECTION_KEYS, w)
    status = sel.get("tagStatus")
    if status is None:
        raise _Invalid(f"{w}.tagStatus", "required (tagged, untagged or any)")
    if status not in TAG_STATUSES:
        raise _Invalid(f"{w}.tagStatus", f"{status!r} is not one of tagged, untagged, any")
    has_prefix, has_pattern = "tagPrefixList" in sel, "tagPatternList" in sel
    prefixes: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    if status == "tagged":
        if has_prefix and has_pattern:
            raise _Invalid(w, "tagPrefixList and tagPatternList cannot both be specified in one rule")
        if not has_prefix and not has_pattern:
            raise _Invalid(w, "tagStatus tagged needs a tagPrefixList or a tagPatternList")
        if has_prefix:
            prefixes = _string_list(sel["tagPrefixList"], f"{w}.tagPrefixList")
        else:
            patterns = _string_list(sel["tagPatternList"], f"{w}.tagPatternList")
            for i, p in enumerate(patterns):
                if p.count("*") > MAX_WILDCARDS:
                    raise _Invalid(f"{w}.tagPatternList[{i}]",
                                   f"{p!r} has {p.count('*')} wildcards; at most {MAX_WILDCARDS} '*' per pattern")
    else:
        for key in ("tagPrefixList", "tagPatternList"):
            if key in sel:
                raise _Invalid(f"{w}.{key}", f"only allowed with tagStatus tagged (this rule is {status})")
    if "storageClass" in sel and sel["storageClass"] != "standard":
        raise _Invalid(f"{w}.storageClass", f"{sel['storageClass']!r}: only standard is supported (the archive"
                       " storage class exists only in ECR)")
    count_type = sel.get("countType")
    if count_type is None:
        raise _Invalid(f"{w}.countType", "required (imageCountMoreThan or sinceImagePushed)")
    if count_type in ARCHIVE_COUNT_TYPES:
        raise _Invalid(f"{w}.countType", f"{count_type} needs ECR's pull/archive records; other registries"
                       " support imageCountMoreThan and sinceImagePushed")
    if count_type not in COUNT_TYPES:
        raise _Invalid(f"{w}.countType", f"{count_type!r} is not one of imageCountMoreThan, sinceImagePushed")
    unit = sel.get("countUnit")
    if count_type == "sinceImagePushed":
        if unit is None:
            raise _Invalid(f"{w}.countUnit", "required with countType sinceImagePushed (\"days\")")
        if unit != "days":
            raise _Invalid(f"{w}.countUnit", f"{unit!r} is not a valid unit (only \"days\")")
    elif unit is not None:
        raise _Invalid(f"{w}.countUnit", "not allowed with countType imageCountMoreThan (only with"
                       " sinceImagePushed)")
    if "countNumber" not in sel:
        raise _Invalid(f"{w}.countNumber", "required (a positive integer)")
    number = sel["countNumber"]
    if not _is_int(number) or number < 1:
        raise _Invalid(f"{w}.countNumber", f"{number!r} is not a positive integer (0 is not accepted)")
    action = data.get("action")
    if action is None:
        raise _Invalid(f"{where}.action", "required ({\"type\": \"expire\"})")
    if not isinstance(action, Mapping):
        raise _Invalid(f"{where}.action", "must be an object ({\"type\": \"expire\"})")
    _unknown_keys(action, ACTION_KEYS, f"{where}.action")
    kind = action.get("type")
    if kind is None:
        raise _Invalid(f"{where}.action.type", "required (expire)")
    if kind == "transition":
        raise _Invalid(f"{where}.action.type", "transition (to ECR's archive storage class) is not supported"
                       " on other registries; use expire")
    if kind != "expire":
        raise _Invalid(f"{where}.action.type", f"{kind!r} is not a valid action (expire)")
    if "targetStorageClass" in action:
        raise _Invalid(f"{where}.action.targetStorageClass", "only with action type transition")
    return Rule(priority, status, count_type, number, description, prefixes, patterns, unit)


def _policy_checks(rules: Sequence[tuple[Rule, str]]) -> None:
    seen: dict[int, str] = {}
    for rule, where in rules:
        if rule.priority in seen:
            raise _Invalid(f"{where}.rulePriority", f"{rule.priority} is used by {seen[rule.priority]} too;"
                           " priorities must be unique")
        seen[rule.priority] = where
    anys = [(r, w) for r, w in rules if r.tag_status == "any"]
    if len(anys) > 1:
        raise _Invalid(f"{anys[1][1]}.selection.tagStatus", "only one rule may have tagStatus any")
    if anys:
        top = max(r.priority for r, _ in rules)
        if anys[0][0].priority != top:
            raise _Invalid(f"{anys[0][1]}.rulePriority", f"{anys[0][0].priority}: a rule with tagStatus any must"
                           f" have the highest rulePriority (another rule has {top})")
    untagged = [(r, w) for r, w in rules if r.tag_status == "untagged"]
    if len(untagged) > 1:
        raise _Invalid(f"{untagged[1][1]}.selection.tagStatus", "only one rule may select untagged images")
    filters: dict[tuple[str, frozenset[str]], str] = {}
    for rule, where in rules:
        if rule.tag_status != "tagged":
            continue
        key = ("prefix", frozenset(rule.prefixes)) if rule.prefixes else ("pattern", frozenset(rule.patterns))
        if key in filters:
            raise _Invalid(f"{where}.selection", f"selects the same tags as {filters[key]}; the set of rules must"
                           " contain a unique set of tag prefixes")
        filters[key] = where


def parse_rules(rules: Any, *, source: str, where: str = "rules") -> Policy:
    """Validate a list of ECR rules. Raises ConfigError ``source: where[i].field: message``."""
    try:
        if not isinstance(rules, list):
            raise _Invalid(where, "must be a list of rules")
        parsed = [(_rule(r, f"{where}[{i}]"), f"{where}[{i}]") for i, r in enumerate(rules)]
        _policy_checks(parsed)
    except _Invalid as exc:
        raise ConfigError(f"{source}: {exc.where}: {exc.message}") from None
    return Policy(tuple(r for r, _ in parsed))


def parse_document(data: Any, *, source: str) -> Policy:
    """An ECR lifecycle policy document (``{"rules": [...]}``), already parsed from JSON."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: (top level): an ECR lifecycle policy is an object {{\"rules\": [...]}}")
    for key in data:
        if key != "rules":
            raise ConfigError(f"{source}: {key}: unknown property (an ECR lifecycle policy has only \"rules\")")
    if "rules" not in data:
        raise ConfigError(f"{source}: rules: required")
    return parse_rules(data["rules"], source=source, where="rules")


def parse_json(text: str, *, source: str) -> Policy:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    return parse_document(data, source=source)


# --------------------------------------------------------------------------- built-in rules


def candidate_rule(tag_prefix: str, keep: int) -> Rule:
    """The staging default: keep the ``keep`` newest images whose tags are *all* candidate tags
    (``<prefix><sha7>-<key12>`` and split builds' ``…-<platform>``). Images that also carry another
    tag (a release tag, ``buildcache``) are not selected, so in a repository shared with releases
    this rule never touches a release."""
    return Rule(0, "tagged", "imageCountMoreThan", keep, f"staging candidates ({tag_prefix}*): keep the newest {keep}",
                patterns=(f"{tag_prefix}*",), only_matching=True, builtin=True)
