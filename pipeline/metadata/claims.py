"""Which of a release's tags a newer release also claims, so an older release never takes them back.

A tag release makes tags only it can make (``6.1.0``) and tags that other versions make too
(``6.1``, ``6``, ``latest``). metadata-action and the registries have no notion of order: the last
writer wins, so a backport (6.1.1 after 6.2.0), or two versions released at once, can move ``latest``
back to the older image. Our rule: a shared tag belongs to the newest release that claims it.

A newer release is found in the repository's own tag list: a tag ``S`` that orders after our version
(node-semver precedence) and that our tag rules, evaluated as if ``S`` had been pushed as a git tag,
make as their main tag. The tags those rules then make are what ``S`` claims. This needs no record
outside the registry, so it holds across runners and CI systems; rules that only match other git tag
spellings (``match=`` on a prefix the image tags drop) find no claimant and keep last-writer-wins.

Pure: the registry reads and writes are the tag stage's (:mod:`pipeline.stages.tag`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.metadata.ci import TAGS, CIInfo
from pipeline.metadata.rules import Flavor, Rule, TagOptions, TagResult, TagRuleError, compute
from pipeline.metadata.versions import parse_semver


def _version_start(text: str) -> int | None:
    return next((i for i, ch in enumerate(text) if ch.isdigit()), None)


def order_key(text: str) -> tuple[Any, ...] | None:
    """node-semver precedence of ``text`` (a leading ``v`` or other letters before the first digit
    allowed), or None when it is no version. Build metadata takes no part, as in semver."""
    start = _version_start(text)
    if start is None:
        return None
    sv = parse_semver(text) or parse_semver(text[start:])
    if sv is None:
        return None
    # a release orders after its prereleases; identifiers: numeric below alphanumeric, numbers by value
    pre = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in sv.prerelease)
    return (sv.major, sv.minor, sv.patch, not sv.prerelease, pre)


class Claims:
    """Our tag rules, reusable to ask what another version's release would tag."""

    def __init__(self, rules: Sequence[Rule], flavor: Flavor, ci: CIInfo, options: TagOptions,
                 ours: TagResult) -> None:
        self.rules, self.flavor, self.ci, self.options = rules, flavor, ci, options
        self.ours = ours
        self.key = order_key(ci.ref[len(TAGS):]) if ci.ref.startswith(TAGS) and ours.tags else None

    @property
    def active(self) -> bool:
        """Only a release of a version has rivals; a branch or PR build keeps last-writer-wins."""
        return self.key is not None and len(self.ours.tags) > 1

    @property
    def main(self) -> str:
        """The tag only this version makes; written first, so newer releases see it before a shared tag."""
        return self.ours.tags[0]

    @property
    def shared(self) -> list[str]:
        return list(self.ours.tags[1:])

    def tags_of(self, tag: str) -> list[str]:
        """What our rules tag for the release whose main tag is ``tag`` ([] when it is none): the git tag
        is tried as spelt, then as its version part, bare and with ``v`` (a flavor prefix such as
        ``app-`` is not in the git tag)."""
        start = _version_start(tag) or 0
        for git_tag in dict.fromkeys((tag, tag[start:], "v" + tag[start:])):
            ci = dataclasses.replace(self.ci, event="tag", event_name="push", ref=TAGS + git_tag, sha="",
                                     pr_number=None, base_ref="")
            try:
                made = list(compute(self.rules, self.flavor, ci, self.options).tags)
            except TagRuleError:
                continue
            if made and made[0] == tag:
                return made
        return []

    def holders(self, repository_tags: Iterable[str]) -> dict[str, str]:
        """Shared tag of ours -> the main tag of the newest newer release that claims it."""
        if not self.active:
            return {}
        shared = set(self.shared)
        found: dict[str, tuple[tuple[Any, ...], str]] = {}
        for tag in repository_tags:
            key = order_key(tag)
            if key is None or tag in self.ours.tags or key <= self.key:   # type: ignore[operator]
                continue
            theirs = self.tags_of(tag)
            if not theirs:   # a shared tag of some release, or no release tag at all
                continue
            for claimed in shared.intersection(theirs):
                if claimed not in found or key > found[claimed][0]:
                    found[claimed] = (key, tag)
        return {claimed: holder for claimed, (_, holder) in found.items()}
