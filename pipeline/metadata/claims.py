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
from datetime import timedelta
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
    """Our tag rules, reusable to ask what another version's release would tag.

    Only tags that follow from the version alone take part: a tag the rules make from the commit, the
    clock or the run (``sha-…``, ``{{date}}``) is this build's own and is always written. They are told
    apart by evaluating the rules under two unrelated build contexts and keeping what both make."""

    def __init__(self, rules: Sequence[Rule], flavor: Flavor, ci: CIInfo, options: TagOptions,
                 ours: TagResult) -> None:
        self.rules, self.flavor, self.ci, self.options = rules, flavor, ci, options
        self.ours = ours
        self.git_tag = ci.ref[len(TAGS):] if ci.ref.startswith(TAGS) else ""
        start = _version_start(self.git_tag)
        self._git_prefix = self.git_tag[:start] if start is not None else ""
        self.key = order_key(self.git_tag) if self.git_tag and ours.tags else None
        stable = self._stable(self.git_tag) if self.key is not None else []
        main = next((t for t in ours.tags if t in stable and self._tag_key(t) == self.key), None)
        self.active = main is not None and any(t != main and t in stable for t in ours.tags)
        if not self.active:        # a branch or PR build (or rules we cannot read so): last writer wins
            main = ours.tags[0] if ours.tags else ""
            stable = list(ours.tags)
        self.main: str = main or ""
        #: what only this build makes: its version tag first (newer releases see it before a shared tag
        #: moves), then the commit's and the clock's tags
        self.own = [self.main, *(t for t in ours.tags if t != self.main and t not in stable)] if self.main else []
        self.shared = [t for t in ours.tags if t != self.main and t in stable]

    def _tag_key(self, tag: str) -> tuple[Any, ...] | None:
        """The version order of one of our rules' version tags (flavor prefix and suffix set aside)."""
        suffix = self.flavor.suffix
        return order_key(tag[:-len(suffix)] if suffix and tag.endswith(suffix) else tag)

    def _made(self, git_tag: str, sha: str, shift: timedelta, run: str) -> list[str] | None:
        ci = dataclasses.replace(self.ci, event="tag", event_name="push", ref=TAGS + git_tag, sha=sha,
                                 pr_number=None, base_ref="", run_id=run,
                                 commit_time=(self.ci.commit_time or self.options.now) + shift)
        options = dataclasses.replace(self.options, now=self.options.now + shift)
        try:
            return list(compute(self.rules, self.flavor, ci, options).tags)
        except TagRuleError:
            return None

    def _stable(self, git_tag: str) -> list[str]:
        """The tags our rules make for ``git_tag`` whatever the commit, the clock and the run."""
        one = self._made(git_tag, "1" * 40, timedelta(0), "1")
        two = self._made(git_tag, "2" * 40, timedelta(days=401, hours=7), "2")
        return [t for t in one if t in two] if one and two else []

    def tags_of(self, tag: str) -> list[str]:
        """What our rules tag for the release whose version tag is ``tag`` ([] when it is none): its git tag
        spelt as ours (``v6.1.1`` → ``v6.2.0``), and ``tag`` must be the version tag that makes."""
        key = self._tag_key(tag)
        start = _version_start(tag)
        if key is None or start is None:
            return []
        version = tag[start:]
        suffix = self.flavor.suffix
        if suffix and version.endswith(suffix):
            version = version[:-len(suffix)]
        made = self._stable(self._git_prefix + version)
        return made if tag in made and order_key(version) == key else []

    def claimants(self, repository_tags: Iterable[str]) -> dict[str, list[str]]:
        """Shared tag of ours -> the version tags of every newer release that claims it, newest first."""
        if not self.active:
            return {}
        shared = set(self.shared)
        found: dict[str, list[tuple[tuple[Any, ...], str]]] = {}
        for tag in repository_tags:
            key = self._tag_key(tag)
            if key is None or tag in self.ours.tags or key <= self.key:   # type: ignore[operator]
                continue
            theirs = self.tags_of(tag)
            if not theirs:   # a shared tag of some release, or no release's version tag at all
                continue
            for claimed in shared.intersection(theirs):
                found.setdefault(claimed, []).append((key, tag))
        return {claimed: [t for _, t in sorted(c, reverse=True)] for claimed, c in found.items()}

    def holders(self, repository_tags: Iterable[str]) -> dict[str, str]:
        """Shared tag of ours -> the version tag of the newest newer release that claims it."""
        return {claimed: ranked[0] for claimed, ranked in self.claimants(repository_tags).items()}
