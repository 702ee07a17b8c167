"""ECR lifecycle policies, pure: the policy built from the config's rules, and evaluation with ECR's semantics.

A policy is the ECR document (``{"rules": [...]}``), written in TOML under ``[lifecycle]``
(``[[lifecycle.rules]]`` with the same camelCase keys) or kept as the ECR JSON file itself
(``lifecycle.policy_file``). The schema, the portable subset of ECR's with ECR's validation
(specs/lifecycle.md §1.1), is configuration: ``pipeline.config.EcrRule`` and friends. Here the
validated rules become :class:`Rule` objects that select, count and expire.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.config import EcrRule, LifecycleConfig, validate_ecr_document, validate_ecr_rules
from pipeline.errors import ConfigError

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


def choose(evaluation: Evaluation, digest: str) -> Evaluation:
    """Only ``digest`` expires (picked by hand); every other image is kept, whatever the rules said."""
    verdicts = {}
    for d, v in evaluation.verdicts.items():
        if d == digest:
            verdicts[d] = Verdict(d, True, v.claimed_by, v.expired_by, "chosen for deletion in the inventory page")
        else:
            verdicts[d] = Verdict(d, False, v.claimed_by, None, "not the image chosen for deletion")
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


# --------------------------------------------------------------------------- from the config's models


def rule_of(model: EcrRule) -> Rule:
    """The evaluable rule for one validated ECR rule (pipeline.config.EcrRule)."""
    sel = model.selection
    return Rule(model.rulePriority, sel.tagStatus, sel.countType, sel.countNumber, model.description,
                tuple(sel.tagPrefixList), tuple(sel.tagPatternList), sel.countUnit)


def _policy(models: Sequence[EcrRule]) -> Policy:
    return Policy(tuple(rule_of(m) for m in models))


def policy(config: LifecycleConfig, source: str = "config") -> Policy:
    """The [lifecycle] policy: its rules (validated when the config was loaded), or the ECR JSON
    document ``policy_file`` names (validated now, errors naming that file)."""
    if config.policy_file:
        path = Path(config.policy_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: lifecycle.policy_file: cannot read {path}: {exc.strerror}") from None
        return parse_json(text, source=str(path))
    return _policy(config.rules)


def parse_rules(rules: Any, *, source: str, where: str = "rules") -> Policy:
    """ECR rules as data. Raises ConfigError ``source: where[i].field: message``."""
    return _policy(validate_ecr_rules(rules, source=source, where=where))


def parse_document(data: Any, *, source: str) -> Policy:
    """An ECR lifecycle policy document (``{"rules": [...]}``), already parsed from JSON."""
    return _policy(validate_ecr_document(data, source=source).rules)


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
