"""pipeline: a release orchestrator for container images."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# pydantic looks for plugins in every installed distribution's entry points the first time it builds a
# validator (20 ms); the config models use none. A user who sets the variable keeps their choice.
_os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def _import_lean() -> None:
    """structlog and httpx, without optional extras no command uses.

    structlog imports rich when it is installed, for pretty tracebacks (this tool prints one-line
    errors, never a traceback), and httpx imports click and rich for its own command line: about
    a hundred of the five hundred modules every start-up would load. They are hidden while these two
    are first imported; rich stays importable for our tables.
    """
    hidden = [name for name in ("rich", "httpx._main") if name not in _sys.modules]
    for name in hidden:
        _sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import httpx  # noqa: F401
        import structlog  # noqa: F401
    finally:
        for name in hidden:
            if _sys.modules.get(name, ...) is None:
                del _sys.modules[name]


_import_lean()
