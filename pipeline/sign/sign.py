"""Sign stage, between copy and tag: the released digest is signed in every registry, by digest.

**Where: in each release registry, by digest** (``host/repo@sha256:…`` of the index; with
``sign.recursive`` also each platform manifest), and an SBOM attested per platform manifest,
before any release tag exists. Each registry's copy is signed and then verified there with our
public key before the tag stage may write a release tag, so "signed before tagged" holds per
registry.

**cosign signs, our client writes.** cosign never talks to a registry here: it signs offline
(v2: ``sign-blob`` over the simple-signing payload, ``attest --no-upload`` for the DSSE envelope;
v3: ``attest-blob --statement`` over the in-toto statement ``cosign sign`` would sign,
``attest --no-upload --bundle``), and :mod:`pipeline.sign.writer` puts the artifacts into the
registry in cosign's own format (v2 ``.sig``/``.att`` tags, v3 referrers or their fallback
index), every request retried on its own. Verification reads the artifacts with our client into
a local layout that cosign checks (``verify --local-image``). So signing survives registries that
fail a share of their requests, and both cosign 2 and 3 verify the result.

The SBOM is made once per platform from the local layout (Trivy CycloneDX, no network).

**Idempotent:** before signing, :func:`pipeline.sign.attachments.listing` reads what the registry
holds for the digest; when something of that kind is there, cosign verifies it with our key
(:func:`pipeline.sign.attachments.decide`). A re-release adds nothing. Two releases on one machine
take a machine-wide lock on the released digest, so they never both sign it (the second finds it
signed); across
machines the registry is the only shared state, so at worst a second signature by the same key
appears, never a broken one.

All registries must succeed: one failure fails the stage, and the tag stage then writes no
release tag anywhere.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pipeline import log
from pipeline.build.build import BuildOutput
from pipeline.config import Config, RegistryConfig
from pipeline.context import Context
from pipeline.errors import ConfigError, InfraError, PipelineError
from pipeline.refs import KMS_SCHEMES, parse_key_ref, platform_key
from pipeline.scan import db as scandb
from pipeline.sign import keys, layouts, vulnrecord, writer
from pipeline.sign.attachments import SIGNATURE, decide, listing
from pipeline.stage import exclusive, no_tags_reason
from pipeline.stages.copy import CopyOutput
from pipeline.times import parse_time
from pipeline.tools import cosign, trivy
from pipeline.tools.oci import Descriptor, Layout
from pipeline.tools.registry import Registry

if TYPE_CHECKING:
    from pipeline.access.registries import Access

SBOM_TYPE = "cyclonedx"
VULN_TYPE = vulnrecord.VULN


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
    """One SBOM file per platform for the whole stage, made on first need from the local layout (thread-safe)."""

    def __init__(self, ctx: Context, build: BuildOutput, workdir: Path, access: Access) -> None:
        self._ctx, self._access = ctx, access
        self._layout = Layout(build.layout)
        self._name = f"{ctx.config.registry(build.registry).host}/{build.repository}"
        self._cache_dir = scandb.cache_dir(ctx.config, ctx.env)
        self._dir = workdir
        self._files: dict[str, Path] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, platform: str, digest: str) -> Path:
        with self._guard:
            lock = self._locks.setdefault(platform, threading.Lock())
        with lock:
            if platform not in self._files:
                view = self._layout.view(digest, self._dir / f"view-{platform_key(platform)}")
                what = f"{self._name}@{digest}"
                try:
                    data = trivy.sbom(view.path, cache_dir=self._cache_dir, what=what)
                except trivy.JavaDBNeeded:           # JARs: the Java DB from our client, then again
                    scandb.prepare_java(self._ctx.config, self._ctx.env, self._access)
                    data = trivy.sbom(view.path, cache_dir=self._cache_dir, what=what)
                out = self._dir / f"sbom-{platform_key(platform)}.cdx.json"
                out.write_bytes(data)
                self._files[platform] = out
                log.get(stage="sign").info("sbom.generated", platform=platform, digest=digest, bytes=len(data))
            return self._files[platform]


class Sign:
    name: ClassVar[str] = "sign"
    description: ClassVar[str] = ("Sign the digest in every release registry (cosign signs offline, our client writes),"
                                  " and attest an SBOM per platform.")
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
        layout = Layout(build.layout)
        subjects: list[tuple[str | None, Descriptor]] = [(None, layout.descriptor(build.digest))]
        if cfg.sign.recursive:
            subjects += [(p, layout.descriptor(d)) for p, d in sorted(build.platforms.items())]
        att_subjects = [(p, layout.descriptor(d)) for p, d in sorted(build.platforms.items())] if cfg.sign.sbom else []
        vuln_reports = scan_reports(ctx) if cfg.sign.attest_scan else {}

        with keys.temporary_dir() as tmp, ctx.registry_access() as access:
            work = Path(tmp)
            signer, runner, verifying, signing = signing_kit(cfg, ctx.env, major, work)
            sboms = _SBOMs(ctx, build, work, access)

            def one(reg: RegistryConfig, repo: str) -> list[Signed]:
                job = _Job(access.client(reg), reg, repo, layout, signing, verifying, runner, work)
                done: list[Signed] = []
                for platform, subject in subjects:
                    done.append(job.ensure(subject, platform, SIGNATURE, None))
                for platform, subject in att_subjects:
                    done.append(job.ensure(subject, platform, SBOM_TYPE,
                                           lambda p=platform, d=subject.digest: sboms.path(p, d)))
                for platform, digest in sorted(build.platforms.items()):
                    if platform in vuln_reports:
                        done.append(job.ensure(layout.descriptor(digest), platform, VULN_TYPE,
                                               lambda p=platform: vuln_predicate(ctx, p, vuln_reports[p], work)))
                logger.info("registry.signed", registry=reg.name, digest=build.digest,
                            signed=sum(1 for d in done if d.action == "signed"),
                            present=sum(1 for d in done if d.action == "present"))
                return done

            items: list[Signed] = []
            errors: list[tuple[str, PipelineError]] = []
            # one release at a time signs this digest on this machine: the second waits, then finds it all
            with exclusive("sign", build.digest), ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
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



#: what signing needs: the signer, a cosign without registry credentials, the verifier, the signing settings
Kit = tuple[keys.Signer, cosign.Cosign, cosign.Verifying, cosign.Signing]


def signing_kit(config: Config, env: Mapping[str, str], major: int, work: Path) -> Kit:
    """The signer, a cosign that gets no registry credentials (it asks no registry), the verifier, and the
    signing settings; a configured public key must belong to the signing key."""
    signer = keys.signer(config.sign, env, cosign.Cosign())
    runner = cosign.Cosign(dict(signer.env))
    verifying = keys.verifier(config.sign, env, major, work, runner=runner)
    if config.sign.public_key:
        Sign._check_pair(config.sign.public_key, signer, runner, work)
    return signer, runner, verifying, cosign.Signing(major, signer.key, config.sign.tlog_upload)


def docker_reference(host: str, repo: str) -> str:
    """The repository as cosign names it in a signature payload (Docker Hub as ``index.docker.io``)."""
    return f"{'index.docker.io' if host in ('docker.io', 'registry-1.docker.io') else host}/{repo}"


@dataclass
class _Job:
    """Signing in one registry repository: decide, sign offline, write, verify."""

    client: Registry
    reg: RegistryConfig
    repo: str
    layout: Layout
    signing: cosign.Signing
    verifying: cosign.Verifying
    runner: cosign.Cosign
    work: Path

    def ours(self, subject: Descriptor, kind: str, what: str) -> cosign.Verified:
        """Does what the registry holds of ``kind`` for ``subject`` verify with our key (or identity)?"""
        body, _ = self.layout.manifest(subject.digest)
        with tempfile.TemporaryDirectory(prefix="verify-", dir=self.work) as tmp:
            found = layouts.fetch(self.client, self.repo, subject, body, kind, Path(tmp))
            return layouts.verify(self.runner, self.verifying, found, kind, what)

    def ensure(self, subject: Descriptor, platform: str | None, kind: str, predicate: object) -> Signed:
        """Sign (or attest) ``subject`` unless our key already did; then prove it verifies."""
        ref = f"{self.reg.host}/{self.repo}@{subject.digest}"
        what = "signature" if kind == SIGNATURE else f"{kind} attestation"
        where = f"{self.reg.name}: {ref}" + (f" ({platform})" if platform else "")
        logger = log.get(stage="sign", registry=self.reg.name)
        found = listing(self.client, self.repo, subject.digest)
        decision = decide(found, kind)
        if decision == "check":
            decision = decide(found, kind, self.ours(subject, kind, f"verify the {what} of {where}").ok)
        if decision == "skip":
            logger.info(f"{'signature' if kind == SIGNATURE else 'attestation'}.present", ref=ref, kind=kind,
                        platform=platform, count=found.count(kind))
            return Signed(self.reg.name, ref, kind, platform, "present")
        return self.add(subject, platform, kind, predicate)

    def add(self, subject: Descriptor, platform: str | None, kind: str, predicate: object) -> Signed:
        """Sign (or attest) ``subject`` once more, whatever is there; then prove it verifies."""
        ref = f"{self.reg.host}/{self.repo}@{subject.digest}"
        what = "signature" if kind == SIGNATURE else f"{kind} attestation"
        where = f"{self.reg.name}: {ref}" + (f" ({platform})" if platform else "")
        logger = log.get(stage="sign", registry=self.reg.name)
        with tempfile.TemporaryDirectory(prefix="sign-", dir=self.work) as tmp:
            self._make_and_write(subject, ref, kind, predicate, Path(tmp), where)
        check = self.ours(subject, kind, f"verify the {what} of {where}")
        if not check.ok:
            raise InfraError(f"{where}: the {what} was written but does not verify with the configured public"
                             f" key or identity: {check.reason}")
        logger.info("image.signed" if kind == SIGNATURE else "attestation.attached", ref=ref, kind=kind,
                    platform=platform)
        return Signed(self.reg.name, ref, kind, platform, "signed")

    def _make_and_write(self, subject: Descriptor, ref: str, kind: str, predicate: object, tmp: Path,
                        where: str) -> None:
        if kind == SIGNATURE and self.signing.major >= 3:
            statement = tmp / "statement.json"
            statement.write_bytes(writer.sign_statement(subject.digest))
            bundle = self.runner.attest_blob(str(statement), self.signing, workdir=str(tmp), what=f"sign {where}")
            writer.write_bundle(self.client, self.repo, subject, bundle)
        elif kind == SIGNATURE:
            payload = tmp / "payload.json"
            payload.write_bytes(writer.simple_signing_payload(docker_reference(self.reg.host, self.repo),
                                                              subject.digest))
            signature, extra = self.runner.sign_blob(str(payload), self.signing, workdir=str(tmp),
                                                     what=f"sign {where}")
            writer.write_legacy_signature(self.client, self.repo, subject.digest, payload.read_bytes(), signature,
                                          extra)
        else:
            path = predicate() if callable(predicate) else None
            made = self.runner.attest_offline(ref, str(path), self.signing, predicate_type=kind, workdir=str(tmp),
                                              what=f"attest the {kind} predicate of {where}")
            if self.signing.major >= 3:
                writer.write_bundle(self.client, self.repo, subject, made)
            else:
                writer.write_legacy_attestation(self.client, self.repo, subject.digest, made)


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


def vuln_predicate(ctx: Context, platform: str, report: Path, work: Path) -> Path:
    """The vuln predicate of one platform's report with the gate's dated verdict, made once per run."""
    out = work / f"vuln-{report.stem}.json"
    with _vuln_lock:
        if not out.exists():
            scan = ctx.outputs["scan"]
            judged = scan.platforms[platform]
            out.write_bytes(vulnrecord.dated_predicate(
                trivy.cosign_vuln(report), verdict=judged.verdict, blocking=[b["id"] for b in judged.blocking],
                counts=judged.counts, fail_on=ctx.config.scan.fail_on, db_built=str(scan.db.get("updated_at", "")),
                scanned_on=report_time(report), source="release"))
    return out


@dataclass(frozen=True)
class Verdict:
    """One rescanned platform manifest to attest: where it is, Trivy's report and what the policy said."""

    registry: RegistryConfig
    repository: str
    platform: str
    manifest: str
    report: Path
    verdict: str
    blocking: tuple[str, ...]
    counts: dict[str, int]


