"""Verify stage, after tag: in every registry each release tag resolves to the released digest,
and (with ``[sign] enabled``) cosign verifies the digest's signature with the configured public key
or keyless identity, and each platform's CycloneDX SBOM attestation.

Checked over the registry API and with cosign (not assumed from what the tag or sign stages
did); :mod:`pipeline.sign.verification` is the engine, shared with ``pipeline verify REF``.
A failure names the registry, the reference and the reason, and exits 1. A shared tag that a newer
release holds by right (see :mod:`pipeline.metadata.claims`) is checked against that release instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pipeline import log
from pipeline.context import Context
from pipeline.errors import PolicyError
from pipeline.sign.verification import Check, Target, verify
from pipeline.stage import no_tags_reason
from pipeline.stages.tag import Tagger


@dataclass(frozen=True)
class VerifyOutput:
    digest: str
    checked: dict[str, list[str]]   # registry -> tags that resolve to the digest
    cosign: dict[str, list[str]] = field(default_factory=dict)  # registry -> cosign checks that passed


class Verify:
    name: ClassVar[str] = "verify"
    description: ClassVar[str] = ("Check that every release tag resolves to the released digest in every registry,"
                                  " and that its signature and SBOM attestations verify.")
    tools: ClassVar[tuple[str, ...]] = ("cosign",)

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.config.verify.enabled:
            return "verify.enabled = false"
        if not ctx.config.tag.enabled:
            return "tag.enabled = false (nothing to verify)"
        return no_tags_reason(ctx)

    def describe(self, ctx: Context) -> str:
        text = "resolve every release tag in every registry and compare it with the released digest"
        s = ctx.config.sign
        if s.enabled:
            who = "the keyless identity" if s.keyless else "the configured public key"
            text += f"; cosign verify the signature with {who}"
            if s.sbom:
                text += " and each platform's CycloneDX attestation"
        return text

    def run(self, ctx: Context) -> VerifyOutput:
        build = ctx.outputs["build"]
        digest = build.digest
        tags = ctx.outputs["tags"].result.tags
        cfg = ctx.config
        regs = cfg.release_registries
        held: list[Check] = []
        with ctx.registry_access() as access:
            # a release of an older version may have put a shared tag back after our tag stage: settle
            # once more, then a shared tag is checked against whoever holds it by right (a branch build
            # has no rivals: last writer wins, and verify writes nothing)
            tagger = Tagger(ctx, access, log.get(stage=self.name))
            yielded: dict[str, dict[str, str]] = {r.name: {} for r in regs}
            if tagger.claims.active:
                yielded = tagger.settle(regs, {r.name: [] for r in regs}, {r.name: [] for r in regs}, rounds=1)
            for reg in regs:
                client, repo = access.client(reg), reg.repository(cfg.image.name)
                for tag, holder in sorted(yielded[reg.name].items()):
                    at, theirs = client.manifest_head(repo, tag), client.manifest_head(repo, holder)
                    ok = at is not None and theirs is not None and at.digest == theirs.digest
                    held.append(Check(reg.name, f"{reg.host}/{repo}:{tag}", "tag", ok,
                                      f"held by the newer release {holder} → {at.digest}" if ok else
                                      f"should follow the newer release {holder}, points at "
                                      f"{at.digest if at else 'nothing'}"))
        targets = [Target(reg, reg.repository(cfg.image.name), tag)
                   for reg in regs for tag in tags if tag not in yielded[reg.name]]
        report = verify(cfg, ctx.env, targets, expected=digest, platforms=build.platforms)
        report.checks[:0] = held
        if not report.ok:
            raise PolicyError(report.failure_message())
        checked: dict[str, list[str]] = {reg.name: [] for reg in regs}
        signed: dict[str, list[str]] = {}
        for c in report.checks:
            if c in held:
                continue
            if c.check == "tag":
                checked[c.registry].append(c.ref.rsplit(":", 1)[-1])
            else:
                signed.setdefault(c.registry, []).append(c.check + (f" {c.platform}" if c.platform else ""))
        log.get(stage=self.name).info("release.verified", digest=digest, registries=len(checked),
                                      cosign_checks=sum(len(v) for v in signed.values()))
        return VerifyOutput(digest, checked, signed)
