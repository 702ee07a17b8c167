"""Verify stage, after tag: in every registry each release tag resolves to the released digest,
and (with ``[sign] enabled``) cosign verifies the digest's signature with the configured public key
or keyless identity, and each platform's CycloneDX SBOM attestation.

Checked over the registry API and with cosign (not assumed from what the tag or sign stages
did); :mod:`pipeline.sign.verification` is the engine, shared with ``pipeline verify REF``.
A failure names the registry, the reference and the reason, and exits 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pipeline import log
from pipeline.context import Context
from pipeline.errors import PolicyError
from pipeline.sign.verification import Target, verify
from pipeline.stage import no_tags_reason


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
        targets = [Target(reg, reg.repository(cfg.image.name), tag)
                   for reg in cfg.release_registries for tag in tags]
        report = verify(cfg, ctx.env, targets, expected=digest, platforms=build.platforms)
        if not report.ok:
            raise PolicyError(report.failure_message())
        checked: dict[str, list[str]] = {reg.name: [] for reg in cfg.release_registries}
        signed: dict[str, list[str]] = {}
        for c in report.checks:
            if c.check == "tag":
                checked[c.registry].append(c.ref.rsplit(":", 1)[-1])
            else:
                signed.setdefault(c.registry, []).append(c.check + (f" {c.platform}" if c.platform else ""))
        log.get(stage=self.name).info("release.verified", digest=digest, registries=len(checked),
                                      cosign_checks=sum(len(v) for v in signed.values()))
        return VerifyOutput(digest, checked, signed)
