"""pipeline: a release orchestrator for container images.

Three slow dependencies are imported on first use and without optional extras no command uses.
httpx, tenacity and structlog cost about a third of a second to import on a small CI runner, and
``pipeline plan``, ``tags`` or a config error need none of them: the modules that use them hold a
:func:`lazy` stand-in, which imports the real module the first time one of its attributes is read
(type checkers see the real import). structlog imports rich when it is installed, for pretty
tracebacks (this tool prints one-line errors), and httpx imports click and rich for its own command
line: about a hundred modules, hidden while these two are first imported (rich stays importable for
our tables).
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
import sys as _sys
import threading as _threading
from types import ModuleType as _ModuleType
from typing import Any as _Any

__version__ = "0.1.0"

# pydantic looks for plugins in every installed distribution's entry points the first time it builds a
# validator (20 ms); the config models use none. A user who sets the variable keeps their choice.
_os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

#: what each module is imported without (``sys.modules[name] = None`` makes ``import name`` fail)
WITHOUT = {"httpx": ("httpx._main",), "structlog": ("rich",)}

_lock = _threading.RLock()


class _Lazy:
    __slots__ = ("_lazy_name", "_lazy_module")

    def __init__(self, name: str) -> None:
        self._lazy_name = name
        self._lazy_module: _ModuleType | None = None

    def __getattr__(self, attr: str) -> _Any:
        return getattr(self._lazy_module or load(self._lazy_name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._lazy_name!r}>"


_stand_ins: dict[str, _Lazy] = {}


def lazy(name: str) -> _Any:
    """A stand-in for module ``name`` that imports it (see :func:`load`) when first used."""
    with _lock:
        return _stand_ins.setdefault(name, _Lazy(name))


def load(name: str) -> _ModuleType:
    """Import ``name`` now, with its optional extras in :data:`WITHOUT` hidden during the import."""
    with _lock:
        found = _sys.modules.get(name)
        if found is None:
            hidden = [extra for extra in WITHOUT.get(name, ()) if extra not in _sys.modules]
            for extra in hidden:
                _sys.modules[extra] = None  # type: ignore[assignment]
            try:
                found = _importlib.import_module(name)
            finally:
                for extra in hidden:
                    if _sys.modules.get(extra, ...) is None:
                        del _sys.modules[extra]
        stand_in = _stand_ins.get(name)
        if stand_in is not None:
            stand_in._lazy_module = found
        return found
