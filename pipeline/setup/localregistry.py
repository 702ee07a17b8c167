"""A self-hosted CNCF distribution registry ("registry:2"): start, stop, status, users.

Used by ``pipeline registry start|stop|status|adduser`` and by the integration tests,
where several instances on different ports stand in for GHCR, ECR and Docker Hub.

Each instance lives in ``state_root/<name>/``::

    config.yml      the registry's configuration (written on every start)
    state.json      pid, port, flags (see :class:`RegistryInstance`)
    registry.log    the registry's output: app log lines and one access-log line per request
    data/           blobs and manifests (unless ``data_dir`` is given); survives ``stop``
    tls/            self-signed ``cert.pem``/``key.pem`` when started with ``tls=True``

The ``docker-registry`` binary (Debian's ``docker-registry`` package) runs as a daemon
in its own session, so a registry started by the CLI outlives the CLI. Without the
binary, the ``registry:2`` image runs as a container through the docker SDK.

The pure parts (:func:`config_yaml`, :func:`htpasswd_argv`, the state file,
:func:`parse_access_line`) are separate from the functions that touch the machine.
Passwords go to ``htpasswd`` on stdin, never on argv.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import log
from pipeline.errors import ToolError
from pipeline.tools import docker, net, proc
from pipeline.tools.net import listening

if TYPE_CHECKING:
    import subprocess

BINARY = "docker-registry"
IMAGE = "registry:2"
REALM = "pipeline-registry"
CONTAINER_PREFIX = "pipeline-registry-"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yml"
LOG_FILE = "registry.log"
DEFAULT_STATE_ROOT = Path(".pipeline/registry")
STOP_DEADLINE_S = 10.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")



@dataclass(frozen=True)
class RegistryInstance:
    name: str
    host: str              # "127.0.0.1:5000": the address clients use
    port: int
    data_dir: Path
    state_dir: Path
    pid: int | None
    auth: bool
    delete: bool
    tls: bool
    backend: str           # "binary" | "container"
    bind: str = "127.0.0.1"
    htpasswd: Path | None = None
    ca_cert: Path | None = None      # the self-signed certificate (tls only)
    container_id: str | None = None  # backend "container" only
    proxy: str | None = None         # a pull-through cache of this upstream (read-only)
    proxy_ttl: str | None = None
    proxy_as: str | None = None      # the registry name clients know the upstream by (docker.io for Hub)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE

    @property
    def certs_d_hint(self) -> str | None:
        """How to make docker trust the self-signed certificate (``None`` without TLS)."""
        if not self.tls or self.ca_cert is None:
            return None
        return certs_d_hint(self.host, self.ca_cert)


# --------------------------------------------------------------------------- pure parts


DOCKER_CERTS_D = Path("/etc/docker/certs.d")


def certs_d_hint(host: str, ca_cert: Path) -> str:
    return (f"docker trusts this registry after: mkdir -p /etc/docker/certs.d/{host} && "
            f"cp {ca_cert} /etc/docker/certs.d/{host}/ca.crt")


def certs_d_hosts(inst: RegistryInstance) -> list[str]:
    """The ``host:port`` names clients may use for ``inst`` (one certs.d directory each)."""
    hosts = [inst.host]
    if inst.host.startswith(("127.0.0.1:", "[::1]:")) or inst.bind in ("", "0.0.0.0", "::", "[::]"):
        hosts.append(f"localhost:{inst.port}")
    return list(dict.fromkeys(hosts))


def trust_certificate(inst: RegistryInstance, certs_d: Path = DOCKER_CERTS_D) -> list[Path]:
    """The docker ``certs.d`` set-up: ``<certs_d>/<host:port>/ca.crt`` for every name of ``inst``.

    docker (and buildx with the docker driver) reads these on each connection; no restart.
    """
    if not inst.tls or inst.ca_cert is None:
        raise ToolError(f"registry '{inst.name}' does not serve TLS; nothing to trust", tool=BINARY)
    written: list[Path] = []
    try:
        for host in certs_d_hosts(inst):
            target = Path(certs_d) / host / "ca.crt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(inst.ca_cert.read_bytes())
            target.chmod(0o644)
            written.append(target)
    except OSError as exc:
        raise ToolError(f"registry '{inst.name}': cannot write {exc.filename} ({exc.strerror}); run as root, or "
                        f"{certs_d_hint(inst.host, inst.ca_cert)}", tool=BINARY) from None
    return written


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(str(value))


def config_yaml(*, addr: str, root_dir: str, secret: str, delete: bool, htpasswd: str | None = None,
                tls_cert: str | None = None, tls_key: str | None = None, name: str = "local",
                proxy: str | None = None, proxy_ttl: str | None = None,
                proxy_credentials: tuple[str, str] | None = None) -> str:
    """The registry's ``config.yml``: filesystem storage, access log on, optional htpasswd and TLS.

    With ``proxy`` it is a pull-through cache of that one upstream (distribution's ``proxy:`` mode:
    read-only, pushes refused). ``ttl`` (how long cached content is kept) is honoured by distribution 3;
    2.8 keeps it for 7 days whatever it says. The upstream's credentials go into the file only when
    given here (the container backend: a container's environment is part of its configuration, which
    ``docker inspect`` shows to every user of the engine); a registry process of ours reads them from
    ``REGISTRY_PROXY_USERNAME``/``REGISTRY_PROXY_PASSWORD`` in its environment instead. The file is
    written 0600 either way (it holds the HTTP secret).

    Paths are as the registry process sees them (container paths for the container backend).
    """
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  formatter: text",
        "  accesslog:",
        "    disabled: false",
        "  fields:",
        f"    registry: {_q(name)}",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {_q(root_dir)}",
        "  delete:",
        f"    enabled: {'true' if delete else 'false'}",
        "  cache:",
        "    blobdescriptor: inmemory",
        "http:",
        f"  addr: {_q(addr)}",
        f"  secret: {_q(secret)}",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if tls_cert and tls_key:
        lines += ["  tls:", f"    certificate: {_q(tls_cert)}", f"    key: {_q(tls_key)}"]
    if htpasswd:
        lines += ["auth:", "  htpasswd:", f"    realm: {_q(REALM)}", f"    path: {_q(htpasswd)}"]
    if proxy:
        lines += ["proxy:", f"  remoteurl: {_q(proxy)}"] + ([f"  ttl: {_q(proxy_ttl)}"] if proxy_ttl else [])
        if proxy_credentials is not None:
            lines += [f"  username: {_q(proxy_credentials[0])}", f"  password: {_q(proxy_credentials[1])}"]
    return "\n".join(lines) + "\n"


def check_proxy_url(url: str) -> str:
    """The ``--proxy`` upstream: an http(s) URL of a registry's root (Docker Hub: registry-1.docker.io)."""
    from pipeline.errors import UsageError

    m = re.match(r"^(https?)://([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(:\d{1,5})?/?$", url.strip())
    if not m:
        raise UsageError(f"--proxy {url}: give the upstream registry's URL, e.g. https://registry-1.docker.io")
    host = m.group(2).lower()
    if host in ("docker.io", "index.docker.io"):
        return f"{m.group(1)}://registry-1.docker.io"
    return f"{m.group(1)}://{host}{m.group(3) or ''}"


