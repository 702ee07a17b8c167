"""The one subprocess chokepoint: timeouts, redaction, ToolError.

Secrets are passed through ``env`` or ``input`` (stdin), never argv. Output and
error text are scrubbed of registered secrets before they reach a log line or
an exception.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence

from pipeline import log
from pipeline.errors import ToolError


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def which(tool: str) -> str | None:
    return shutil.which(tool)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = 600,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    what: str | None = None,
    secret_output: bool = False,
) -> Completed:
    """Run ``argv``; raise :class:`ToolError` with a one-line message on failure.

    ``env`` entries are added to the current environment (values registered as
    secrets when their names look secret). ``what`` names the action in errors.
    ``secret_output=True`` is for tools whose stdout *is* a secret (credential
    helpers, token commands): stdout is returned unscrubbed, so the caller gets
    the real value, and it is never put into an error message.
    """
    argv = [str(a) for a in argv]
    tool = os.path.basename(argv[0])
    what = what or tool
    full_env = dict(os.environ)
    if env:
        for key, value in env.items():
            if any(s in key.upper() for s in ("PASSWORD", "TOKEN", "SECRET")):
                log.register_secret(value)
        full_env.update(env)
    if shutil.which(argv[0]) is None:
        raise ToolError(f"{what}: '{argv[0]}' is not installed; run 'pipeline doctor' to see how to install it",
                        tool=tool)
    try:
        cp = subprocess.run(argv, input=input, capture_output=True, text=True, env=full_env,
                            timeout=timeout, cwd=cwd, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{what}: '{tool}' did not finish within {timeout:.0f}s", tool=tool) from None
    except OSError as exc:
        raise ToolError(f"{what}: cannot start '{tool}': {exc.strerror}", tool=tool) from None
    out = (cp.stdout or "") if secret_output else log.scrub(cp.stdout or "")
    err = log.scrub(cp.stderr or "")
    result = Completed(tuple(log.scrub(a) for a in argv), cp.returncode, out, err)
    if check and cp.returncode != 0:
        detail = _last_line(err) or ("" if secret_output else _last_line(out)) or f"exit status {cp.returncode}"
        raise ToolError(f"{what}: {tool} failed: {detail}", tool=tool, returncode=cp.returncode, stderr=err)
    return result


def stream(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 3600,
    cwd: str | os.PathLike[str] | None = None,
    what: str | None = None,
    keep: int = 200,
) -> Completed:
    """Run ``argv`` with stdout+stderr merged and forwarded line by line (live progress).

    The last ``keep`` lines are kept (scrubbed) for the error message and the
    result. Raises :class:`ToolError` on a non-zero exit or timeout.
    """
    import collections
    import threading

    argv = [str(a) for a in argv]
    tool = os.path.basename(argv[0])
    what = what or tool
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    if shutil.which(argv[0]) is None:
        raise ToolError(f"{what}: '{argv[0]}' is not installed; run 'pipeline doctor' to see how to install it",
                        tool=tool)
    tail: collections.deque[str] = collections.deque(maxlen=keep)
    try:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             text=True, env=full_env, cwd=cwd, bufsize=1, errors="replace")
    except OSError as exc:
        raise ToolError(f"{what}: cannot start '{tool}': {exc.strerror}", tool=tool) from None
    timer = threading.Timer(timeout, p.kill) if timeout else None
    if timer:
        timer.start()
    try:
        assert p.stdout is not None
        for raw in p.stdout:
            line = log.scrub(raw.rstrip("\n"))
            tail.append(line)
            if on_line:
                on_line(line)
        code = p.wait()
    finally:
        if timer:
            timer.cancel()
    text = "\n".join(tail)
    if code != 0:
        if code < 0 and timer is not None and not timer.is_alive() and timeout:
            raise ToolError(f"{what}: '{tool}' did not finish within {timeout:.0f}s", tool=tool)
        raise ToolError(f"{what}: {tool} failed: {_last_line(text) or f'exit status {code}'}", tool=tool,
                        returncode=code, stderr=text)
    return Completed(tuple(log.scrub(a) for a in argv), code, text, "")
