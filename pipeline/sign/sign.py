"""Sign stage, between copy and tag: cosign signs the released digest in every registry, by digest.

**Where: in each release registry, by digest** (``host/repo@sha256:…`` of the index; with
``sign.recursive`` also each platform manifest), not once in staging with the artifacts copied
after. Why:

* the signature is made where it is verified: each registry's copy is checked (signed, then
  ``cosign verify`` with our public key) before the tag stage may write a release tag there, so
  "signed before tagged" holds per registry, not by inference from staging;
* cosign's own writer handles each registry's format and quirks (v2 ``.sig`` tags, v3 referrers
  or their fallback index, appending to other keys' signatures), where copying would have to
  merge signature manifests and referrer indexes by hand;
* a registry reached by a later promotion gets signed when this stage runs for it; artifacts
  copied along by other tools (``cosign copy``, :func:`pipeline.sign.attachments.copy_attachments`)
  verify there too, because cosign does not bind the repository name, and they count as ours.

The price: one signature (and, with the tlog on, one Rekor entry) per registry instead of one in
total. The SBOM is made once per platform (Trivy CycloneDX, from staging by digest) and attested
in every registry (``cosign attest --type cyclonedx`` on the platform manifest).

**Idempotent:** before signing, :func:`pipeline.sign.attachments.listing` reads what the registry holds
for the digest; when something of that kind is there, ``cosign verify`` with our key decides
whether it is ours (see :func:`pipeline.sign.attachments.decide`). A re-release adds nothing.

All registries must succeed: one failure fails the stage, and the tag stage then writes no
release tag anywhere.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pipeline import log
from pipeline.access.registries import Access
from pipeline.build.build import BuildOutput
from pipeline.config import RegistryConfig
from pipeline.context import Context
from pipeline.errors import ConfigError, InfraError, PipelineError
from pipeline.refs import KMS_SCHEMES, parse_key_ref, platform_key
from pipeline.sign import keys
from pipeline.sign.attachments import SIGNATURE, decide, listing
from pipeline.stage import no_tags_reason
from pipeline.stages.copy import CopyOutput
from pipeline.tools import cosign, trivy
from pipeline.tools.registry import Registry

SBOM_TYPE = "cyclonedx"
VULN_TYPE = "vuln"


@dataclass(frozen=True)
class Signed:
    registry: str
    ref: str                 # host/repo@sha256:…
    kind: str                # "signature" | "cyclonedx"
    platform: str | None     # None: the index
    action: str              # "signed" (this run) | "present" (already there, by our key)


@dataclass(frozen=True)
class SignOutput:
    digest: str
    signer: str              # what signed (never a secret): "key .pipeline/cosign.key", "keyless …", a KMS URI
    cosign_major: int
    format: str              # where the artifacts are: legacy tags or OCI referrers
    development_key: bool
    items: tuple[Signed, ...]

    @property
    def registries(self) -> list[str]:
        return sorted({i.registry for i in self.items})

    def count(self, action: str) -> int:
        return sum(1 for i in self.items if i.action == action)


def storage_format(major: int) -> str:
    return ("OCI referrers (Sigstore bundles; fallback tag sha256-<hex>)" if major >= 3
            else "tags sha256-<hex>.sig / .att")


def sign_targets(ctx: Context) -> list[tuple[RegistryConfig, str]]:
    """(registry, repository) pairs that hold the digest: the copy's destinations, else staging."""
    build: BuildOutput = ctx.outputs["build"]
    copy: CopyOutput | None = ctx.outputs.get("copy")
    if copy is None:
        return [(ctx.config.registry(build.registry), build.repository)]
    return [(ctx.config.registry(name), rc.repository) for name, rc in copy.copied.items()]


class _SBOMs:
    """One SBOM file per platform for the whole stage, made on first need (thread-safe)."""

    def __init__(self, ctx: Context, build: BuildOutput, env: Mapping[str, str], workdir: Path) -> None:
        staging = ctx.config.registry(build.registry)
        self._source = f"{staging.host}/{build.repository}"
        self._insecure = staging.allow_http
        self._cache_dir = ctx.config.scan.cache_dir
        self._env = env
        self._dir = workdir
        self._files: dict[str, Path] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, platform: str, digest: str) -> Path:
        with self._guard:
            lock = self._locks.setdefault(platform, threading.Lock())
        with lock:
            if platform not in self._files:
                data = trivy.sbom(f"{self._source}@{digest}", env=self._env, insecure=self._insecure,
                                  cache_dir=self._cache_dir)
                out = self._dir / f"sbom-{platform_key(platform)}.cdx.json"
                out.write_bytes(data)
                self._files[platform] = out
                log.get(stage="sign").info("sbom.generated", platform=platform, digest=digest, bytes=len(data))
            return self._files[platform]