def upstream_name(proxy_url: str) -> str:
    """The registry name clients use for the upstream (``docker.io`` for Docker Hub)."""
    host = proxy_url.split("://", 1)[1].rstrip("/")
    return "docker.io" if host in ("registry-1.docker.io", "index.docker.io", "docker.io") else host


def client_config(cache_url: str, proxy_url: str, upstream: str | None = None) -> dict[str, str]:
    """What clients need to pull ``proxy_url``'s images through the cache at ``cache_url`` (pure):
    dockerd's daemon.json (Docker Hub only: dockerd mirrors nothing else), BuildKit's buildkitd.toml (its
    docker-container builders ignore dockerd's mirrors), containerd's hosts.toml. ``upstream``: the
    registry name clients know the upstream by (default from the URL; ``docker.io`` for a company mirror
    of Docker Hub)."""
    upstream = upstream or upstream_name(proxy_url)
    scheme, cache_host = cache_url.split("://", 1)
    cache_host = cache_host.rstrip("/")
    loopback = cache_host.split(":")[0] in ("127.0.0.1", "localhost")
    out: dict[str, str] = {}
    if upstream == "docker.io":
        daemon: dict[str, Any] = {"registry-mirrors": [cache_url.rstrip("/")]}
        if scheme == "http" and not loopback:
            daemon["insecure-registries"] = [cache_host]
        out["daemon.json"] = json.dumps(daemon, indent=2) + "\n"
    else:
        out["daemon.json"] = (f"# dockerd mirrors only Docker Hub: pull {upstream} images as"
                              f" {cache_host}/<repository> instead\n")
    lines = []
    if loopback:
        lines += ["# a docker-container builder runs in its own network namespace: 127.0.0.1 there is the builder",
                  "# itself. Create it with --driver-opt network=host, or start the cache with --bind 0.0.0.0",
                  "# and write this machine's address here."]
    lines += [f"[registry.{_q(upstream)}]", f"  mirrors = [{_q(cache_host)}]"]
    if scheme == "http":
        lines += ["", f"[registry.{_q(cache_host)}]", "  http = true"]
    out["buildkitd.toml"] = "\n".join(lines) + "\n"
    server = "https://registry-1.docker.io" if upstream == "docker.io" else f"https://{upstream}"
    out["hosts.toml"] = (f"# /etc/containerd/certs.d/{upstream}/hosts.toml\nserver = {_q(server)}\n\n"
                         f"[host.{_q(cache_url.rstrip('/'))}]\n  capabilities = [\"pull\", \"resolve\"]\n"
                         + ("  skip_verify = true\n" if scheme == "https" and loopback else ""))
    return out


