"""structlog set-up (configured once) and the one redaction processor.

Events are named ``noun.verb_past`` with fields. Every event passes through
:func:`redact`, which replaces any registered secret value and the values of
secret-looking keys with ``***``; :func:`scrub` applies the same to plain text
(tool stderr, exception messages) before it leaves the process.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from pipeline import lazy

if TYPE_CHECKING:
    import structlog
else:
    structlog = lazy("structlog")

REDACTED = "***"
_SECRET_KEY = re.compile(r"(pass(word)?|token|secret|private|credential|auth)$|^(authorization)$", re.I)
_secrets: set[str] = set()
_lock = threading.Lock()
_configured = False
_pending: tuple[str, TextIO, str, object] | None = None   # set by configure(), applied by the first get()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it never appears in logs, errors or reports."""
    if value and len(value) >= 3:
        with _lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    """Replace every registered secret in ``text``."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) and v else _scrub_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_value(v) for v in value)
    return value


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the only place log output is redacted."""
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key != "event" and _SECRET_KEY.search(key) and value:
            out[key] = REDACTED
        else:
            out[key] = _scrub_value(value)
    return out


def configure(fmt: str = "text", *, stream: TextIO | None = None, level: str = "info") -> None:
    """Readable console on a terminal, JSON lines with ``fmt='json'``. structlog is imported and set up
    when the first logger is asked for: a command that logs nothing never imports it."""
    global _configured, _pending
    with _lock:
        _pending = (fmt, stream or sys.stderr, level, _current_processors())
        _configured = True


def _current_processors() -> object:
    """structlog's processor list as it is now (None when structlog is not imported or not configured)."""
    loaded = sys.modules.get("structlog")
    if loaded is None or not loaded.is_configured():
        return None
    return loaded.get_config().get("processors")


def _apply(fmt: str, stream: TextIO, level: str) -> None:
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        colors = stream.isatty() if hasattr(stream, "isatty") else False
        renderer = structlog.dev.ConsoleRenderer(colors=colors, pad_event_to=28)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get(name: str | None = None, **fields: Any) -> Any:
    """A bound logger; stages bind their name."""
    global _pending
    if _pending is not None:
        with _lock:
            if _pending is not None:
                fmt, stream, level, seen = _pending
                if _current_processors() is seen:      # else someone configured structlog after us: theirs wins
                    _apply(fmt, stream, level)
                _pending = None
    log = structlog.get_logger(name) if name else structlog.get_logger()
    return log.bind(**fields) if fields else log
