"""Loopback sockets: is a port taken, a free port, and waiting for an HTTP service to answer.

Used where the tool starts servers of its own (the local registry) and by ``serve = true``
registries; the registry API itself goes through :mod:`pipeline.tools.registry`.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline import lazy
from pipeline.errors import ToolError

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy("httpx")


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Does something accept TCP connections on ``host:port``?"""
    host = host.strip("[]")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(bind: str = "127.0.0.1", *, tool: str = "pipeline") -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((bind.strip("[]"), 0))
        except OSError as exc:
            raise ToolError(f"cannot listen on {bind}: {exc.strerror}", tool=tool) from None
        return int(s.getsockname()[1])


def wait_http(url: str, deadline_s: float, *, ok: tuple[int, ...] = (200,), verify: bool | str = True,
              gone: Callable[[], str | None] | None = None, detail: Callable[[], str] | None = None,
              tool: str = "pipeline") -> None:
    """Poll ``GET url`` until it answers one of ``ok`` within ``deadline_s`` seconds.

    ``gone()`` returns a sentence when the server's process has exited (then waiting stops);
    ``detail()`` adds the server's last log line to the timeout error.
    """
    tls_verify: bool | ssl.SSLContext = (ssl.create_default_context(cafile=verify)  # a CA file (self-signed)
                                         if isinstance(verify, str) else verify)
    deadline = time.monotonic() + deadline_s
    delay = 0.02
    last = "no answer"
    with httpx.Client(verify=tls_verify, timeout=httpx.Timeout(2.0, connect=1.0), trust_env=False) as client:
        while True:
            why = gone() if gone else None
            if why:
                raise ToolError(why, tool=tool)
            try:
                r = client.get(url)
                if r.status_code in ok:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                more = detail() if detail else last
                raise ToolError(f"{url} not ready within {deadline_s:.0f}s ({last}): {more}", tool=tool)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.5)