def htpasswd_argv(path: Path, user: str) -> list[str]:
    """``htpasswd`` adding or replacing ``user`` with a bcrypt hash; the password comes on stdin (-i)."""
    return ["htpasswd", "-i", "-B", str(path), user]


def client_host(bind: str, port: int) -> str:
    """The address clients use for a registry bound to ``bind``."""
    if bind in ("", "0.0.0.0", "::", "[::]"):
        return f"127.0.0.1:{port}"
    if ":" in bind and not bind.startswith("["):
        return f"[{bind}]:{port}"
    return f"{bind}:{port}"


def listen_addr(bind: str, port: int) -> str:
    """``http.addr`` for the registry: ``127.0.0.1:5000``, ``:5000`` (all interfaces), ``[::1]:5000``."""
    bind = bind.strip("[]")
    if bind in ("", "0.0.0.0", "::"):
        return f":{port}"
    return f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"


def instance_to_json(inst: RegistryInstance) -> str:
    data: dict[str, Any] = asdict(inst)
    for key, value in data.items():
        if isinstance(value, Path):
            data[key] = str(value)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def instance_from_json(text: str) -> RegistryInstance:
    data = json.loads(text)
    for key in ("data_dir", "state_dir", "htpasswd", "ca_cert"):
        if data.get(key) is not None:
            data[key] = Path(data[key])
    known = {f for f in RegistryInstance.__dataclass_fields__}
    return RegistryInstance(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class AccessLine:
    """One access-log line of the registry (Apache combined format)."""
    method: str
    path: str
    status: int
    size: int
    user_agent: str


_ACCESS = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" '
                     r'(?P<status>\d{3}) (?P<size>\d+|-) "[^"]*" "(?P<ua>[^"]*)"')


def parse_access_line(line: str) -> AccessLine | None:
    """``127.0.0.1 - - [26/Nov/2026:23:08:17 +0000] "PUT /v2/r/blobs/uploads/<uuid>?_state=…&digest=sha256:… HTTP/1.1" 201 0 "" "ua"``."""
    m = _ACCESS.match(line.strip())
    if not m:
        return None
    size = m.group("size")
    return AccessLine(m.group("method"), m.group("path"), int(m.group("status")),
                      0 if size == "-" else int(size), m.group("ua"))


_UPLOAD_DONE = re.compile(r"^/v2/(?P<repo>.+)/blobs/uploads/[^/?]+\?(?:.*&)?digest=(?P<digest>[^&]+)")
_MOUNT = re.compile(r"^/v2/(?P<repo>.+)/blobs/uploads/\?(?:.*&)?mount=(?P<digest>[^&]+)")


def _completed(lines: Iterator[str] | list[str], method: str, pattern: re.Pattern[str],
               repo: str | None) -> list[tuple[str, str]]:
    """``(repo, digest)`` of every ``method`` request matching ``pattern`` that the registry answered 201."""
    out = []
    for line in lines:
        a = parse_access_line(line)
        if a is None or a.method != method or a.status != 201:
            continue
        m = pattern.match(a.path)
        if m and (repo is None or m.group("repo") == repo):
            out.append((m.group("repo"), m.group("digest").replace("%3A", ":")))
    return out