def attest_verdicts(config: Config, env: Mapping[str, str], access: Access, verdicts: Sequence[Verdict],
                    db_built: str, work: Path, *, kit: Kit | None = None) -> list[Signed | tuple[Verdict, str]]:
    """``rescan --attest``: a signed, dated ``vuln`` attestation of each verdict, beside the release's own.

    Unlike the sign stage (one attestation per kind by our key), each rescan that judged anew adds one;
    when a verified attestation already says the same (DB build, verdict, blocking findings) it is left
    at that. Returns what was attested or found, and (verdict, error) for what could not be. ``kit`` is
    :func:`signing_kit`'s answer when the caller checked the key already (made in ``work``)."""
    _, runner, verifying, signing = kit or signing_kit(config, env, cosign.installed_major(), work)
    logger = log.get(stage="rescan")

    def one(v: Verdict) -> Signed | tuple[Verdict, str]:
        client = access.client(v.registry)
        try:
            body, media, _ = client.manifest_get(v.repository, v.manifest)
            with tempfile.TemporaryDirectory(prefix="attest-", dir=work) as tmp:
                layout = Layout.create(Path(tmp) / "subject")
                layout.put(body, v.manifest)
                subject = Descriptor(media, v.manifest, len(body))
                ref = f"{v.registry.host}/{v.repository}@{v.manifest}"
                scanned_on = report_time(v.report)
                said = vulnrecord.verified_records(client, v.repository, subject, body, runner, verifying, Path(tmp),
                                                   f"verify the vuln attestations of {v.registry.name}: {ref}")
                if any(r.db_built == db_built and r.verdict == v.verdict and set(r.blocking) == set(v.blocking)
                       for r in said):
                    logger.info("attestation.present", ref=ref, kind=VULN_TYPE, platform=v.platform)
                    return Signed(v.registry.name, ref, VULN_TYPE, v.platform, "present")
                predicate = Path(tmp) / "vuln.json"
                predicate.write_bytes(vulnrecord.dated_predicate(
                    trivy.cosign_vuln(v.report), verdict=v.verdict, blocking=v.blocking, counts=v.counts,
                    fail_on=config.scan.fail_on, db_built=db_built, scanned_on=scanned_on, source="rescan"))
                job = _Job(client, v.registry, v.repository, layout, signing, verifying, runner, Path(tmp))
                return job.add(subject, v.platform, VULN_TYPE, lambda: predicate)
        except PipelineError as exc:
            logger.error("attestation.failed", registry=v.registry.name, manifest=v.manifest, error=str(exc)[:300])
            return (v, str(exc))

    with ThreadPoolExecutor(max_workers=max(1, min(4, len(verdicts)))) as pool:
        return list(pool.map(one, verdicts))


def report_time(report: Path) -> datetime:
    """When Trivy made ``report`` (its ``CreatedAt``), else the file's time."""
    try:
        when = parse_time(json.loads(report.read_bytes()).get("CreatedAt"))
    except (OSError, ValueError, AttributeError):
        when = None
    return when or datetime.fromtimestamp(report.stat().st_mtime, timezone.utc)


def _pem(text: str) -> str:
    return "".join(text.split())
