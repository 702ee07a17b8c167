"""Tags, labels and annotations with docker/metadata-action's semantics (pure).

Users paste their metadata-action ``tags``/``flavor``/``labels`` lines into the
config and get the same answer here, on any CI. The algorithm follows
specs/tags.md: parse each line as one CSV record, sort rules by priority
(stable), evaluate each enabled rule, add prefix/suffix, drop empty values,
sanitise, then ``main + dedup(partials) + latest?``.

Nothing here reads the environment or the clock: the caller passes the CI
context, ``now`` (SOURCE_DATE_EPOCH or wall clock) and options.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pipeline.metadata import template
from pipeline.metadata.ci import CIInfo
from pipeline.metadata.dates import format_moment, in_zone
from pipeline.metadata.versions import parse_pep440, parse_semver

TYPES = ("schedule", "semver", "pep440", "match", "edge", "ref", "raw", "sha")
REF_EVENTS = ("branch", "tag", "pr")
SHA_FORMATS = ("short", "long")
DEFAULT_PRIORITIES = {"schedule": 1000, "semver": 900, "pep440": 900, "match": 800, "edge": 700,
                      "ref": 600, "raw": 200, "sha": 100}
DEFAULT_RULES = ("type=schedule", "type=ref,event=branch", "type=ref,event=tag", "type=ref,event=pr")
DEFAULT_SHORT_SHA_LENGTH = 7
TAG_CHARS = re.compile(r"[^a-zA-Z0-9._-]+")
OCI = "org.opencontainers.image."


class TagRuleError(ValueError):
    """A rule, flavor or label line that metadata-action would reject.

    ``index`` is the 0-based position of the line in its list (None when not
    tied to one line); the config layer turns this into ``file: tags.rules[i]``.
    """

    def __init__(self, message: str, *, field: str = "rules", index: int | None = None, line: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.index = index
        self.line = line


# --------------------------------------------------------------------------- parsing


def split_csv_record(line: str) -> list[str]:
    """One CSV record as csv-parse reads it (comma separated, ``"`` quoting, ``""`` escapes).

    A quote inside an unquoted field, or text after a closing quote, is an
    error there, so it is one here.
    """
    line = line.split("\n", 1)[0].rstrip("\r")
    fields: list[str] = []
    i, n = 0, len(line)
    while True:
        if i < n and line[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise ValueError("quoted field not terminated")
                if line[i] == '"':
                    if i + 1 < n and line[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(line[i])
                i += 1
            if i < n and line[i] != ",":
                raise ValueError(f"invalid closing quote at character {i + 1}")
            fields.append("".join(buf))
        else:
            j = line.find(",", i)
            j = n if j < 0 else j
            value = line[i:j]
            if '"' in value:
                raise ValueError(f"invalid opening quote at character {i + value.index(chr(34)) + 1}")
            fields.append(value)
            i = j
        if i >= n:
            break
        i += 1  # the comma
    return fields


@dataclass(frozen=True)
class Rule:
    type: str
    attrs: Mapping[str, str]
    index: int
    line: str

    @property
    def priority(self) -> float:
        return _js_number(self.attrs["priority"])

    def has(self, key: str) -> bool:
        return key in self.attrs


def _js_number(text: str) -> float:
    s = text.strip()
    if s == "":
        return 0.0
    try:
        if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+", s):
            return float(int(s, 16))
        if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s) or s in ("Infinity", "+Infinity", "-Infinity"):
            return float(s.replace("Infinity", "inf"))
    except ValueError:
        pass
    return float("nan")


def parse_rule(line: str, index: int = 0) -> Rule:
    """Parse one ``tags`` line into a rule with its per-type defaults filled."""

    def fail(msg: str) -> TagRuleError:
        return TagRuleError(msg, field="rules", index=index, line=line)

    if not line.strip():
        raise fail("empty rule")
    try:
        fields = split_csv_record(line)
    except ValueError as exc:
        raise fail(f"not a valid CSV line: {exc}") from None
    attrs: dict[str, str] = {}
    rtype: str | None = None
    for raw_field in fields:
        key, sep, value = raw_field.partition("=")
        if not sep or key == "":
            attrs["value"] = raw_field.strip()
            continue
        key = key.strip().lower()
        value = value.strip()
        if key == "type":
            if value not in TYPES:
                raise fail(f"unknown tag type '{value}' (one of {', '.join(TYPES)})")
            rtype = value
        else:
            attrs[key] = value
    rtype = rtype or "raw"
    if rtype == "schedule":
        attrs.setdefault("pattern", "nightly")
    elif rtype in ("semver", "pep440"):
        if "pattern" not in attrs:
            raise fail(f"type={rtype} needs a pattern attribute")
        attrs.setdefault("value", "")
    elif rtype == "match":
        if "pattern" not in attrs:
            raise fail("type=match needs a pattern attribute")
        attrs.setdefault("group", "0")
        if _js_number(attrs["group"]) != _js_number(attrs["group"]):  # NaN
            raise fail(f"invalid match group '{attrs['group']}' (a number)")
        attrs.setdefault("value", "")
    elif rtype == "edge":
        attrs.setdefault("branch", "")
    elif rtype == "ref":
        if "event" not in attrs:
            raise fail("type=ref needs an event attribute (branch, tag or pr)")
        if attrs["event"] not in REF_EVENTS:
            raise fail(f"invalid event '{attrs['event']}' (branch, tag or pr)")
        if attrs["event"] == "pr":
            attrs.setdefault("prefix", "pr-")
    elif rtype == "raw":
        if "value" not in attrs:
            raise fail("type=raw needs a value")
    elif rtype == "sha":
        attrs.setdefault("prefix", "sha-")
        attrs.setdefault("format", "short")
        if attrs["format"] not in SHA_FORMATS:
            raise fail(f"invalid sha format '{attrs['format']}' (short or long)")
    attrs.setdefault("enable", "true")
    attrs.setdefault("priority", str(DEFAULT_PRIORITIES[rtype]))
    rule = Rule(rtype, attrs, index, line)
    if rule.priority != rule.priority:
        raise fail(f"priority '{attrs['priority']}' is not a number")
    if rtype == "match":
        try:
            _compile_js_regex(attrs["pattern"])
        except re.error as exc:
            raise fail(f"invalid regular expression in pattern: {exc}") from None
    for key in ("value", "prefix", "suffix", "enable", "pattern"):
        if key in attrs and not (rtype == "match" and key == "pattern"):
            try:
                template.parse(attrs[key])
            except template.TemplateError as exc:
                raise fail(f"invalid expression in {key}: {exc}") from None
    return rule


def parse_rules(lines: Sequence[str]) -> list[Rule]:
    """Parse and sort the ``tags`` lines (the 4 defaults when there are none)."""
    given = list(lines)
    source = given if given else list(DEFAULT_RULES)
    rules = [parse_rule(line, i) for i, line in enumerate(source)]
    return sorted(rules, key=lambda r: -r.priority)  # stable: equal priorities keep input order


@dataclass(frozen=True)
class Flavor:
    latest: str = "auto"
    prefix: str = ""
    prefix_latest: bool = False
    suffix: str = ""
    suffix_latest: bool = False


def parse_flavor(lines: Sequence[str]) -> Flavor:
    """Parse ``flavor`` lines (later lines override earlier keys, as in the action)."""
    values: dict[str, Any] = {}
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            fields = split_csv_record(line)
        except ValueError as exc:
            raise TagRuleError(f"not a valid CSV line: {exc}", field="flavor", index=index, line=line) from None
        onlatest_for = ""
        for raw_field in fields:
            parts = [p.strip() for p in raw_field.split("=")]
            if len(parts) == 1:
                raise TagRuleError(f"invalid flavor entry '{raw_field}' (key=value expected)",
                                   field="flavor", index=index, line=line)
            key, value = parts[0].lower(), parts[1]
            if key == "latest":
                if value not in ("auto", "true", "false"):
                    raise TagRuleError(f"invalid latest '{value}' (auto, true or false)",
                                       field="flavor", index=index, line=line)
                values["latest"] = value
            elif key in ("prefix", "suffix"):
                values[key] = value
                onlatest_for = key
            elif key == "onlatest":
                if value not in ("true", "false"):
                    raise TagRuleError(f"invalid onlatest '{value}' (true or false)",
                                       field="flavor", index=index, line=line)
                if onlatest_for:
                    values[f"{onlatest_for}_latest"] = value == "true"
            else:
                raise TagRuleError(f"unknown flavor key '{key}' (latest, prefix, suffix, onlatest)",
                                   field="flavor", index=index, line=line)
    return Flavor(**values)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class TagOptions:
    """What metadata-action takes from its environment, made explicit."""

    now: datetime
    short_sha_length: int | float = DEFAULT_SHORT_SHA_LENGTH
    annotation_levels: tuple[str, ...] = ("manifest",)


@dataclass(frozen=True)
class TagResult:
    version: str | None
    tags: list[str]
    latest: bool
    labels: dict[str, str]
    annotations: dict[str, str]
    context: dict[str, Any] = field(default_factory=dict)

    def refs(self, images: Sequence[str]) -> list[str]:
        """Full references, image-major, image names lowercased (metadata-action's images)."""
        return [f"{image.lower()}:{tag}" for image in images for tag in self.tags]

    def to_dict(self, images: Sequence[str] = ()) -> dict[str, Any]:
        return {"version": self.version, "tags": list(self.tags), "latest": self.latest,
                "refs": self.refs(images), "labels": dict(self.labels),
                "annotations": dict(self.annotations), "context": dict(self.context)}


def sanitize_tag(value: str) -> str:
    return TAG_CHARS.sub("-", value)


def short_sha(sha: str, length: int | float) -> str:
    if length >= len(sha):
        return sha
    return sha[: max(0, int(length))]


def iso_millis(moment: datetime) -> str:
    """``Date.toISOString()``: UTC with milliseconds and a Z."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class _Evaluator:
    def __init__(self, ci: CIInfo, flavor: Flavor, options: TagOptions) -> None:
        self.ci = ci
        self.flavor = flavor
        self.options = options
        self.main: str | None = None
        self.partial: list[str] = []
        self.latest: bool | None = None

    # -- expressions
    def _date_helper(self, moment: datetime) -> Any:
        def helper(fmt: Any = None, **hash_: Any) -> str:
            tz = "UTC"
            for key, value in hash_.items():
                if key != "tz":
                    raise template.TemplateError(f"Unknown {key} attribute")
                tz = str(value)
            try:
                local = in_zone(moment, tz)
            except ValueError as exc:
                raise template.TemplateError(str(exc)) from None
            return format_moment(local, fmt if isinstance(fmt, str) else "")
        return helper

    def date_helpers(self) -> dict[str, Any]:
        commit = self.ci.commit_time or self.options.now
        return {"date": self._date_helper(self.options.now), "commit_date": self._date_helper(commit)}

    def globals(self) -> dict[str, Any]:
        ref = self.ci.ref
        sha_len = self.options.short_sha_length
        return {
            "branch": lambda: ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else "",
            "tag": lambda: ref[len("refs/tags/"):] if ref.startswith("refs/tags/") else "",
            "sha": lambda: short_sha(self.ci.sha, sha_len),
            "base_ref": lambda: self.ci.base_ref if ref.startswith(("refs/tags/", "refs/pull/")) else "",
            "is_default_branch": lambda: "true" if self.is_default_branch() else "false",
            "is_not_default_branch": lambda: "false" if self.is_default_branch() else "true",
            **self.date_helpers(),
        }

    def is_default_branch(self) -> bool:
        ref = self.ci.ref
        branch = ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref
        if not branch:
            return False
        if self.ci.default_branch and self.ci.default_branch == branch:
            return True
        return bool(re.search("create|discussion|issues|schedule", self.ci.event_name)) or self.ci.event == "schedule"

    def expand(self, text: str) -> str:
        return template.render(text, self.globals())

    # -- values
    def with_affixes(self, value: str, rule: Rule) -> str:
        if rule.has("prefix"):
            value = self.expand(rule.attrs["prefix"]) + value
        elif self.flavor.prefix:
            value = self.expand(self.flavor.prefix) + value
        if rule.has("suffix"):
            value = value + self.expand(rule.attrs["suffix"])
        elif self.flavor.suffix:
            value = value + self.expand(self.flavor.suffix)
        return value

    def emit(self, value: str, auto_latest: bool) -> None:
        if not value:
            return
        value = sanitize_tag(value)
        if self.main is None:
            self.main = value
        elif value != self.main:
            self.partial.append(value)
        if self.latest is None:
            self.latest = auto_latest if self.flavor.latest == "auto" else self.flavor.latest == "true"

    def is_schedule(self) -> bool:
        return self.ci.event == "schedule" or "schedule" in self.ci.event_name

    def version_input(self, rule: Rule) -> str | None:
        """The value a semver/pep440/match rule works on (rendered ``value``, else the tag name
        with its slashes), or None when the rule does not apply to this ref."""
        ref = self.ci.ref
        if rule.attrs["value"]:
            return self.expand(rule.attrs["value"])
        if not ref.startswith("refs/tags/"):
            return None
        return ref[len("refs/tags/"):]

    def apply_match_attr(self, rule: Rule, value: str) -> str:
        """semver/pep440 ``match=``: group 1 of the regex, or the value unchanged when it does not match."""
        pattern = rule.attrs.get("match", "")
        if not pattern:
            return value
        found = _compile_js_regex(pattern, slash_form=False).search(value)
        if found and found.re.groups >= 1 and found.group(1) is not None:
            return found.group(1)
        return value

    def run(self, rule: Rule) -> None:
        enabled = self.expand(rule.attrs["enable"])
        if enabled not in ("true", "false"):
            raise TagRuleError(f"enable must render to true or false, got '{enabled}'",
                               index=rule.index, line=rule.line)
        if enabled != "true":
            return
        getattr(self, f"rule_{rule.type}")(rule)

    def rule_schedule(self, rule: Rule) -> None:
        if not self.is_schedule():
            return
        value = template.render(rule.attrs["pattern"], self.date_helpers())
        self.emit(self.with_affixes(value, rule), False)

    def version_of(self, rule: Rule, parse: Any) -> tuple[str, Any]:
        """semver/pep440: the value after ``match=`` and ``/`` → ``-``, and its parse (None: skip)."""
        raw = self.version_input(rule)
        if raw is None:
            return "", None
        raw = self.apply_match_attr(rule, raw).replace("/", "-")
        return raw, parse(raw)

    def rule_semver(self, rule: Rule) -> None:
        raw, sv = self.version_of(rule, parse_semver)
        if sv is None:
            return
        pattern = rule.attrs["pattern"]
        if sv.is_prerelease and not template.is_raw_statement(pattern):
            pattern = "{{version}}"
        value = template.render(pattern, sv.placeholders(raw))
        self.emit(self.with_affixes(value, rule), not sv.is_prerelease)

    def rule_pep440(self, rule: Rule) -> None:
        raw, pv = self.version_of(rule, parse_pep440)
        if pv is None:
            return
        pattern = rule.attrs["pattern"]
        if pv.is_prerelease or pv.is_postrelease or pv.is_devrelease:
            value = raw if template.is_raw_statement(pattern) else pv.placeholders(raw)["version"]
            self.emit(self.with_affixes(value, rule), False)
            return
        placeholders = {k: (lambda v=v: v) for k, v in pv.placeholders(raw).items()}
        value = template.render(pattern, placeholders)
        self.emit(self.with_affixes(value, rule), True)

    def rule_match(self, rule: Rule) -> None:
        raw = self.version_input(rule)
        if raw is None:
            return
        pattern = rule.attrs["pattern"]
        regex = _compile_js_regex(pattern)
        group_text = rule.attrs["group"].strip()
        if _js_flags(pattern).find("g") >= 0:
            groups: list[str | None] = [m.group(0) for m in regex.finditer(raw)]
            if not groups:
                return
        else:
            found = regex.search(raw)
            if not found:
                return
            groups = [found.group(0), *found.groups()]
        if not re.fullmatch(r"0|[1-9]\d*", group_text) or int(group_text) >= len(groups):
            return
        value = groups[int(group_text)]
        if value is None:
            return
        self.emit(self.with_affixes(value, rule), True)

    def rule_edge(self, rule: Rule) -> None:
        ref = self.ci.ref
        if not ref.startswith("refs/heads/"):
            return
        branch = rule.attrs["branch"] or (self.ci.default_branch or "")
        if branch != ref[len("refs/heads/"):]:
            return
        self.emit(self.with_affixes("edge", rule), False)

    def rule_ref(self, rule: Rule) -> None:
        ref = self.ci.ref
        event = rule.attrs["event"]
        if event == "branch" and ref.startswith("refs/heads/"):
            self.emit(self.with_affixes(ref[len("refs/heads/"):], rule), False)
        elif event == "tag" and ref.startswith("refs/tags/"):
            self.emit(self.with_affixes(ref[len("refs/tags/"):], rule), True)
        elif event == "pr" and ref.startswith("refs/pull/"):
            number = re.sub(r"/merge$", "", ref[len("refs/pull/"):])
            self.emit(self.with_affixes(number, rule), False)

    def rule_raw(self, rule: Rule) -> None:
        self.emit(self.with_affixes(self.expand(rule.attrs["value"]), rule), False)

    def rule_sha(self, rule: Rule) -> None:
        sha = self.ci.sha
        if not sha:
            return
        if rule.attrs["format"] == "short":
            sha = short_sha(sha, self.options.short_sha_length)
        self.emit(self.with_affixes(sha, rule), False)


def _js_flags(pattern: str) -> str:
    m = re.fullmatch(r"/(.+)/(.*)", pattern, re.S)
    return m.group(2) if m else ""


def _compile_js_regex(pattern: str, *, slash_form: bool = True) -> re.Pattern[str]:
    """A JavaScript regex (``re``, or ``/re/flags`` where the action accepts that form) in Python."""
    m = re.fullmatch(r"/(.+)/(.*)", pattern, re.S) if slash_form else None
    body, flags_text = (m.group(1), m.group(2)) if m else (pattern, "")
    flags = 0 if "u" in flags_text else re.ASCII
    if "i" in flags_text:
        flags |= re.IGNORECASE
    if "m" in flags_text:
        flags |= re.MULTILINE
    if "s" in flags_text:
        flags |= re.DOTALL
    body = re.sub(r"\(\?<(?![=!])", "(?P<", body)  # JS named groups
    return re.compile(body, flags)


def _collation_key(text: str) -> tuple[Any, ...]:
    """Approximates ``String.localeCompare`` (ICU root collation) for label keys.

    Punctuation sorts before digits, digits before letters, letters compare
    case-insensitively first and lower case before upper case on a tie.
    """
    punct = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"

    def weight(ch: str) -> tuple[int, int, str]:
        if ch.isspace():
            return (0, 0, ch)
        if ch in punct:
            return (1, punct.index(ch), ch)
        if ch.isdigit():
            return (2, int(ch), ch)
        if ch.isalpha():
            return (3, 0, ch.lower())
        return (1, len(punct) + ord(ch), ch)

    primary = tuple(weight(c) for c in text)
    tertiary = tuple(0 if c.islower() else 1 for c in text)
    return (primary, tertiary)


def _merge_metadata(generated: list[tuple[str, str]], extra: Sequence[str], expand: Any) -> dict[str, str]:
    """metadata-action's label/annotation merge: user lines win by key, then sorted by key."""
    merged: dict[str, str] = {}
    lines = [f"{k}={v}" for k, v in generated] + [expand(line) for line in extra]
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        merged[key] = value
    return {k: merged[k] for k in sorted(merged, key=_collation_key)}


def compute(
    rules: Sequence[Rule],
    flavor: Flavor,
    ci: CIInfo,
    options: TagOptions,
    *,
    labels: Sequence[str] = (),
    annotations: Sequence[str] = (),
) -> TagResult:
    """Evaluate sorted rules for one CI context (docker/metadata-action's getVersion + outputs)."""
    ev = _Evaluator(ci, flavor, options)
    for rule in rules:
        try:
            ev.run(rule)
        except template.TemplateError as exc:
            raise TagRuleError(str(exc), index=rule.index, line=rule.line) from None
    partial = list(dict.fromkeys(ev.partial))
    latest = bool(ev.latest)
    tags: list[str] = []
    if ev.main:
        tags = [ev.main, *partial]
        if latest:
            latest_tag = ((flavor.prefix if flavor.prefix_latest else "") + "latest"
                          + (flavor.suffix if flavor.suffix_latest else ""))
            tags.append(sanitize_tag(latest_tag))
    generated = [
        (OCI + "title", ci.repository_name),
        (OCI + "description", ci.description),
        (OCI + "url", ci.repository_url),
        (OCI + "source", ci.repository_url),
        (OCI + "version", ev.main or ""),
        (OCI + "created", iso_millis(options.now)),
        (OCI + "revision", ci.sha),
        (OCI + "licenses", ci.license),
    ]

    def expand(line: str) -> str:
        try:
            return ev.expand(line)
        except template.TemplateError as exc:
            raise TagRuleError(str(exc), field="labels", line=line) from None

    label_map = _merge_metadata(generated, labels, expand)
    annotation_base = _merge_metadata(generated, annotations, expand)
    annotation_map = {f"{level}:{k}": v for level in options.annotation_levels for k, v in annotation_base.items()}
    return TagResult(version=ev.main or None, tags=tags, latest=latest and bool(tags), labels=label_map,
                     annotations=annotation_map, context=ci.to_dict())