def completed_uploads(lines: Iterator[str] | list[str], repo: str | None = None) -> list[tuple[str, str]]:
    """Blob uploads the registry completed (``PUT …/blobs/uploads/<id>?…digest=…`` answered 201).
    Cross-repository mounts (``POST …/blobs/uploads/?mount=…`` 201) are not uploads."""
    return _completed(lines, "PUT", _UPLOAD_DONE, repo)


def completed_mounts(lines: Iterator[str] | list[str], repo: str | None = None) -> list[tuple[str, str]]:
    """Cross-repository mounts the registry completed (``POST …?mount=…`` answered 201)."""
    return _completed(lines, "POST", _MOUNT, repo)


# --------------------------------------------------------------------------- small machine helpers


def free_port(bind: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    return net.free_port(bind, tool=BINARY)


def _log_last_line(log_path: Path | None, start: int = 0) -> str:
    if log_path is None:
        return "no log"
    try:
        with open(log_path, "rb") as fh:
            fh.seek(start)
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errs = [ln for ln in lines if "level=fatal" in ln or "level=error" in ln or "level=panic" in ln]
    line = (errs or lines or ["no output"])[-1]
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
    return log.scrub(m.group(1) if m else line)[:300]


def wait_ready(url: str, deadline_s: float = 20, *, log_path: Path | None = None,
               process: subprocess.Popen | None = None, verify: bool | str = True, log_start: int = 0) -> None:
    """Poll ``GET <url>/v2/`` until it answers 200 or 401 (auth on), within ``deadline_s`` seconds.

    Raises :class:`ToolError` with the last line of ``log_path`` when the deadline passes or
    ``process`` exits first.
    """
    probe = url.rstrip("/")
    if not probe.endswith("/v2"):
        probe += "/v2"

    def gone() -> str | None:
        if process is None or process.poll() is None:
            return None
        return f"registry at {url} exited ({process.returncode}) while starting: {_log_last_line(log_path, log_start)}"

    def detail() -> str:
        return _log_last_line(log_path, log_start)

    try:
        net.wait_http(probe + "/", deadline_s, ok=(200, 401), verify=verify, gone=gone, tool=BINARY,
                      detail=detail if log_path is not None else None)
    except ToolError as exc:
        message = str(exc)
        if not message.startswith("registry at"):
            message = f"registry at {url}{message[len(probe) + 1:]}"
        raise ToolError(message, tool=BINARY) from None


def _is_registry_process(pid: int, config_path: Path) -> bool:
    """Guard against pid reuse: the process must be a registry serving our config."""
    text = proc.cmdline(pid)
    if text is None:
        return True  # no /proc (not Linux): trust the pid
    return bool(text) and "registry" in os.path.basename(text[0]) and str(config_path) in text


# --------------------------------------------------------------------------- state


def _state_dir(name: str, state_root: Path) -> Path:
    if not _NAME.match(name):
        raise ToolError(f"registry name '{name}' is not valid (letters, digits, . _ -)", tool=BINARY)
    return Path(state_root).absolute() / name


def _read_state(state_dir: Path) -> RegistryInstance | None:
    path = state_dir / STATE_FILE
    try:
        return instance_from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise ToolError(f"registry state {path} is unreadable ({type(exc).__name__}); delete it and start again",
                        tool=BINARY) from None


def _write_state(inst: RegistryInstance) -> None:
    inst.state_dir.mkdir(parents=True, exist_ok=True)
    path = inst.state_dir / STATE_FILE
    tmp = path.with_name(STATE_FILE + ".tmp")
    tmp.write_text(instance_to_json(inst))
    os.replace(tmp, path)


def _running(inst: RegistryInstance) -> bool:
    if inst.backend == "container":
        return docker.container_running(inst.container_id) and listening(inst.host.rsplit(":", 1)[0], inst.port)
    return (inst.pid is not None and proc.pid_alive(inst.pid) and _is_registry_process(inst.pid, inst.config_path)
            and listening(inst.host.rsplit(":", 1)[0], inst.port))


def last_instance(name: str = "local", *, state_root: Path = DEFAULT_STATE_ROOT) -> RegistryInstance | None:
    """The settings registry ``name`` last ran with (running or not), or ``None`` if it never ran."""
    return _read_state(_state_dir(name, state_root))


def status(name: str = "local", *, state_root: Path = DEFAULT_STATE_ROOT) -> RegistryInstance | None:
    """The running instance ``name`` (its process is alive and its port answers), else ``None``."""
    inst = _read_state(_state_dir(name, state_root))
    if inst is None or not _running(inst):
        return None
    return inst


# --------------------------------------------------------------------------- users


def add_user(htpasswd: Path, user: str, password: str) -> None:
    """Add ``user`` to the htpasswd file (bcrypt), replacing an existing entry; the file is 0600.

    The password goes to ``htpasswd -i`` on stdin. A running registry re-reads the file
    when it changes (distribution 2.8 checks its modification time on each request).
    """
    if not user or ":" in user or any(c.isspace() for c in user):
        raise ToolError(f"htpasswd: user name '{user}' is not valid (no ':' or spaces)", tool="htpasswd")
    if not password:
        raise ToolError(f"htpasswd: empty password for user '{user}'", tool="htpasswd")
    log.register_secret(password)
    htpasswd = Path(htpasswd)
    htpasswd.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(htpasswd, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # exists, 0600, before any write
    os.close(fd)
    os.chmod(htpasswd, 0o600)
    proc.run(htpasswd_argv(htpasswd, user), input=password + "\n", timeout=60,
             what=f"htpasswd: add user {user} to {htpasswd}")
    os.chmod(htpasswd, 0o600)


# --------------------------------------------------------------------------- TLS


def _self_signed(tls_dir: Path, bind: str) -> tuple[Path, Path]:
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    if proc.which("openssl") is None:
        raise ToolError("registry tls: openssl is not installed (apt-get install openssl)", tool="openssl")
    tls_dir.mkdir(parents=True, exist_ok=True)
    san = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    if bind not in ("", "0.0.0.0", "::", "127.0.0.1", "localhost", "::1"):
        san.append(("IP:" if re.match(r"^[\d.]+$|:", bind) else "DNS:") + bind.strip("[]"))
    proc.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "825",
              "-subj", "/CN=pipeline local registry", "-addext", "subjectAltName=" + ",".join(san),
              "-keyout", str(key), "-out", str(cert)], timeout=60, what="registry tls: self-signed certificate")
    os.chmod(key, 0o600)
    return cert, key


