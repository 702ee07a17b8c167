"""The Handlebars subset that docker/metadata-action evaluates in tag rules.

metadata-action compiles rule values, prefixes, suffixes, ``enable`` and label
lines with Handlebars, so ``{{branch}}``, ``{{date 'YYYYMMDD' tz='Asia/Tokyo'}}``,
``{{{raw}}}`` and comments behave as they do there, including the HTML escaping
of rendered values (``&`` becomes ``&amp;`` before tag sanitisation). Block
helpers and partials are not part of what the action offers users; they are
rejected with a clear error instead of being rendered wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class TemplateError(ValueError):
    """A template that Handlebars would refuse to compile or render."""


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Mustache:
    path: tuple[str, ...]
    params: tuple[Any, ...] = ()
    hash: tuple[tuple[str, Any], ...] = ()
    escaped: bool = True


@dataclass(frozen=True)
class PathRef:
    """A parameter that refers to a context value instead of a literal."""

    parts: tuple[str, ...]


@dataclass
class Template:
    source: str
    nodes: list[Text | Mustache] = field(default_factory=list)


_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;", "`": "&#x60;", "=": "&#x3D;"}
_ESCAPE_RE = re.compile(r"[&<>\"'`=]")
_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<num>-?\d+(?:\.\d+)?(?=[\s)=]|$))
      | (?P<hashkey>[^\s=(){}'"]+)=
      | (?P<word>[^\s=(){}'"]+)
      | (?P<bad>\S)
    )""",
    re.X,
)


def escape(value: str) -> str:
    """Handlebars' escapeExpression."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], value)


def _split_path(word: str) -> tuple[str, ...]:
    parts = [p for p in re.split(r"[./]", word) if p not in ("", ".", "this")]
    return tuple(parts)


def _literal(kind: str, text: str) -> Any:
    if kind == "str":
        body = text[1:-1]
        return re.sub(r"\\(.)", r"\1", body)
    if kind == "num":
        return float(text) if "." in text else int(text)
    return text


def _parse_expression(expr: str, source: str) -> Mustache:
    pos = 0
    words: list[Any] = []
    hash_: list[tuple[str, Any]] = []
    pending_key: str | None = None
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        kind = m.lastgroup
        text = m.group(kind) if kind else ""
        if kind == "bad":
            if text in "()":
                raise TemplateError(f"sub-expressions are not supported in {source!r}")
            raise TemplateError(f"cannot parse {{{{{expr}}}}} in {source!r}")
        if kind == "hashkey":
            if pending_key is not None:
                raise TemplateError(f"cannot parse {{{{{expr}}}}} in {source!r}")
            pending_key = text
            continue
        if kind == "word":
            value: Any
            if text in ("true", "false"):
                value = text == "true"
            elif text in ("null", "undefined"):
                value = None
            else:
                value = PathRef(_split_path(text))
        else:
            value = _literal(kind, text)
        if pending_key is not None:
            hash_.append((pending_key, value))
            pending_key = None
        elif hash_:
            raise TemplateError(f"positional parameter after key=value in {{{{{expr}}}}} in {source!r}")
        else:
            words.append(value)
    if pending_key is not None:
        raise TemplateError(f"missing value for {pending_key}= in {source!r}")
    if not words or not isinstance(words[0], PathRef):
        raise TemplateError(f"empty or invalid expression {{{{{expr}}}}} in {source!r}")
    head = words[0]
    return Mustache(path=head.parts, params=tuple(words[1:]), hash=tuple(hash_))


def parse(source: str) -> Template:
    """Parse a Handlebars template into text and mustache nodes."""
    tpl = Template(source)
    nodes = tpl.nodes
    i = 0
    buf: list[str] = []
    strip_next = False

    def flush(strip_right: bool) -> None:
        text = "".join(buf)
        buf.clear()
        if strip_right:
            text = text.rstrip()
        if text:
            nodes.append(Text(text))

    while i < len(source):
        if source.startswith("\\{{", i):
            # An escaped mustache renders literally up to its closing braces.
            end = source.find("}}", i + 3)
            end = len(source) if end < 0 else end + 2
            buf.append(source[i + 1:end])
            i = end
            continue
        if not source.startswith("{{", i):
            ch = source[i]
            if strip_next and ch.isspace() and not buf:
                i += 1
                continue
            strip_next = False
            buf.append(ch)
            i += 1
            continue
        strip_next = False
        if source.startswith("{{!--", i) or source.startswith("{{~!--", i):
            end = source.find("--}}", i)
            if end < 0:
                end = source.find("--~}}", i)
            if end < 0:
                raise TemplateError(f"unclosed comment in {source!r}")
            close = source.index("}}", end) + 2
            flush(source[i + 2] == "~")
            strip_next = source[close - 3] == "~"
            i = close
            continue
        triple = source.startswith("{{{", i) or source.startswith("{{~{", i)
        closer = "}}}" if triple else "}}"
        end = source.find(closer, i + 2)
        if end < 0:
            raise TemplateError(f"unclosed '{{{{' in {source!r}")
        inner = source[i + 2:end]
        close = end + len(closer)
        strip_left = inner.startswith("~")
        if strip_left:
            inner = inner[1:]
        if triple:
            inner = inner[1:]
        strip_right = inner.endswith("~")
        if strip_right:
            inner = inner[:-1]
        flush(strip_left)
        strip_next = strip_right
        i = close
        body = inner.strip()
        if body.startswith("!"):
            continue
        if body[:1] in ("#", "/", "^", ">", "*") or body == "else" or body.startswith("else "):
            raise TemplateError(f"block helpers and partials are not supported: '{{{{{body}}}}}' in {source!r}")
        escaped = not triple
        if body.startswith("&"):
            escaped = False
            body = body[1:].strip()
        mustache = _parse_expression(body, source)
        nodes.append(Mustache(mustache.path, mustache.params, mustache.hash, escaped))
    flush(False)
    return tpl


def _stringify(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(_stringify(v) for v in value)
    return str(value)


def _lookup(context: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    value: Any = context
    for part in parts:
        if isinstance(value, Mapping):
            value = value.get(part)
        else:
            value = getattr(value, part, None)
        if value is None:
            return None
    return value


def render(source: str | Template, context: Mapping[str, Any]) -> str:
    """Render with Handlebars semantics.

    A context value that is callable is a helper: it is called as
    ``fn(*params, **hash)``. A name with parameters that is not a helper is
    Handlebars' "Missing helper" error; a missing plain name renders empty.
    """
    tpl = parse(source) if isinstance(source, str) else source
    out: list[str] = []
    for node in tpl.nodes:
        if isinstance(node, Text):
            out.append(node.text)
            continue
        target = _lookup(context, node.path) if node.path else None
        params = [(_lookup(context, p.parts) if isinstance(p, PathRef) else p) for p in node.params]
        hash_ = {k: (_lookup(context, v.parts) if isinstance(v, PathRef) else v) for k, v in node.hash}
        if callable(target):
            value = target(*params, **hash_)
        elif params or hash_:
            raise TemplateError(f'Missing helper: "{".".join(node.path)}" in {tpl.source!r}')
        else:
            value = target
        text = _stringify(value)
        out.append(escape(text) if node.escaped else text)
    return "".join(out)


def is_raw_statement(pattern: str) -> bool:
    """True when ``pattern`` is a single ``{{raw}}`` statement (metadata-action's isRawStatement)."""
    try:
        tpl = parse(pattern)
    except TemplateError:
        return False
    return len(tpl.nodes) == 1 and isinstance(tpl.nodes[0], Mustache) and tpl.nodes[0].path == ("raw",)


Helper = Callable[..., Any]
