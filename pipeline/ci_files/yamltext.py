"""A small, strict YAML writer for the files ``pipeline`` generates (CI workflows, Kubernetes manifests).

Reading YAML goes through PyYAML (``.trivyignore.yaml``); writing is our own, because the
output must be exact and stable (PyYAML's ``safe_dump`` quotes, folds and orders keys its own
way, and writes no comments): this writes block-style YAML from plain data (dict, list, str,
int, float, bool, None) that every YAML 1.1 and 1.2 parser reads back as the same data (the
tests read it back with PyYAML). Strings are written plain only when no parser could
take them for something else (``on``, ``yes``, ``1.2``, ``2024-01-01``, ``a: b``, ``#x``
are quoted); multi-line strings become literal blocks (``|``) so scripts stay readable.
:class:`Comment` keys put ``# …`` lines into a mapping, for generated files people edit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# Plain scalars: start with a letter, '_' or '/', then letters, digits and a few safe
# punctuation marks, single spaces between words. Anything else is quoted.
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./@+\-]*( [A-Za-z0-9_./@+\-]+)*$")
# Words YAML 1.1 (PyYAML) resolves to booleans or null, in any case.
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}


class Comment:
    """A mapping key that writes ``# text`` lines (one per line of ``text``) instead of an entry.

    Use it as a key with any value (ignored): ``{Comment("why"): None, "key": 1}``.
    Each instance is its own key, so a mapping can hold several.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Comment({self.text!r})"


def _printable(s: str) -> bool:
    return all(c == "\t" or (c.isprintable() and c not in "\u2028\u2029\ufeff") for c in s)


def scalar(value: Any) -> str:
    """One scalar as YAML text (single line)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} has no portable YAML form")
        return repr(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} as YAML")
    if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
        return value
    if _printable(value) and "\t" not in value and not ("'" in value and '"' not in value):
        return "'" + value.replace("'", "''") + "'"
    return _double_quoted(value)


def _double_quoted(value: str) -> str:
    """A YAML double-quoted scalar; everything not plainly printable is escaped."""
    out = []
    for c in value:
        if c in ('"', "\\"):
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c.isprintable() and c not in "\u2028\u2029\ufeff":
            out.append(c)
        elif ord(c) <= 0xFF:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def _block(value: str, indent: int) -> list[str] | None:
    """A literal block (``|``/``|-``) for a multi-line string, or None when one cannot hold it."""
    if "\n" not in value or not _printable(value.replace("\n", "")) or "\r" in value:
        return None
    body = value[:-1] if value.endswith("\n") else value
    if not body or body.endswith("\n") or any(ln != ln.rstrip(" \t") for ln in body.split("\n")):
        return None  # an empty block reads as "", and trailing blank lines or spaces would not survive folding
    header = "|" if value.endswith("\n") else "|-"
    if body.startswith((" ", "\t")) or body.startswith("\n"):
        return None
    pad = " " * indent
    return [header] + [(pad + ln) if ln else "" for ln in body.split("\n")]


def _is_empty_collection(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple)) and not any(
        not isinstance(k, Comment) for k in (value.keys() if isinstance(value, Mapping) else value))


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    return scalar(value)


def _mapping(data: Mapping[Any, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(key, Comment):
            lines += [f"{pad}# {ln}".rstrip() for ln in key.text.split("\n")]
            continue
        if not isinstance(key, str):
            raise TypeError(f"mapping keys must be strings, not {type(key).__name__}")
        k = scalar(key)
        lines += _entry(f"{pad}{k}:", value, indent + 2)
    return lines


def _entry(prefix: str, value: Any, child_indent: int) -> list[str]:
    """``prefix`` followed by ``value``: inline scalar, block scalar, or a nested block."""
    if isinstance(value, Mapping) and not _is_empty_collection(value):
        return [prefix] + _mapping(value, child_indent)
    if isinstance(value, (list, tuple)) and value:
        return [prefix] + _sequence(value, child_indent)
    if isinstance(value, str):
        block = _block(value, child_indent)
        if block:
            return [f"{prefix} {block[0]}"] + block[1:]
    return [f"{prefix} {_inline(value)}"]


def _sequence(items: Iterable[Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for item in items:
        if isinstance(item, Mapping) and not _is_empty_collection(item):
            sub = _mapping(item, indent + 2)
            # the first entry goes on the dash line ("- key: value"); comments stay above it
            first = next(i for i, ln in enumerate(sub) if not ln.lstrip().startswith("#"))
            lines += [pad + ln.lstrip() for ln in sub[:first]]
            lines.append(f"{pad}- {sub[first][indent + 2:]}")
            lines += sub[first + 1:]
        elif isinstance(item, (list, tuple)) and item:
            sub = _sequence(item, indent + 2)
            lines.append(f"{pad}- {sub[0][indent + 2:]}")
            lines += sub[1:]
        elif isinstance(item, str) and _block(item, indent + 2):
            block = _block(item, indent + 2) or []
            lines.append(f"{pad}- {block[0]}")
            lines += block[1:]
        else:
            lines.append(f"{pad}- {_inline(item)}")
    return lines


def dump(data: Any, *, header: str | None = None) -> str:
    """One YAML document. ``header`` becomes leading ``#`` comment lines."""
    lines: list[str] = []
    if header:
        lines += [f"# {ln}".rstrip() for ln in header.split("\n")]
    if isinstance(data, Mapping) and not _is_empty_collection(data):
        lines += _mapping(data, 0)
    elif isinstance(data, (list, tuple)) and data:
        lines += _sequence(data, 0)
    else:
        lines.append(_inline(data))
    return "\n".join(lines) + "\n"


def dump_all(documents: Iterable[Any], *, header: str | None = None) -> str:
    """Several documents separated by ``---`` (a Kubernetes multi-document manifest)."""
    parts = [dump(doc) for doc in documents]
    text = "---\n" + "---\n".join(parts)
    if header:
        text = "".join(f"# {ln}".rstrip() + "\n" for ln in header.split("\n")) + text
    return text


__all__ = ["Comment", "dump", "dump_all", "scalar"]
