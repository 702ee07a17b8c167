"""The one subprocess chokepoint: least-privilege environments, timeouts, redaction, ToolError; and the
daemons the tool starts.

A child gets a minimal environment built here (:func:`child_env`): the path, home, locale, temp dir,
proxies, CA bundle and the docker client's own variables, plus what the caller hands over by name in
``env`` (cosign: its key password; Trivy: its neutral settings; buildx: the private docker config).
Nothing else of this process's environment reaches it: no registry password or token, no cosign
password, no cloud credential, unless that tool is the one that needs it. The tools that authenticate
with the user's own set-up (docker credential helpers, ``docker login``, kubectl with its kubeconfig
plugins) say so with ``inherit_all``. Secrets are passed through ``env`` or ``input`` (stdin), never
argv. Output and error text are scrubbed of registered secrets before they reach a log line or an
exception. Long-running daemons (the registry, dockerd) start with :func:`spawn_daemon`
in their own session and are watched and stopped by pid (:func:`pid_alive`, :func:`terminate`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import log
from pipeline.errors import ToolError


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


#: What every child gets from this process's environment, by name (and ``LC_*``).
INHERITED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "NO_COLOR",
    "XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "CI", "SOURCE_DATE_EPOCH",
})
INHERITED_PREFIXES = ("LC_",)
#: the docker client's own variables (the engine, the context, its config dir, buildx's builder), for the
#: docker CLI and its plugins only: DOCKER_CONFIG names a file with registry credentials
DOCKER_CLIENT_PREFIXES = ("DOCKER_", "BUILDX_", "BUILDKIT_")


def child_env(env: Mapping[str, str] | None = None, *, inherit: Sequence[str] = (),
              inherit_all: bool = False, program: str = "") -> dict[str, str]:
    """The environment of a child: :data:`INHERITED` from ours (every variable with ``inherit_all``, and
    those starting with an ``inherit`` prefix; the docker client's for ``docker`` and ``docker-*``), then
    ``env``."""
    name = os.path.basename(program)
    docker = DOCKER_CLIENT_PREFIXES if name == "docker" or name.startswith("docker-") else ()
    prefixes = (*INHERITED_PREFIXES, *docker, *inherit)
    out = dict(os.environ) if inherit_all else {k: v for k, v in os.environ.items()
                                                 if k in INHERITED or k.startswith(prefixes)}
    out["PATH"] = search_path()
    out.update(env or {})
    return out


def user_bin() -> Path:
    """Where ``pipeline doctor --install`` puts tools when it is not root (``~/.local/bin``)."""
    return Path(os.environ.get("HOME") or Path.home()) / ".local" / "bin"


def search_path() -> str:
    """PATH, with :func:`user_bin` first when it exists and PATH lacks it (a runner's login shell often
    does): the tools ``doctor --install`` put there without root are found, by us and by every child, and
    win over an older one of the system's (the reason they were installed)."""
    path = os.environ.get("PATH") or os.defpath
    user = str(user_bin())
    if user not in path.split(os.pathsep) and os.path.isdir(user):
        path = f"{user}{os.pathsep}{path}"
    return path


def which(tool: str) -> str | None:
    return shutil.which(tool, path=search_path())


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
    inherit: Sequence[str] = (),
    inherit_all: bool = False,
) -> Completed:
    """Run ``argv``; raise :class:`ToolError` with a one-line message on failure.

    ``env`` entries are added to the child's minimal environment (:func:`child_env`, with ``inherit``
    and ``inherit_all``; values registered as secrets when their names look secret). ``what`` names
    the action in errors.
    ``secret_output=True`` is for tools whose stdout *is* a secret (credential
    helpers, token commands): stdout is returned unscrubbed, so the caller gets
    the real value, and it is never put into an error message.
    """
    argv = [str(a) for a in argv]
    tool = os.path.basename(argv[0])
    what = what or tool
    full_env = _full_env(env, inherit, inherit_all, argv[0])
    if which(argv[0]) is None:
        raise ToolError(f"{what}: '{argv[0]}' is not installed; run 'pipeline doctor' to see how to install it",
                        tool=tool)
    try:
        cp = subprocess.run(argv, input=input, capture_output=True, text=True, env=full_env,
                            timeout=timeout, cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
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


def _full_env(env: Mapping[str, str] | None, inherit: Sequence[str], inherit_all: bool,
              program: str) -> dict[str, str]:
    for key, value in (env or {}).items():
        if any(s in key.upper() for s in ("PASSWORD", "TOKEN", "SECRET")):
            log.register_secret(value)
    return child_env(env, inherit=inherit, inherit_all=inherit_all, program=program)


def stream(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 3600,
    cwd: str | os.PathLike[str] | None = None,
    what: str | None = None,
    keep: int = 200,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> Completed:
    """Run ``argv`` with stdout+stderr merged and forwarded line by line (live progress).

    The last ``keep`` lines are kept (scrubbed) for the error message and the
    result. Raises :class:`ToolError` on a non-zero exit or timeout. ``on_start`` gets the
    process once it runs (so that another thread can stop it).
    """
    import collections
    import threading

    argv = [str(a) for a in argv]
    tool = os.path.basename(argv[0])
    what = what or tool
    full_env = _full_env(env, (), False, argv[0])
    if which(argv[0]) is None:
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
    if on_start:
        on_start(p)
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


# --------------------------------------------------------------------------- daemons

#: Popen objects of daemons this process started (kept so they can be reaped, and so that
#: garbage collection does not warn about a child that is still running).
_children: dict[int, subprocess.Popen] = {}


def spawn_daemon(argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start a long-running daemon in its own session (it outlives this process), output appended
    to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = _full_env(env, (), False, str(argv[0]))
    with open(log_path, "ab") as logf:
        try:
            child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=full_env, close_fds=True)
        except OSError as exc:
            raise ToolError(f"{os.path.basename(argv[0])}: cannot start: {exc.strerror}",
                            tool=os.path.basename(argv[0])) from None
    _children[child.pid] = child
    return child


def pid_alive(pid: int | None) -> bool:
    """Is process ``pid`` running (not exited, not a zombie)?"""
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    return True


def cmdline(pid: int) -> list[str] | None:
    """The argv of process ``pid`` (None where /proc cannot tell)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")]


def terminate(pid: int, *, deadline_s: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after ``deadline_s``; whether there was a process to stop."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _children.pop(pid, None)
        return False
    deadline = time.monotonic() + deadline_s
    delay = 0.02
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child = _children.get(pid)
        if child is not None:
            child.wait(timeout=5)
    _children.pop(pid, None)
    return True


def forget(pid: int | None) -> None:
    _children.pop(pid or 0, None)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600 from the first byte): the files secrets
    reach a tool in (a registry config with credentials, a pull secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
