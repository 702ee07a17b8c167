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

from pipeline import __version__, ci, config, log
from pipeline.context import Context, Options, source_date
from pipeline.errors import EXIT_INFRA, EXIT_INTERRUPTED, EXIT_OK, PipelineError, UsageError


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
    p = sub.add_parser("release", help="run the release: tags, build, scan, copy, sign, tag, verify, report")
    _common(p)
    p.add_argument("--skip", action="append", default=[], metavar="STAGE", help="skip a stage (repeatable)")
    p.add_argument("--from-digests", metavar="DIR", help="merge per-platform digests written by split builds")
    p = sub.add_parser("build", help="build and push the candidate to staging (one platform with --platform)")
    _common(p)
    p.add_argument("--platform", metavar="OS/ARCH", help="build only this platform (split mode, one CI runner each)")
    p.add_argument("--digest-out", metavar="DIR", help="write the platform's digest file here (for release --from-digests)")
    p = sub.add_parser("registry", help="run a self-hosted distribution registry: start | stop | status | adduser")
    p.add_argument("action", choices=("start", "stop", "status", "adduser"))
    p.add_argument("user", nargs="?", help="adduser: the user name (password from stdin or $PIPELINE_REGISTRY_PASSWORD)")
    p.add_argument("--name", default="local", help="instance name (default: local)")
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default: 5000)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--data-dir", metavar="DIR", help="where images are kept (default: .pipeline/registry/NAME/data)")
    p.add_argument("--auth", action="store_true", help="require htpasswd (bcrypt) authentication")
    p.add_argument("--tls", action="store_true", help="serve HTTPS with a generated self-signed certificate")
    p.add_argument("--no-delete", action="store_true", help="refuse deletes (default: deletes enabled)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p = sub.add_parser("doctor", help="check (and with --install, install) the external tools")
    _common(p)
    p.add_argument("--install", action="store_true",
                   help="install what is missing (root on Debian/Ubuntu) and start dockerd")
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
    from pipeline.plan import RELEASE

    names = [s.name for s in RELEASE]
    unknown = sorted(skip - set(names))
    if unknown:
        raise UsageError(f"--skip {unknown[0]}: no such stage (stages: {', '.join(names)})")


# --------------------------------------------------------------------------- commands


def cmd_tags(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.stages.tags import compute_tags

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
        marks = {"run": "run ", "skip": "skip", "pending": "todo"}
        return "\n".join(f"{i + 1:>2}. {ln.stage:<{width}}  {marks[ln.action]}  {ln.detail}"
                         for i, ln in enumerate(lines))

    _emit(data, args.format, text, out)
    return EXIT_OK


def _run_stages(args: argparse.Namespace, env: Mapping[str, str], out: TextIO, names: tuple[str, ...] | None) -> int:
    from pipeline.plan import RELEASE, Runner
    from pipeline.registries import serve_local
    from pipeline.report import release_manifest, text_summary

    ctx = make_context(args, env)
    serve_local(ctx.config)
    stages = RELEASE if names is None else tuple(s for s in RELEASE if s.name in names)
    results = Runner(ctx, crash_after=env.get("PIPELINE_CRASH_AFTER") or None).run(stages)
    failed = [r for r in results if r.status == "failed"]
    data = release_manifest(ctx, results)
    _emit(data, args.format, lambda: text_summary(data), out)
    if failed:
        raise _Failed(failed[0].detail, failed[0].exit_code)
    return EXIT_OK


def cmd_release(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    return _run_stages(args, env, out, None)


def cmd_build(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    if args.digest_out and not args.platform:
        raise UsageError("pipeline build: --digest-out goes with --platform (one platform per call)")
    return _run_stages(args, env, out, ("tags", "build"))


def cmd_doctor(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.tools import toolchain

    actions: list[str] = []
    if args.install:
        actions = list(toolchain.install())
        actions.append(f"dockerd: {toolchain.ensure_dockerd()}")
    statuses = toolchain.probe()
    data = {"actions": actions, "tools": [
        {"name": s.name, "found": s.found, "version": s.version, "detail": s.detail, "needed_by": list(s.needed_by)}
        for s in statuses]}

    def text() -> str:
        lines = [f"did: {a}" for a in actions]
        width = max(len(s.name) for s in statuses)
        for s in statuses:
            mark = "ok  " if s.found else "MISS"
            needed = f"  (needed by: {', '.join(s.needed_by)})" if s.needed_by else ""
            lines.append(f"{mark} {s.name:<{width}}  {s.version or '-':<12} {s.detail}{needed}")
        return "\n".join(lines)

    _emit(data, args.format, text, out)
    return EXIT_OK


def cmd_registry(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    from pipeline.tools import localregistry

    state_root = localregistry.DEFAULT_STATE_ROOT
    htpasswd = state_root / args.name / "htpasswd"
    if args.action == "adduser":
        if not args.user:
            raise UsageError("pipeline registry adduser: the user name is needed (pipeline registry adduser NAME)")
        password = env.get("PIPELINE_REGISTRY_PASSWORD") or (sys.stdin.readline().rstrip("\n")
                                                             if not sys.stdin.isatty() else "")
        if not password:
            raise UsageError("pipeline registry adduser: give the password on stdin or in"
                             " PIPELINE_REGISTRY_PASSWORD (never on the command line)")
        log.register_secret(password)
        localregistry.add_user(htpasswd, args.user, password)
        out.write(f"user {args.user} added to {htpasswd} (restart the registry with --auth to require it)\n")
        return EXIT_OK
    if args.action == "stop":
        stopped = localregistry.stop(args.name, state_root=state_root)
        out.write(f"registry {args.name}: {'stopped' if stopped else 'was not running'}\n")
        return EXIT_OK
    if args.action == "start":
        if args.auth and not htpasswd.exists():
            raise UsageError(f"pipeline registry start --auth: no users yet; run 'pipeline registry adduser NAME'"
                             f" first ({htpasswd})")
        inst = localregistry.start(args.name, port=args.port, state_root=state_root, bind=args.bind,
                                   data_dir=Path(args.data_dir) if args.data_dir else None,
                                   htpasswd=htpasswd if args.auth else None, delete=not args.no_delete,
                                   tls=args.tls)
    else:
        inst = localregistry.status(args.name, state_root=state_root)
    data = ({"name": args.name, "running": False} if inst is None else
            {"name": inst.name, "running": True, "address": inst.host, "pid": inst.pid, "data_dir": str(inst.data_dir),
             "auth": inst.auth, "delete": inst.delete, "tls": inst.tls, "backend": inst.backend})

    def text() -> str:
        if inst is None:
            return f"registry {args.name}: not running"
        return (f"registry {inst.name}: running at {inst.host} (pid {inst.pid}, {inst.backend}); data in {inst.data_dir};"
                f" auth {'on' if inst.auth else 'off'}, deletes {'on' if inst.delete else 'off'}, "
                f"tls {'on' if inst.tls else 'off'}")

    _emit(data, args.format, text, out)
    return EXIT_OK if inst is not None or args.action != "status" else 3


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
    "registry": cmd_registry,
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