# --------------------------------------------------------------------------- start / stop


def start(name: str = "local", *, port: int = 5000, state_root: Path = DEFAULT_STATE_ROOT,
          data_dir: Path | None = None, htpasswd: Path | None = None, delete: bool = True, tls: bool = False,
          bind: str = "127.0.0.1", deadline_s: float = 20, proxy: str | None = None, proxy_ttl: str | None = None,
          proxy_credentials: tuple[str, str] | None = None, proxy_as: str | None = None) -> RegistryInstance:
    """Start registry ``name`` (idempotent: a running instance with the same settings is returned).

    ``port=0`` picks a free port. ``htpasswd`` turns on basic auth (the file is created empty,
    0600, when missing: add users with :func:`add_user`). ``proxy`` makes it a pull-through cache of that
    upstream, with ``proxy_credentials`` (user, password): given to our registry process through its
    environment, or to the ``registry:2`` container in its 0600 config file (removed when it stops), never
    on argv or in a container's environment. Raises :class:`ToolError` when the
    port is taken by something else, or the registry does not come up within ``deadline_s``.
    """
    state_dir = _state_dir(name, state_root)
    data_dir = Path(data_dir).absolute() if data_dir else state_dir / "data"
    htpasswd = Path(htpasswd).absolute() if htpasswd else None

    previous = _read_state(state_dir)
    if previous is not None and _running(previous):
        wanted = {"port": port or previous.port, "data_dir": data_dir, "htpasswd": htpasswd, "delete": delete,
                  "tls": tls, "bind": bind, "proxy": proxy, "proxy_ttl": proxy_ttl,
                  "proxy_as": (proxy_as or upstream_name(proxy)) if proxy else None}
        have = {"port": previous.port, "data_dir": previous.data_dir, "htpasswd": previous.htpasswd,
                "delete": previous.delete, "tls": previous.tls, "bind": previous.bind, "proxy": previous.proxy,
                "proxy_ttl": previous.proxy_ttl, "proxy_as": previous.proxy_as}
        diff = [f"{k} {have[k]} (asked {wanted[k]})" for k in wanted if wanted[k] != have[k]]
        if diff:
            raise ToolError(f"registry '{name}' already runs at {previous.host} with other settings: "
                            f"{', '.join(diff)}; stop it first", tool=BINARY)
        return previous
    if previous is not None and (previous.pid or previous.container_id):
        _stop_instance(previous)  # stale: process gone or port dead

    if port == 0:
        port = free_port(bind if bind not in ("", "0.0.0.0", "::") else "127.0.0.1")
    host = client_host(bind, port)
    if listening(host.rsplit(":", 1)[0], port):
        raise ToolError(f"registry '{name}': port {port} is already in use by another process "
                        f"(something answers on {host}); choose another port", tool=BINARY)

    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        if htpasswd is not None and not htpasswd.exists():
            htpasswd.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(htpasswd, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        raise ToolError(f"registry '{name}': cannot prepare {exc.filename}: {exc.strerror}", tool=BINARY) from None
    cert = key = None
    if tls:
        cert, key = _self_signed(state_dir / "tls", bind)

    inst = RegistryInstance(name=name, host=host, port=port, data_dir=data_dir, state_dir=state_dir, pid=None,
                            auth=htpasswd is not None, delete=delete, tls=tls, backend="binary", bind=bind,
                            htpasswd=htpasswd, ca_cert=cert, proxy=proxy, proxy_ttl=proxy_ttl,
                            proxy_as=proxy_as or (upstream_name(proxy) if proxy else None))
    if proxy_credentials is not None:
        log.register_secret(proxy_credentials[1])
    if proc.which(BINARY):
        inst = _start_binary(inst, key, deadline_s, proxy_credentials)
    else:
        inst = _start_container(inst, key, deadline_s, proxy_credentials)
    log.get().info("registry.started", registry=name, host=host, backend=inst.backend, auth=inst.auth,
                   tls=tls, certs_d_hint=inst.certs_d_hint)
    return inst



#: the registry a builder that can only push (the docker driver on the classic image store) pushes to
BUILD_LOOPBACK = "build"


def build_loopback() -> RegistryInstance:
    """The loopback registry of builds (started once, on a free port, kept for later builds)."""
    return start(BUILD_LOOPBACK, port=0, state_root=DEFAULT_STATE_ROOT)


def _start_binary(inst: RegistryInstance, key: Path | None, deadline_s: float,
                  proxy_credentials: tuple[str, str] | None) -> RegistryInstance:
    # the credentials reach the registry process through its environment only
    env = ({"REGISTRY_PROXY_USERNAME": proxy_credentials[0], "REGISTRY_PROXY_PASSWORD": proxy_credentials[1]}
           if proxy_credentials is not None else {})
    secret = secrets.token_hex(32)
    log.register_secret(secret)
    proc.write_private(inst.config_path, config_yaml(
        addr=listen_addr(inst.bind, inst.port),
        root_dir=str(inst.data_dir), secret=secret, delete=inst.delete,
        htpasswd=str(inst.htpasswd) if inst.htpasswd else None,
        tls_cert=str(inst.ca_cert) if inst.ca_cert else None, tls_key=str(key) if key else None, name=inst.name,
        proxy=inst.proxy, proxy_ttl=inst.proxy_ttl))
    log_start = inst.log_path.stat().st_size if inst.log_path.exists() else 0
    binary = proc.which(BINARY) or BINARY
    child = proc.spawn_daemon([binary, "serve", str(inst.config_path)], inst.log_path, env=env)
    inst = replace(inst, pid=child.pid)
    _write_state(inst)
    try:
        wait_ready(inst.url, deadline_s, log_path=inst.log_path, process=child,
                   verify=str(inst.ca_cert) if inst.ca_cert else True, log_start=log_start)
    except ToolError:
        _stop_instance(inst)
        _write_state(replace(inst, pid=None))
        raise
    return inst


def _start_container(inst: RegistryInstance, key: Path | None, deadline_s: float,
                     proxy_credentials: tuple[str, str] | None) -> RegistryInstance:
    why = f"'{BINARY}' is not installed either; apt-get install docker-registry"
    docker.ensure_image(IMAGE, why)
    secret = secrets.token_hex(32)
    log.register_secret(secret)
    # the credentials go into the 0600 config file, mounted read-only: never into the container's environment
    proc.write_private(inst.config_path, config_yaml(
        addr=":5000", root_dir="/var/lib/registry", secret=secret, delete=inst.delete,
        htpasswd="/auth/htpasswd" if inst.htpasswd else None,
        tls_cert="/certs/cert.pem" if inst.ca_cert else None, tls_key="/certs/key.pem" if key else None,
        name=inst.name, proxy=inst.proxy, proxy_ttl=inst.proxy_ttl, proxy_credentials=proxy_credentials))
    volumes = {str(inst.config_path): {"bind": "/etc/docker/registry/config.yml", "mode": "ro"},
               str(inst.data_dir): {"bind": "/var/lib/registry", "mode": "rw"}}
    if inst.htpasswd:
        volumes[str(inst.htpasswd)] = {"bind": "/auth/htpasswd", "mode": "ro"}
    if inst.ca_cert:
        volumes[str(inst.ca_cert.parent)] = {"bind": "/certs", "mode": "ro"}
    container_id = docker.run_container(IMAGE, CONTAINER_PREFIX + inst.name, volumes=volumes,
                                        ports={"5000/tcp": (inst.bind or "0.0.0.0", inst.port)},
                                        labels={"io.pipeline.registry": inst.name}, why=why)
    inst = replace(inst, backend="container", container_id=container_id)
    _write_state(inst)
    try:
        wait_ready(inst.url, deadline_s, verify=str(inst.ca_cert) if inst.ca_cert else True)
    except ToolError:
        _stop_instance(inst)
        raise
    return inst


def _stop_instance(inst: RegistryInstance) -> bool:
    if inst.backend == "container":
        if not inst.container_id:
            return False
        stopped = docker.stop_container(inst.container_id, timeout=STOP_DEADLINE_S, keep_log=inst.log_path)
        if inst.proxy:                  # its config file holds the upstream's credentials: not kept past the run
            inst.config_path.unlink(missing_ok=True)
        return stopped
    pid = inst.pid
    if not pid or not proc.pid_alive(pid) or not _is_registry_process(pid, inst.config_path):
        proc.forget(pid)
        return False
    return proc.terminate(pid, deadline_s=STOP_DEADLINE_S)


def stop(name: str = "local", *, state_root: Path = DEFAULT_STATE_ROOT) -> bool:
    """Stop registry ``name`` (SIGTERM, then SIGKILL after a deadline). Data stays.

    Returns whether a running registry was stopped.
    """
    inst = _read_state(_state_dir(name, state_root))
    if inst is None:
        return False
    stopped = _stop_instance(inst)
    _write_state(replace(inst, pid=None, container_id=None))
    return stopped


# --------------------------------------------------------------------------- access log


def log_offset(inst: RegistryInstance) -> int:
    """The current end of the registry's log; pass it to :func:`uploads_since` later."""
    try:
        return inst.log_path.stat().st_size
    except FileNotFoundError:
        return 0


def read_log_since(inst: RegistryInstance, offset: int = 0) -> list[str]:
    try:
        with open(inst.log_path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def uploads_since(inst: RegistryInstance, offset: int = 0, repo: str | None = None) -> list[tuple[str, str]]:
    """Blob uploads the registry completed since log ``offset``: ``[(repo, digest), …]``."""
    return completed_uploads(read_log_since(inst, offset), repo)


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    log.register_secret(password)
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --------------------------------------------------------------------------- `pipeline registry`


def command(action: str, *, name: str = "local", user: str | None = None, password: str | None = None,
            port: int = 5000, bind: str = "127.0.0.1", data_dir: Path | None = None, auth: bool = False,
            tls: bool = False, delete: bool = True, trust: bool = False, certs_d: Path | None = None,
            state_root: Path = DEFAULT_STATE_ROOT, proxy: str | None = None, proxy_ttl: str | None = None,
            proxy_credentials: tuple[str, str] | None = None,
            proxy_as: str | None = None) -> tuple[dict[str, Any], str, int]:
    """``pipeline registry start|stop|status|adduser``: (data, text, exit code). ``password`` is the
    new user's (adduser), read by the CLI from stdin or the environment."""
    from pipeline.errors import UsageError

    htpasswd = state_root / name / "htpasswd"
    if action == "adduser":
        if not user:
            raise UsageError("pipeline registry adduser: the user name is needed (pipeline registry adduser NAME)")
        if not password:
            raise UsageError("pipeline registry adduser: give the password on stdin or in"
                             " PIPELINE_REGISTRY_PASSWORD (never on the command line)")
        log.register_secret(password)
        add_user(htpasswd, user, password)
        text = f"user {user} added to {htpasswd} (restart the registry with --auth to require it)"
        return {"name": name, "user": user, "htpasswd": str(htpasswd)}, text, 0
    if action == "stop":
        stopped = stop(name, state_root=state_root)
        return {"name": name, "stopped": stopped}, f"registry {name}: {'stopped' if stopped else 'was not running'}", 0
    if action == "start":
        if proxy_as is not None and (not proxy or not re.match(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$", proxy_as)):
            raise UsageError(f"pipeline registry start --proxy-as {proxy_as}: goes with --proxy and names a"
                             " registry host, e.g. docker.io")
        if auth and not htpasswd.exists():
            raise UsageError(f"pipeline registry start --auth: no users yet; run 'pipeline registry adduser NAME'"
                             f" first ({htpasswd})")
        inst = start(name, port=port, state_root=state_root, bind=bind, data_dir=data_dir,
                     htpasswd=htpasswd if auth else None, delete=delete and not proxy, tls=tls,
                     proxy=check_proxy_url(proxy) if proxy else None, proxy_ttl=proxy_ttl,
                     proxy_credentials=proxy_credentials, proxy_as=proxy_as)
    elif action == "client-config":
        inst = status(name, state_root=state_root)
        if inst is None or not inst.proxy:
            raise UsageError(f"pipeline registry client-config: registry '{name}' is not running as a pull-through"
                             " cache (start it with: pipeline registry start --proxy https://registry-1.docker.io)")
        snippets = client_config(inst.url, inst.proxy, inst.proxy_as)
        text = "\n".join(f"# --- {what}\n{body}" for what, body in snippets.items())
        return {"name": name, "address": inst.host, "upstream": inst.proxy, **snippets}, text.rstrip("\n"), 0
    else:
        inst = status(name, state_root=state_root)
    trusted: list[str] = []
    if trust:
        if inst is None or not inst.tls:
            raise UsageError("pipeline registry --trust: goes with a running registry started with --tls")
        trusted = [str(p) for p in trust_certificate(inst, certs_d or DOCKER_CERTS_D)]
    if inst is None:
        return {"name": name, "running": False}, f"registry {name}: not running", 0 if action != "status" else 3
    data = {"name": inst.name, "running": True, "address": inst.host, "pid": inst.pid, "data_dir": str(inst.data_dir),
            "auth": inst.auth, "delete": inst.delete, "tls": inst.tls, "backend": inst.backend,
            "ca_cert": str(inst.ca_cert) if inst.ca_cert else None, "certs_d": trusted,
            "certs_d_hint": None if trusted else inst.certs_d_hint, "proxy": inst.proxy}
    lines = [f"registry {inst.name}: running at {inst.host} (pid {inst.pid}, {inst.backend}); data in"
             f" {inst.data_dir}; auth {'on' if inst.auth else 'off'}, deletes {'on' if inst.delete else 'off'}, "
             f"tls {'on' if inst.tls else 'off'}"]
    if inst.proxy:
        lines.append(f"a read-only pull-through cache of {inst.proxy}; client settings: pipeline registry"
                     f" client-config --name {inst.name}")
    if trusted:
        lines.append("docker trusts its certificate: " + ", ".join(trusted))
    elif inst.tls and inst.ca_cert:
        lines += [certs_d_hint(h, inst.ca_cert) for h in certs_d_hosts(inst)]
        lines.append("(or run again with --trust to do it)")
    if inst.auth and action == "start":
        lines.append(f"clients log in with: pipeline login --registry NAME --username USER --password-stdin"
                     f" (or docker login {inst.host}); releases can read auth = \"env\" variables instead")
    return data, "\n".join(lines), 0


__all__ = [
    "AccessLine",
    "RegistryInstance",
    "add_user",
    "basic_auth_header",
    "certs_d_hint",
    "certs_d_hosts",
    "last_instance",
    "trust_certificate",
    "client_config",
    "client_host",
    "command",
    "completed_mounts",
    "completed_uploads",
    "config_yaml",
    "free_port",
    "htpasswd_argv",
    "instance_from_json",
    "instance_to_json",
    "listen_addr",
    "listening",
    "log_offset",
    "parse_access_line",
    "read_log_since",
    "start",
    "status",
    "stop",
    "uploads_since",
    "wait_ready",
]
