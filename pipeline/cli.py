"""argv → command. The only reader of os.environ and sys.argv; maps errors to exit codes.

Exit codes: 0 success · 1 policy said no · 2 bad config or usage ·
3 infrastructure or tool failure · 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from pipeline import __version__, config, log
from pipeline.context import Context, Options, source_date
from pipeline.errors import EXIT_INFRA, EXIT_INTERRUPTED, EXIT_OK, EXIT_POLICY, PipelineError, UsageError
from pipeline.metadata import ci


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port (0 to 65535)")
    return int(text)


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _common(p: argparse.ArgumentParser, *, fmt: bool = True) -> None:
    p.add_argument("--config", metavar="PATH", help="config file (default: config/pipeline.toml)")
    if fmt:
        p.add_argument("--format", choices=("text", "json"), default="text", help="output format")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pipeline", description="Release orchestrator for container images.")
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="log lines as readable text (default) or JSON lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("tags", help="compute release tags, labels and annotations (metadata-action semantics)")
    _common(p)
    p = sub.add_parser("plan", help="show every release stage and what it would do or why it would skip")
    _common(p)
    p.add_argument("--skip", action="append", default=[], metavar="STAGE", help="skip a stage (repeatable)")
    p = sub.add_parser("release", help="run the release: tags, build, scan, staging, copy, sign, tag, verify, report")
    _common(p)
    p.add_argument("--skip", action="append", default=[], metavar="STAGE", help="skip a stage (repeatable)")
    p.add_argument("--from-digests", metavar="DIR", help="merge per-platform digests written by split builds")
    p = sub.add_parser("build", help="build and push the candidate to staging (one platform with --platform)")
    _common(p)
    p.add_argument("--platform", metavar="OS/ARCH", help="build only this platform (split mode, one CI runner each)")
    p.add_argument("--digest-out", metavar="DIR", help="write the platform's digest file here (for release --from-digests)")
    p = sub.add_parser("scan", help="scan the staged candidate (every platform) and apply the gate; or judge a"
                       " Trivy report (--report), prewarm (--download-db) or mirror (--mirror-db) the DB")
    _common(p)
    p.add_argument("--report", metavar="FILE.json", help="apply the [scan] policy to a Trivy JSON report made"
                   " elsewhere (exit 0 pass, 1 fail)")
    p.add_argument("--download-db", action="store_true", help="fetch the vulnerability DB into scan.cache_dir")
    p.add_argument("--mirror-db", metavar="REGISTRY/REPO[:TAG]", help="copy the vulnerability DB artifact into"
                   " this registry (then list it in scan.db_repository)")
    p = sub.add_parser("mirror", help="copy the Dockerfile's base images into the [mirror] registry and pin them in"
                       " the lock file, without building")
    _common(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--check", action="store_true", help="ask the upstreams (HEADs only) whether a locked tag moved:"
                     " exit 1 when one did or a base is not locked yet; nothing is copied or written")
    how.add_argument("--update", action="store_true", help="resolve every tag again, copy the new digests into the"
                     " mirror and move the lock")
    p = sub.add_parser("rescan", help="judge the released images again with today's vulnerability DB (the gate's"
                       " policy): exit 1 when one now fails")
    _common(p)
    p.add_argument("--registry", action="append", default=[], metavar="NAME", help="only this registry (repeatable)")
    p.add_argument("--attest", action="store_true", help="attach each verdict to its platform manifest as a signed,"
                   " dated vuln attestation ([sign] key), which inventory shows as 'scanned on <date>'")
    p.add_argument("--emit-cronjob", action="store_true", help="print a Kubernetes CronJob (and the ConfigMap"
                   " of the files it reads) that runs this rescan at [rescan] schedule; nothing is scanned")
    p.add_argument("--image", metavar="REF", help="with --emit-cronjob: the image the job runs (default: [rescan]"
                   " image)")
    p.add_argument("--namespace", metavar="NS", help="with --emit-cronjob: the namespace of the documents")
    p.add_argument("--secret", metavar="NAME", help="with --emit-cronjob: the Secret"
                   " holding the credentials the job reads (default: pipeline-rescan)")
    p = sub.add_parser("vex", help="OpenVEX: 'vex export' writes the [scan] exceptions as an OpenVEX document (for"
                       " trivy --vex, Grype, admission controllers)")
    _common(p, fmt=False)
    p.add_argument("action", choices=("export",))
    p.add_argument("--output", metavar="FILE", help="write it here (default: stdout)")
    p = sub.add_parser("registry", help="run a self-hosted distribution registry: start | stop | status | adduser |"
                       " client-config (a pull-through cache's client settings)")
    p.add_argument("action", choices=("start", "stop", "status", "adduser", "client-config"))
    p.add_argument("user", nargs="?", help="adduser: the user name (password from stdin or $PIPELINE_REGISTRY_PASSWORD)")
    p.add_argument("--name", default="local", help="instance name (default: local)")
    p.add_argument("--port", type=_port, default=5000, help="port on 127.0.0.1 (default: 5000; 0: any free one)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--data-dir", metavar="DIR", help="where images are kept (default: .pipeline/registry/NAME/data)")
    p.add_argument("--auth", action="store_true", help="require htpasswd (bcrypt) authentication")
    p.add_argument("--tls", action="store_true", help="serve HTTPS with a generated self-signed certificate")
    p.add_argument("--no-delete", action="store_true", help="refuse deletes (default: deletes enabled)")
    p.add_argument("--trust", action="store_true", help="with --tls: do the docker certs.d set-up (copy the"
                   " certificate to <certs-d>/<host:port>/ca.crt; needs root)")
    p.add_argument("--certs-d", metavar="DIR", default=None, help="docker's certs.d directory (default:"
                   " /etc/docker/certs.d)")
    p.add_argument("--proxy", metavar="URL", help="start: a read-only pull-through cache of this upstream, e.g."
                   " https://registry-1.docker.io (one upstream per instance)")
    p.add_argument("--proxy-as", metavar="REGISTRY", help="with --proxy: the registry name clients know the upstream"
                   " by, for client-config (default from the URL; docker.io for a company mirror of Docker Hub)")
    p.add_argument("--proxy-ttl", metavar="DURATION", help="with --proxy: how long cached content is kept, e.g."
                   " 168h (distribution 3; 2.8 keeps 7 days)")
    p.add_argument("--proxy-username-env", metavar="VAR", help="with --proxy: the environment variable holding the"
                   " upstream user name")
    p.add_argument("--proxy-password-env", metavar="VAR", help="with --proxy: the environment variable holding the"
                   " upstream password or token (never on the command line)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p = sub.add_parser("login", help="log the docker config in to every configured registry (passwords through"
                       " stdin), for docker, buildx, cosign and trivy")
    _common(p)
    p.add_argument("--registry", action="append", default=[], metavar="NAME", help="only this registry (repeatable)")
    p.add_argument("--username", metavar="USER", help="with --password-stdin: log in to one --registry by hand"
                   " (registries with auth = \"docker\")")
    p.add_argument("--password-stdin", action="store_true", help="read the password or token from stdin")
    p = sub.add_parser("pull-secret", help="a Kubernetes image pull secret (YAML) for a registry, from the"
                       " credentials a release uses; ECR adds a CronJob that refreshes it")
    _common(p, fmt=False)
    p.add_argument("--registry", required=True, metavar="NAME", help="the [[registries]] entry")
    p.add_argument("--namespace", default="default", metavar="NS", help="namespace (default: default)")
    p.add_argument("--name", default="regcred", help="Secret name (default: regcred)")
    p.add_argument("--service-account", metavar="SA", help="also add the secret to this service account's"
                   " imagePullSecrets")
    p.add_argument("--output", metavar="FILE", help="write the YAML here (mode 0600) instead of stdout")
    p.add_argument("--apply", action="store_true", help="apply it with kubectl (secret through stdin)")
    p.add_argument("--no-refresh", action="store_true", help="ECR: leave out the refresh CronJob")
    p.add_argument("--refresh-schedule", metavar="CRON", default=None, help="ECR: the CronJob schedule"
                   " (default: every 8 hours; tokens live 12)")
    p.add_argument("--aws-role-arn", metavar="ARN", help="ECR: the IAM role (IRSA) the refresh job assumes")
    p = sub.add_parser("ci-init", help="write a GitHub workflow, .gitlab-ci.yml or Jenkinsfile that runs the nox"
                       " sessions (plan on PRs, release on tags and the default branch)")
    _common(p, fmt=False)
    p.add_argument("ci", choices=("github", "gitlab", "jenkins"))
    p.add_argument("--output", metavar="FILE", help="where to write (default: .github/workflows/release.yml,"
                   " .gitlab-ci.yml or Jenkinsfile; '-': stdout)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p = sub.add_parser("ecr", help="ECR set-up: ensure repositories (scan on push, tag immutability, encryption,"
                       " lifecycle and repository policies); policy prints the repository policy")
    p.add_argument("action", choices=("ensure", "policy"))
    _common(p)
    p.add_argument("--registry", action="append", default=[], metavar="NAME", help="only this ECR registry"
                   " (repeatable; default: every ECR entry)")
    p.add_argument("--apply", action="store_true", help="policy: also set it on each repository (ensure always does)")
    p = sub.add_parser("verify", help="verify a release: tags resolve to one digest, cosign signature and SBOMs verify")
    _common(p)
    p.add_argument("ref", metavar="REF", help="a release tag (checked in every registry), sha256:DIGEST, or a full"
                   " reference host/repo:tag")
    p.add_argument("--digest", metavar="SHA256", help="the digest REF must resolve to (default: what the"
                   " registries agree on)")
    p = sub.add_parser("keygen", help="create a cosign key pair (password from $COSIGN_PASSWORD or stdin, never printed)")
    p.add_argument("--output", metavar="PREFIX", default="cosign", help="writes PREFIX.key (0600) and PREFIX.pub"
                   " (default: cosign)")
    p.add_argument("--password-env", metavar="VAR", default="COSIGN_PASSWORD",
                   help="environment variable holding the password (default: COSIGN_PASSWORD)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p = sub.add_parser("prune", help="apply the [lifecycle] rules (ECR semantics) to every registry: a preview,"
                       " --apply deletes")
    _common(p)
    p.add_argument("--apply", action="store_true", help="delete what the preview expires (needs [lifecycle] enabled)")
    p.add_argument("--emit-ecr-policy", metavar="FILE", help="write the rules as an ECR lifecycle policy document"
                   " ('-': stdout) and stop")
    p.add_argument("--registry", action="append", default=[], metavar="NAME", help="only this registry (repeatable)")
    p = sub.add_parser("inventory", help="every image in every registry: tags, platforms, signed, scanned, age,"
                       " lifecycle verdict; writes an HTML page")
    _common(p)
    p.add_argument("--html", metavar="PATH", help="the static HTML page (default: <report.dir>/inventory.html)")
    p.add_argument("--registry", action="append", default=[], metavar="NAME", help="only this registry (repeatable)")
    p.add_argument("--serve", action="store_true", help="serve the inventory as a live page (refresh, details,"
                   " deletes through the prune engine with [lifecycle] enabled) until interrupted")
    p.add_argument("--port", type=_port, default=8088, help="with --serve: the port (default: 8088; 0: any free one)")
    p.add_argument("--bind", default="127.0.0.1", help="with --serve: the address (default: 127.0.0.1; any other"
                   " needs the token of --token-env)")
    p.add_argument("--token-env", metavar="VAR", default="PIPELINE_INVENTORY_TOKEN", help="with --serve: the"
                   " environment variable holding the token every request must bring when not bound to loopback")
    p = sub.add_parser("doctor", help="check (and with --install, install) the external tools")
    _common(p)
    p.add_argument("--install", action="store_true",
                   help="install what is missing (root on Debian/Ubuntu) and start dockerd")
    p.add_argument("--tests", action="store_true",
                   help="also what only the test suite needs (gitlab-ci-local and rsync; root on Debian/Ubuntu)")
    p.add_argument("--download-base", metavar="URL",
                   help="without root: fetch trivy, cosign, buildx and the registry from this mirror of their"
                        " release files (with the checksum files) instead of GitHub; also $PIPELINE_DOWNLOAD_BASE")
    p.add_argument("--current", action="store_true",
                   help="also unpack Debian unstable's cosign, crane, buildx and dockerd (today's tool lines) into"
                        " /opt/pipeline-toolchain/current/bin, beside the default toolchain (PATH unchanged)")
    return parser


# --------------------------------------------------------------------------- helpers


def _emit(data: Any, fmt: str, text: Callable[[], str], out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        out.write(text() + "\n")


def make_context(args: argparse.Namespace, env: Mapping[str, str], *, cwd: Path | None = None) -> Context:
    from pipeline.tools.git import Git

    cfg_path = Path(args.config or env.get("PIPELINE_CONFIG") or config.DEFAULT_PATH)
    cfg = config.load(cfg_path, env)
    now = source_date(env)
    info = ci.detect(env, git=Git(cwd or Path.cwd()), pr_head_sha=cfg.tags.pr_head_sha,
                     default_branch=cfg.tags.default_branch)
    options = Options(
        skip=frozenset(getattr(args, "skip", []) or []),
        from_digests=getattr(args, "from_digests", None),
        platform=getattr(args, "platform", None),
        digest_out=getattr(args, "digest_out", None),
        output_format=getattr(args, "format", "text"),
    )
    _check_skips(options.skip)
    return Context(config=cfg, ci=info, env=env, now=now, config_path=cfg_path, options=options,
                   progress=_progress_writer(env))


def _progress_writer(env: Mapping[str, str]) -> Callable[[str], None]:
    """Live build output on stderr: as buildx prints it on a terminal, plain lines in CI."""
    def write(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    return write


def _check_skips(skip: frozenset[str]) -> None:
    if not skip:
        return      # the stages import nothing until a command runs them
    from pipeline.plan import RELEASE

    names = [s.name for s in RELEASE]
    unknown = sorted(skip - set(names))
    if unknown:
        raise UsageError(f"--skip {unknown[0]}: no such stage (stages: {', '.join(names)})")


# --------------------------------------------------------------------------- commands


def cmd_tags(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.metadata.tags import compute_tags

    ctx = make_context(args, env)
    result = compute_tags(ctx)
    data = result.result.to_dict(result.images)

    def text() -> str:
        lines = [f"version: {data['version'] or '(none)'}",
                 f"context: {ctx.ci.provider} {ctx.ci.event} {ctx.ci.ref or '(no ref)'} {ctx.ci.sha[:12]}"]
        lines.append("tags:" + ("" if data["tags"] else " (none: no rule matches this ref)"))
        lines += [f"  {t}" for t in data["tags"]]
        if data["refs"]:
            lines.append("refs:")
            lines += [f"  {r}" for r in data["refs"]]
        lines.append("labels:")
        lines += [f"  {k}={v}" for k, v in data["labels"].items()]
        return "\n".join(lines)

    _emit(data, args.format, text, out)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.plan import plan

    ctx = make_context(args, env)
    lines = plan(ctx)
    data = {"context": ctx.ci.to_dict(), "stages": [ln.to_dict() for ln in lines]}

    def text() -> str:
        width = max(len(ln.stage) for ln in lines)
        marks = {"run": "run ", "skip": "skip"}
        return "\n".join(f"{i + 1:>2}. {ln.stage:<{width}}  {marks[ln.action]}  {ln.detail}"
                         for i, ln in enumerate(lines))

    _emit(data, args.format, text, out)
    return EXIT_OK


def _run_stages(args: argparse.Namespace, env: Mapping[str, str], out: TextIO,
                names: tuple[str, ...] | None) -> Context:
    from pipeline.tools import buildx

    ctx = make_context(args, env)
    if "build" not in ctx.options.skip and not ctx.options.from_digests:
        buildx.start_inspection(ctx.shared, ctx.config.build.builder, env)   # overlaps the imports below

    from pipeline import crashpoint
    from pipeline.access.registries import serve_local
    from pipeline.plan import RELEASE, Runner
    from pipeline.report import release_manifest, text_summary

    serve_local(ctx.config)
    stages = RELEASE if names is None else tuple(s for s in RELEASE if s.name in names)
    results = Runner(ctx, after_stage=crashpoint.from_env(env)).run(stages)
    failed = [r for r in results if r.status == "failed"]
    data = release_manifest(ctx, results)
    _emit(data, args.format, lambda: text_summary(data), out)
    if failed:
        raise _Failed(failed[0].detail, failed[0].exit_code)
    return ctx


def cmd_release(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    _run_stages(args, env, out, None)
    return EXIT_OK


def cmd_build(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """Build, scan and upload the candidate to staging (one platform with --platform); no release registry."""
    from pipeline.build.build import write_digest

    if args.digest_out and not args.platform:
        raise UsageError("pipeline build: --digest-out goes with --platform (one platform per call)")
    ctx = _run_stages(args, env, out, ("tags", "mirror", "build", "scan", "staging"))
    if args.digest_out:
        write_digest(ctx, Path(args.digest_out))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.setup import toolchain

    base = args.download_base or env.get("PIPELINE_DOWNLOAD_BASE") or None
    if base is not None and not base.startswith(("https://", "http://")):
        raise UsageError(f"--download-base: '{base}' is not an http(s) URL (serve the mirror directory over"
                         " HTTP)")
    data, text = toolchain.doctor(install_missing=args.install, current=args.current, tests=args.tests,
                                  download_base=base)
    _emit(data, args.format, lambda: text, out)
    return EXIT_OK


def cmd_registry(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.setup import localregistry

    password = None
    if args.action == "adduser" and args.user:
        password = env.get("PIPELINE_REGISTRY_PASSWORD") or (sys.stdin.readline().rstrip("\n")
                                                             if not sys.stdin.isatty() else "")
    data, text, code = localregistry.command(
        args.action, name=args.name, user=args.user, password=password, port=args.port, bind=args.bind,
        data_dir=Path(args.data_dir) if args.data_dir else None, auth=args.auth, tls=args.tls,
        delete=not args.no_delete, trust=args.trust, certs_d=Path(args.certs_d) if args.certs_d else None,
        proxy=args.proxy, proxy_ttl=args.proxy_ttl, proxy_credentials=_proxy_credentials(args, env),
        proxy_as=args.proxy_as)
    if args.action in ("adduser", "stop"):
        out.write(text + "\n")
    else:
        _emit(data, args.format, lambda: text, out)
    return code


def cmd_mirror(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.access.registries import serve_local
    from pipeline.build import mirror

    ctx = make_context(args, env)
    if not ctx.config.mirror.enabled:
        raise UsageError(f"pipeline mirror: {ctx.config_path}: mirror.enabled is false; set [mirror] enabled = true")
    serve_local(ctx.config)
    try:
        with ctx.registry_access() as access:
            result = mirror.sync(ctx, access, build=False, update=args.update, check=args.check)
    finally:
        ctx.close()
    data = result.to_dict()
    data["mode"] = "check" if args.check else "update" if args.update else "sync"

    def text() -> str:
        lines = []
        if args.check:
            for m in result.moved:
                lines.append(f"{m.reference}: " + (f"moved: locked {m.locked}, upstream now {m.upstream}"
                                                   if m.locked else f"not in {result.lock} (upstream {m.upstream})"))
            lines.append(f"{result.lock}: " + (f"{len(result.moved)} base image(s) out of date (run"
                                              " 'pipeline mirror --update')" if result.moved else "up to date"))
            return "\n".join(lines)
        for b in result.bases:
            how = "copied from the upstream" if b.copied else "in the mirror"
            lines.append(f"{b.reference} @ {b.digest}  {how}  ({b.mirror})")
        for m in result.moved:
            if m.locked:
                lines.append(f"{m.reference}: lock moved from {m.locked} to {m.upstream}")
        lines.append(f"{result.lock}: {'written' if result.lock_written else 'unchanged'}")
        return "\n".join(lines)

    _emit(data, args.format, text, out)
    return EXIT_POLICY if args.check and result.moved else EXIT_OK


def _proxy_credentials(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str] | None:
    """``--proxy-username-env``/``--proxy-password-env``: the upstream's credentials, read from the environment."""
    names = (args.proxy_username_env, args.proxy_password_env)
    if not any(names):
        return None
    if not args.proxy or not all(names):
        raise UsageError("pipeline registry start: --proxy-username-env and --proxy-password-env go together,"
                         " with --proxy")
    for flag, name in zip(("--proxy-username-env", "--proxy-password-env"), names, strict=True):
        if not env.get(name):
            raise UsageError(f"pipeline registry start: {flag} {name}: ${name} is not set or empty")
    return env[names[0]], env[names[1]]