class Sign:
    name: ClassVar[str] = "sign"
    description: ClassVar[str] = "Sign the digest in every release registry with cosign, and attest an SBOM per platform."
    tools: ClassVar[tuple[str, ...]] = ("cosign", "trivy")

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.config.sign.enabled:
            return "sign.enabled = false"
        return no_tags_reason(ctx)

    def describe(self, ctx: Context) -> str:
        s = ctx.config.sign
        if s.keyless:
            who = "keyless (the CI's OIDC identity)"
        elif not s.key:
            return "cannot sign: no [sign] key configured (set key, keyless = true or enabled = false)"
        elif keys.is_development_key(s.key) and not Path(s.key).exists():
            who = f"a development key generated now at {s.key}"
        else:
            who = f"{'the development key' if keys.is_development_key(s.key) else 'key'} {s.key}"
        copy: CopyOutput | None = ctx.outputs.get("copy")
        where = ", ".join(copy.copied) if copy else ", ".join(r.name for r in ctx.config.release_registries)
        what = "the index" + (" and each platform manifest" if s.recursive else "")
        sbom_text = "; attest a CycloneDX SBOM per platform" if s.sbom else ""
        if s.attest_scan:
            sbom_text += "; attest the scan result (vuln) per platform"
        tlog = {None: "", True: "; tlog upload on", False: "; no tlog upload"}[s.tlog_upload]
        return (f"sign {what} by digest in {where} with {who}{sbom_text}{tlog}; what our key already signed"
                f" is kept (no second signature)")

    def run(self, ctx: Context) -> SignOutput:
        cfg = ctx.config
        build: BuildOutput = ctx.outputs["build"]
        keys.key_ref(cfg.sign)          # no key configured: a config error before anything runs
        targets = sign_targets(ctx)
        major = cosign.installed_major()
        logger = log.get(stage=self.name)
        sign_digests: list[tuple[str | None, str]] = [(None, build.digest)]
        if cfg.sign.recursive:
            sign_digests += sorted(build.platforms.items())
        att_digests = sorted(build.platforms.items()) if cfg.sign.sbom else []
        vuln_reports = scan_reports(ctx) if cfg.sign.attest_scan else {}

        with keys.temporary_dir() as tmp, Access(cfg, ctx.env) as access:
            work = Path(tmp)
            tool_env = access.tool_env()
            signer = keys.signer(cfg.sign, ctx.env, cosign.Cosign(tool_env))
            runner = cosign.Cosign({**tool_env, **signer.env})
            base_verify = keys.verifier(cfg.sign, ctx.env, major, work, runner=runner)
            if cfg.sign.public_key:
                self._check_pair(cfg.sign.public_key, signer, runner, work)
            sboms = _SBOMs(ctx, build, tool_env, work)

            def one(reg: RegistryConfig, repo: str) -> list[Signed]:
                client = access.client(reg)
                signing = cosign.Signing(major, signer.key, cfg.sign.tlog_upload, reg.allow_http)
                verifying = dataclasses.replace(base_verify, allow_http=reg.allow_http)
                done: list[Signed] = []
                for platform, digest in sign_digests:
                    done.append(self._ensure(client, reg, repo, digest, platform, SIGNATURE, signing, verifying,
                                             runner, None))
                for platform, digest in att_digests:
                    done.append(self._ensure(client, reg, repo, digest, platform, SBOM_TYPE, signing, verifying,
                                             runner, lambda p=platform, d=digest: sboms.path(p, d)))
                for platform, digest in sorted(build.platforms.items()):
                    if platform in vuln_reports:
                        done.append(self._ensure(client, reg, repo, digest, platform, VULN_TYPE, signing, verifying,
                                                 runner, lambda p=platform: vuln_predicate(vuln_reports[p], work,
                                                                                           tool_env)))
                logger.info("registry.signed", registry=reg.name, digest=build.digest,
                            signed=sum(1 for d in done if d.action == "signed"),
                            present=sum(1 for d in done if d.action == "present"))
                return done

            items: list[Signed] = []
            errors: list[tuple[str, PipelineError]] = []
            with ThreadPoolExecutor(max_workers=cfg.copy_.concurrency) as pool:
                futures = {reg.name: pool.submit(one, reg, repo) for reg, repo in targets}
                for name, future in futures.items():
                    try:
                        items.extend(future.result())
                    except PipelineError as exc:
                        errors.append((name, exc))
                        logger.error("registry.sign_failed", registry=name, error=str(exc))
        if errors:
            name, first = errors[0]
            more = f" (and {len(errors) - 1} more registr{'ies' if len(errors) > 2 else 'y'})" if len(errors) > 1 else ""
            failure = InfraError(f"signing failed in {name}: {first}{more}; no release tag is written")
            failure.exit_code = first.exit_code
            raise failure from None
        if signer.development:
            logger.warning("sign.development_key", key=cfg.sign.key, note=keys.DEV_WARNING)
        return SignOutput(build.digest, signer.description, major, storage_format(major), signer.development,
                          tuple(items))

    # -- helpers

    @staticmethod
    def _check_pair(public_key: str, signer: keys.Signer, runner: cosign.Cosign, work: Path) -> None:
        """A configured public key must belong to the signing key (else every verify would fail after signing)."""
        ref = parse_key_ref(public_key, public=True)
        if signer.key is None or ref.kind != "file" or signer.key.startswith(KMS_SCHEMES):
            return
        derived = work / "derived.pub"
        runner.public_key(signer.key, str(derived), what="read the public key of sign.key")
        if _pem(derived.read_text()) != _pem(Path(ref.value).read_text()):
            raise InfraError(f"sign.public_key: {public_key} is not the public key of sign.key ({signer.description});"
                             " nothing was signed")

    @staticmethod
    def _ensure(client: Registry, reg: RegistryConfig, repo: str, digest: str, platform: str | None, kind: str,
                signing: cosign.Signing, verifying: cosign.Verifying, runner: cosign.Cosign,
                predicate: object) -> Signed:
        """Sign (or attest) ``digest`` unless our key already did; then prove it verifies."""
        ref = f"{reg.host}/{repo}@{digest}"
        what = "signature" if kind == SIGNATURE else f"{kind} attestation"
        where = f"{reg.name}: {ref}" + (f" ({platform})" if platform else "")
        logger = log.get(stage="sign", registry=reg.name)

        def verify() -> cosign.Verified:
            if kind == SIGNATURE:
                return runner.verify(ref, verifying, what=f"verify the {what} of {where}")
            return runner.verify_attestations(ref, verifying, predicate_type=kind, what=f"verify the {what} of {where}")

        found = listing(client, repo, digest)
        decision = decide(found, kind)
        if decision == "check":
            decision = decide(found, kind, verify().ok)
        if decision == "skip":
            logger.info(f"{'signature' if kind == SIGNATURE else 'attestation'}.present", ref=ref, kind=kind,
                        platform=platform, count=found.count(kind))
            return Signed(reg.name, ref, kind, platform, "present")
        if kind == SIGNATURE:
            runner.sign(ref, signing, what=f"sign {where}")
        else:
            path = predicate() if callable(predicate) else None
            runner.attest(ref, str(path), signing, predicate_type=kind, what=f"attest the {kind} predicate of {where}")
        check = verify()
        if not check.ok:
            raise InfraError(f"{where}: cosign wrote the {what} but it does not verify with the configured public"
                             f" key or identity: {check.reason}")
        logger.info("image.signed" if kind == SIGNATURE else "attestation.attached", ref=ref, kind=kind,
                    platform=platform)
        return Signed(reg.name, ref, kind, platform, "signed")


def scan_reports(ctx: Context) -> dict[str, Path]:
    """platform → this run's raw Trivy report, for ``sign.attest_scan``."""
    scan = ctx.outputs.get("scan")
    if scan is None:
        raise ConfigError(f"{ctx.config_path}: sign.attest_scan: needs the scan stage to run in this release"
                          " ([scan] enabled, not skipped)")
    if not scan.vulnerabilities_scanned:
        log.get(stage="sign").warning("attestation.vuln_skipped",
                                      reason="vulnerabilities were not scanned (no DB): no vuln attestation")
        return {}
    return {platform: Path(path) for key, path in scan.reports.items()
            if key.startswith("trivy:") and (platform := key.split(":", 1)[1])}


_vuln_lock = threading.Lock()


def vuln_predicate(report: Path, work: Path, env: Mapping[str, str]) -> Path:
    """The cosign-vuln predicate of one report, converted once per run."""
    out = work / f"vuln-{report.stem}.json"
    with _vuln_lock:
        if not out.exists():
            out.write_bytes(trivy.cosign_vuln(report, env=env))
    return out


def _pem(text: str) -> str:
    return "".join(text.split())
