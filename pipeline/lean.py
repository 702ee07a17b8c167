"""Three slow dependencies, imported on first use and without optional extras no command uses.

httpx, tenacity and structlog cost about a third of a second to import on a small CI runner, and
``pipeline plan``, ``tags`` or a config error need none of them: the modules that use them hold a
:func:`module` stand-in, which imports the real module the first time one of its attributes is read
(type checkers see the real import). structlog imports rich when it is installed, for pretty
tracebacks (this tool prints one-line errors), and httpx imports click and rich for its own command
line: about a hundred modules, hidden while these two are first imported (rich stays importable for
our tables).
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType
from typing import Any

#: what each module is imported without (``sys.modules[name] = None`` makes ``import name`` fail)
WITHOUT = {"httpx": ("httpx._main",), "structlog": ("rich",)}

_lock = threading.RLock()


class _Lazy:
    __slots__ = ("_lean_name", "_lean_module")

    def __init__(self, name: str) -> None:
        self._lean_name = name
        self._lean_module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._lean_module or load(self._lean_name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._lean_name!r}>"


_stand_ins: dict[str, _Lazy] = {}


def module(name: str) -> Any:
    """A stand-in for ``name`` that imports it (see :func:`load`) when first used."""
    with _lock:
        return _stand_ins.setdefault(name, _Lazy(name))


def load(name: str) -> ModuleType:
    """Import ``name`` now, with its optional extras in :data:`WITHOUT` hidden during the import."""
    with _lock:
        if name in sys.modules and sys.modules[name] is not None:
            found = sys.modules[name]
        else:
            hidden = [extra for extra in WITHOUT.get(name, ()) if extra not in sys.modules]
            for extra in hidden:
                sys.modules[extra] = None  # type: ignore[assignment]
            try:
                found = importlib.import_module(name)
            finally:
                for extra in hidden:
                    if sys.modules.get(extra, ...) is None:
                        del sys.modules[extra]
        stand_in = _stand_ins.get(name)
        if stand_in is not None:
            stand_in._lean_module = found
        return found