def cmd_rescan(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from datetime import datetime, timezone

    from pipeline.access.registries import Access
    from pipeline.scan import rescan

    path, cfg = _config(args, env)
    if args.emit_cronjob:
        from pipeline.scan import cronjob

        out.write(cronjob.emit(cfg, path, image=args.image, namespace=args.namespace,
                               secret=args.secret or "pipeline-rescan", registries=args.registry, attest=args.attest))
        return EXIT_OK
    for flag, value in (("--image", args.image), ("--namespace", args.namespace), ("--secret", args.secret)):
        if value:
            raise UsageError(f"pipeline rescan: {flag} goes with --emit-cronjob")
    if args.attest:                      # no key, no cosign: said before anything is scanned
        from pipeline.sign import keys
        from pipeline.tools import cosign

        keys.key_ref(cfg.sign)
        cosign.installed_major()
    with Access(cfg, env) as access:
        result = rescan.rescan(cfg, env, access, only=args.registry, dist=Path(cfg.report.dir),
                               now=datetime.now(timezone.utc), attest=args.attest)
    _emit(result.to_dict(), args.format, lambda: rescan.text(result), out)
    if result.exit_code == 1:
        raise _Failed(result.failure_message(), EXIT_POLICY)
    if result.exit_code == 3:
        raise _Failed("rescan incomplete: " + (result.db_error or "; ".join(
            [f"{k}: {v}" for k, v in result.unreadable.items()]
            + [f"not attested: {a['ref']}: {a['error']}" for a in result.attested if a["action"] == "failed"])),
            EXIT_INFRA)
    return EXIT_OK


def cmd_vex(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from datetime import datetime, timezone

    from pipeline.scan.command import vex_export

    cfg_path, cfg = _config(args, env)
    document, warnings = vex_export(cfg, Path(cfg.report.dir), datetime.now(timezone.utc))
    for w in warnings:
        log.get().warning("vex.incomplete", note=w)
    text = json.dumps(document, indent=2) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--output {args.output}: cannot write: {exc.strerror}") from None
        log.get().info("vex.written", path=args.output, statements=len(document["statements"]))
    else:
        out.write(text)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.sign import verification

    _, cfg = _config(args, env)
    report = verification.verify_ref(cfg, env, args.ref, args.digest)
    _emit({"ref": args.ref, **report.to_dict()}, args.format, report.text, out)
    if not report.ok:
        raise _Failed(report.failure_message(), EXIT_POLICY)
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.sign import keys

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.password_env in env:
        password = env[args.password_env]
    else:
        raise UsageError(f"pipeline keygen: set ${args.password_env} or pass --password-stdin (the password never"
                         " goes on the command line)")
    key, pub = keys.keygen(Path(args.output), password, force=args.force, env=keys.passthrough_env(env))
    source = "stdin" if args.password_stdin else f"${args.password_env}"
    data = {"private_key": str(key), "public_key": str(pub), "password_source": source}
    _emit(data, args.format, lambda: (f"wrote {key} (private, 0600) and {pub} (public)\n"
                                      f"next: [sign] key = \"{key}\" in the config; give the password to releases"
                                      f" in ${args.password_env}; publish {pub} for verifiers"), out)
    return EXIT_OK


def cmd_scan(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.access.registries import serve_local
    from pipeline.plan import RELEASE, Runner
    from pipeline.scan import command as scancommand

    if sum(bool(x) for x in (args.report, args.download_db, args.mirror_db)) > 1:
        raise UsageError("pipeline scan: --report, --download-db and --mirror-db are separate actions; give one")
    if args.report:
        data, text = scancommand.judge_report(args.report, scancommand.load_for_report(args.config, env))
        _emit(data, args.format, lambda: text, out)
        return EXIT_OK if data["verdict"] == "pass" else EXIT_POLICY
    if args.download_db or args.mirror_db:
        cfg = config.load(Path(args.config or env.get("PIPELINE_CONFIG") or config.DEFAULT_PATH), env)
        serve_local(cfg)
        data, text = (scancommand.download_db(cfg, env) if args.download_db
                      else scancommand.mirror_db(cfg, env, args.mirror_db))
        _emit(data, args.format, lambda: text, out)
        return EXIT_OK
    ctx = make_context(args, env)
    serve_local(ctx.config)
    results = Runner(ctx).run(tuple(s for s in RELEASE if s.name in ("tags", "build", "scan")))
    data, text = scancommand.stage_summary(ctx.outputs)
    _emit(data, args.format, lambda: text, out)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise _Failed(failed[0].detail, failed[0].exit_code)
    return EXIT_OK


def cmd_prune(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from datetime import datetime, timezone

    from pipeline.access.registries import serve_local
    from pipeline.hygiene import prune

    cfg_path, cfg = _config(args, env)
    if args.emit_ecr_policy:
        if args.apply:
            raise UsageError("pipeline prune: --emit-ecr-policy writes the policy and stops; drop --apply")
        document, rules = prune.ecr_policy(cfg, str(cfg_path))
        if args.emit_ecr_policy == "-":
            out.write(document)
        else:
            Path(args.emit_ecr_policy).write_text(document, encoding="utf-8")
            _emit({"written": args.emit_ecr_policy, "rules": rules}, args.format,
                  lambda: f"wrote {args.emit_ecr_policy}: an ECR lifecycle policy with {rules} rule(s)"
                          f" (aws ecr put-lifecycle-policy --lifecycle-policy-text file://{args.emit_ecr_policy})", out)
        return EXIT_OK
    serve_local(cfg)
    report = prune.run(cfg, env, now=datetime.now(timezone.utc), apply=args.apply, only=args.registry,
                       source=str(cfg_path))
    _emit(report.to_dict(), args.format, report.text, out)
    if report.failed or report.leftovers:
        raise _Failed(f"prune --apply: {len(report.failed)} delete(s) failed or skipped,"
                      f" {len(report.leftovers)} tag(s) still listed", EXIT_INFRA)
    return EXIT_OK


def cmd_inventory(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from datetime import datetime, timezone

    from pipeline.access.registries import serve_local
    from pipeline.hygiene import inventory

    cfg_path = Path(args.config or env.get("PIPELINE_CONFIG") or config.DEFAULT_PATH)
    cfg = config.load(cfg_path, env)
    serve_local(cfg)
    if args.serve:
        return _serve_inventory(args, cfg, cfg_path, env, out)
    inv = inventory.collect(cfg, env, now=datetime.now(timezone.utc), only=args.registry, source=str(cfg_path))
    page = inventory.write_html(inv, Path(args.html) if args.html else Path(cfg.report.dir) / "inventory.html")
    data = {"html": str(page), **inv.to_dict()}
    _emit(data, args.format, lambda: inv.text() + f"\npage: {page}", out)
    broken = [s for s in inv.registries if s.error]
    if broken:
        raise _Failed(f"inventory: {len(broken)} registr{'y' if len(broken) == 1 else 'ies'} could not be read"
                      f" ({broken[0].name}: {broken[0].error})", EXIT_INFRA)
    return EXIT_OK


def _serve_inventory(args: argparse.Namespace, cfg: config.Config, cfg_path: Path, env: Mapping[str, str],
                     out: TextIO) -> int:
    import signal
    import threading

    from pipeline.hygiene import ui
    from pipeline.tools.webserver import Server

    token = env.get(args.token_env) or None
    ui.check_bind(args.bind, token, args.token_env)
    if token:
        log.register_secret(token)
    app = ui.App(cfg, env, source=str(cfg_path), only=args.registry, bind=args.bind,
                 token=token if not ui.is_loopback(args.bind) else None)
    try:
        server = Server(app, args.bind, args.port)
    except OSError as exc:
        raise UsageError(f"pipeline inventory --serve: cannot listen on {args.bind}:{args.port} ({exc.strerror})")
    host, port = server.address
    shown = f"[{host}]" if ":" in host else host
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    log.get("inventory").info("inventory.serving", url=f"http://{shown}:{port}/", token_needed=bool(app.token))
    out.write(f"serving the inventory on http://{shown}:{port}/" + (" (token needed)" if app.token else "") + "\n")
    out.flush()
    try:
        stop.wait()
    finally:
        server.close()
    return EXIT_OK


def _config(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Path, config.Config]:
    path = Path(args.config or env.get("PIPELINE_CONFIG") or config.DEFAULT_PATH)
    return path, config.load(path, env)


def cmd_login(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.access.registries import login
    from pipeline.tools.registry import Credentials

    manual = None
    if args.username or args.password_stdin:
        if not (args.username and args.password_stdin):
            raise UsageError("pipeline login: --username and --password-stdin go together (the password never goes"
                             " on the command line)")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("pipeline login --password-stdin: stdin held no password")
        log.register_secret(password)
        manual = Credentials(args.username, password)
    _, cfg = _config(args, env)
    results = login(cfg, env, args.registry or None, manual)

    def text() -> str:
        width = max((len(r["registry"]) for r in results), default=0)
        lines = []
        for r in results:
            expiry = f" (token expires {r['expires_at']})" if r.get("expires_at") else ""
            lines.append(f"{r['registry']:<{width}}  {r['host']}: {r['action']}{expiry}  [{r['source']}]")
        return "\n".join(lines) or "no registries in the config"

    _emit({"registries": results}, args.format, text, out)
    return EXIT_OK


def cmd_pull_secret(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.access import pullsecret
    from pipeline.tools import proc

    _, cfg = _config(args, env)
    made = pullsecret.make(cfg, env, registry=args.registry, name=args.name, namespace=args.namespace,
                           service_account_name=args.service_account, no_refresh=args.no_refresh,
                           role_arn=args.aws_role_arn, schedule=args.refresh_schedule)
    logger = log.get()
    if args.output:
        proc.write_private(Path(args.output), made.text)
        logger.info("pull_secret.written", registry=made.registry, namespace=args.namespace, name=args.name,
                    path=args.output, documents=made.documents)
    elif not args.apply:
        out.write(made.text)
    if args.apply:
        pullsecret.apply(made.text, name=args.name, namespace=args.namespace,
                         service_account_name=args.service_account)
        logger.info("pull_secret.applied", registry=made.registry, namespace=args.namespace, name=args.name,
                    service_account=args.service_account)
    if args.output or args.apply:
        where = [f"wrote {args.output} (0600)"] if args.output else []
        where += [f"applied to namespace {args.namespace}"] if args.apply else []
        out.write(f"pull secret {args.namespace}/{args.name} for {made.host}: {', '.join(where)}\n")
    if made.refresh:
        logger.info("pull_secret.expires", registry=made.registry, hours=12,
                    note="ECR tokens expire after 12 hours; apply the CronJob in the output to refresh the secret")
    return EXIT_OK


def cmd_ci_init(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.ci_files import templates

    path, cfg = _config(args, env)
    if args.output == "-":
        out.write(templates.render(args.ci, cfg, path))
        return EXIT_OK
    _, sentence = templates.write(args.ci, cfg, path, args.output, force=args.force)
    out.write(sentence + "\n")
    return EXIT_OK


def cmd_ecr(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.access import ecr

    path, cfg = _config(args, env)
    if args.action == "policy":
        document, applied = ecr.policy(cfg, env, registries=args.registry or None, apply=args.apply)
        if args.format == "json":
            _emit({"policy": document, "applied": applied}, "json", str, out)
        else:
            out.write(ecr.policy_json(document))
        return EXIT_OK
    results = ecr.ensure(cfg, env, registries=args.registry or None, source=str(path))
    data = {"repositories": [r.to_dict() for r in results]}

    def text() -> str:
        lines = []
        for r in results:
            lines.append(r.sentence())
            lines += [f"  warning: {w}" for w in r.warnings]
        return "\n".join(lines)

    _emit(data, args.format, text, out)
    return EXIT_OK


class _Failed(PipelineError):
    """A command that already printed its result and now only needs its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str], TextIO], int]] = {
    "tags": cmd_tags,
    "plan": cmd_plan,
    "release": cmd_release,
    "build": cmd_build,
    "scan": cmd_scan,
    "registry": cmd_registry,
    "mirror": cmd_mirror,
    "vex": cmd_vex,
    "rescan": cmd_rescan,
    "login": cmd_login,
    "pull-secret": cmd_pull_secret,
    "ci-init": cmd_ci_init,
    "ecr": cmd_ecr,
    "verify": cmd_verify,
    "keygen": cmd_keygen,
    "prune": cmd_prune,
    "inventory": cmd_inventory,
    "doctor": cmd_doctor,
}


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    env = dict(os.environ if env is None else env)
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        log.configure(args.log_format or env.get("PIPELINE_LOG_FORMAT") or "text", stream=err)
        if not args.command:
            raise UsageError("pipeline: a command is needed (see 'pipeline --help')")
        return COMMANDS[args.command](args, env, out)
    except PipelineError as exc:
        err.write(f"pipeline: error: {log.scrub(str(exc))}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        err.write("pipeline: interrupted\n")
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_OK
    except Exception as exc:  # a bug: one line, details only on request
        err.write(f"pipeline: internal error: {type(exc).__name__}: {log.scrub(str(exc)).splitlines()[0] if str(exc) else ''}"
                  " (set PIPELINE_DEBUG=1 for the traceback, and please report it)\n")
        if env.get("PIPELINE_DEBUG"):
            err.write(log.scrub(traceback.format_exc()))
        return EXIT_INFRA
