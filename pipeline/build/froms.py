"""Pure: the base images a Dockerfile builds FROM, as BuildKit's Dockerfile frontend would resolve them.

Hand-written because the answer must match BuildKit's own reading of the file, not a general
shell: parser directives (``# escape=``), line continuations (comment lines inside one are
dropped), instructions in any case, global ``ARG``s before the first ``FROM`` (their defaults,
overridden by ``[image.build_args]`` for declared names only), the expansions BuildKit allows in a
``FROM`` (``$VAR``, ``${VAR}``, ``${VAR:-word}``, ``${VAR-word}``, ``${VAR:+word}``, ``${VAR+word}``),
and the automatic platform arguments (``BUILDPLATFORM``, ``TARGETPLATFORM`` and their parts) that a
``FROM --platform=`` may use without declaring them. ``scratch`` and the names of earlier stages are
not images.

:func:`context_name` gives the name BuildKit looks a named build context up by
(``--build-context NAME=oci-layout://…``): the reference in docker's short ("familiar") form,
``docker.io/library/`` dropped and a trailing ``:latest`` removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.refs import DOCKER_HUB, Ref, RefError, parse

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+])(?P<word>[^}]*))?\}"
                  r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$")
PLATFORM_ARGS = ("BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
                 "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT")


class DockerfileError(ValueError):
    """A Dockerfile the frontend would refuse (``line`` is 1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class From:
    """One ``FROM`` that names an image (not ``scratch``, not an earlier stage)."""

    line: int
    written: str                 # the image as the FROM names it, ARGs expanded (what BuildKit looks up)
    ref: Ref                     # parsed the way docker does
    platforms: tuple[str, ...]   # the platforms this FROM pulls it for
    stage: str | None            # the stage's AS name, if any
    index: int                   # the stage's position


@dataclass(frozen=True)
class Stages:
    bases: tuple[From, ...]
    #: stage index → where its root comes from: ("image", From) | ("stage", index) | ("scratch", None)
    roots: tuple[tuple[str, object], ...]
    names: dict[str, int]

    def final_base(self, target: str | None = None) -> From | None:
        """The image the target stage (else the last stage) is ultimately built FROM (None: ``scratch``)."""
        if not self.roots:
            return None
        if target:
            if target.lower() not in self.names:
                raise DockerfileError(0, f"no stage named '{target}' (image.target)")
            i = self.names[target.lower()]
        else:
            i = len(self.roots) - 1
        for _ in range(len(self.roots) + 1):
            kind, value = self.roots[i]
            if kind == "image":
                assert isinstance(value, From)
                return value
            if kind == "scratch":
                return None
            assert isinstance(value, int)
            i = value
        return None


def full_name(ref: Ref) -> str:
    """``docker.io/library/busybox:1.36``: the lock file's key (the tag ``latest`` when none is written)."""
    tag = ref.tag or (None if ref.digest else "latest")
    out = ref.name + (f":{tag}" if tag else "")
    return out + (f"@{ref.digest}" if ref.digest else "")


def context_name(ref: Ref) -> str:
    """The name BuildKit matches a named build context against (docker's familiar form, no ``:latest``)."""
    repo = ref.repository
    if ref.registry == DOCKER_HUB:
        name = repo.removeprefix("library/") if repo.count("/") == 1 and repo.startswith("library/") else repo
    else:
        name = f"{ref.registry}/{repo}"
    if ref.tag and not (ref.tag == "latest" and not ref.digest):
        name += f":{ref.tag}"
    if ref.digest:
        name += f"@{ref.digest}"
    return name


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction) with continuations joined and comments dropped."""
    lines = text.splitlines()
    escape = "\\"
    start = 0
    for i, raw in enumerate(lines):           # parser directives: only at the very top
        m = _DIRECTIVE.match(raw.strip())
        if not m:
            break
        if m.group(1).lower() == "escape":
            if m.group(2) not in ("\\", "`"):
                raise DockerfileError(i + 1, f"escape directive '{m.group(2)}' must be \\ or `")
            escape = m.group(2)
        start = i + 1
    out: list[tuple[int, str]] = []
    current: list[str] = []
    first = 0
    for i in range(start, len(lines)):
        raw = lines[i]
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue                           # a comment (inside a continuation too)
        if not current:
            if not stripped:
                continue
            first = i + 1
        elif not stripped:
            continue                           # an empty line inside a continuation
        body = raw.rstrip()
        if body.endswith(escape):
            current.append(body[:-1])
            continue
        current.append(body)
        out.append((first, " ".join(part.strip() for part in current)))
        current = []
    if current:
        out.append((first, " ".join(part.strip() for part in current)))
    return out


def expand(word: str, values: Mapping[str, str | None], line: int = 0) -> str:
    """Expand ``$VAR`` forms the way BuildKit's frontend does in a FROM (unset → empty)."""
    def one(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("bare")
        value = values.get(name)
        op = m.group("op")
        if not op:
            return value or ""
        word_value = expand(m.group("word") or "", values, line)
        if op == ":-":
            return value if value else word_value
        if op == "-":
            return value if value is not None else word_value
        if op == ":+":
            return word_value if value else ""
        return word_value if value is not None else ""        # "+"

    if "${" in word and word.count("{") != word.count("}"):
        raise DockerfileError(line, f"unbalanced braces in '{word}'")
    return _VAR.sub(one, word)


def _arg_pairs(rest: str, line: int) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for token in _split(rest):
        name, eq, default = token.partition("=")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise DockerfileError(line, f"ARG '{token}' is not NAME or NAME=value")
        pairs.append((name, _unquote(default) if eq else None))
    return pairs


def _split(rest: str) -> list[str]:
    """Words separated by blanks, quotes kept together (ARG a="x y")."""
    words, current, quote = [], "", ""
    for ch in rest:
        if quote:
            current += ch
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            current += ch
        elif ch.isspace():
            if current:
                words.append(current)
                current = ""
        else:
            current += ch
    if current:
        words.append(current)
    return words


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def platform_args(platform: str, prefix: str) -> dict[str, str]:
    """``TARGETPLATFORM``/``TARGETOS``/``TARGETARCH``/``TARGETVARIANT`` (or BUILD…) of ``os/arch[/variant]``."""
    parts = platform.split("/")
    return {f"{prefix}PLATFORM": platform, f"{prefix}OS": parts[0], f"{prefix}ARCH": parts[1] if len(parts) > 1 else "",
            f"{prefix}VARIANT": parts[2] if len(parts) > 2 else ""}


def read(text: str, build_args: Mapping[str, str], platforms: Sequence[str], build_platform: str) -> Stages:
    """Every stage's base (see the module docstring). ``platforms``: the release's target platforms;
    ``build_platform``: the builder's own (what ``$BUILDPLATFORM`` means)."""
    declared: dict[str, str | None] = {}
    bases: list[From] = []
    roots: list[tuple[str, object]] = []
    names: dict[str, int] = {}
    seen_from = False
    for line, instruction in _logical_lines(text):
        keyword, _, rest = instruction.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not seen_from:
            for name, default in _arg_pairs(rest, line):
                declared[name] = build_args.get(name, default)
            continue
        if keyword != "FROM":
            continue
        seen_from = True
        words = _split(rest)
        flags = [w for w in words if w.startswith("--")]
        words = [w for w in words if not w.startswith("--")]
        if not words:
            raise DockerfileError(line, "FROM names no image")
        stage = None
        if len(words) == 3 and words[1].lower() == "as":
            stage = words[2]
        elif len(words) != 1:
            raise DockerfileError(line, f"FROM {rest}: expected FROM [--platform=P] IMAGE [AS NAME]")
        pinned: str | None = None
        for flag in flags:
            key, _, value = flag[2:].partition("=")
            if key == "platform":
                pinned = _unquote(value)
        index = len(roots)
        if stage is not None:
            names[stage.lower()] = index
        per_platform: dict[str, str] = {}
        for target in platforms:
            values: dict[str, str | None] = {**platform_args(build_platform, "BUILD"),
                                             **platform_args(target, "TARGET"), **declared}
            where = expand(pinned, values, line) if pinned else target
            image = expand(_unquote(words[0]), values, line)
            per_platform.setdefault(image, "")
            per_platform[image] += ("," if per_platform[image] else "") + where
        if len(per_platform) > 1:
            raise DockerfileError(line, f"FROM {words[0]} names a different image per platform"
                                  f" ({', '.join(per_platform)}); the mirror keeps one image per FROM")
        image, where_list = next(iter(per_platform.items()))
        if not image:
            raise DockerfileError(line, f"FROM {words[0]} expands to nothing (set the ARG's default or"
                                  " [image.build_args])")
        if image.lower() in names and names[image.lower()] < index:
            roots.append(("stage", names[image.lower()]))
            continue
        if image.lower() == "scratch":
            roots.append(("scratch", None))
            continue
        try:
            ref = parse(image)
        except RefError as exc:
            raise DockerfileError(line, f"FROM {image}: {exc}") from None
        found = From(line, image, ref, tuple(dict.fromkeys(where_list.split(","))), stage, index)
        bases.append(found)
        roots.append(("image", found))
    if not seen_from:
        raise DockerfileError(1, "no FROM instruction")
    return Stages(tuple(bases), tuple(roots), names)


__all__ = [
    "PLATFORM_ARGS",
    "DockerfileError",
    "From",
    "Stages",
    "context_name",
    "expand",
    "full_name",
    "platform_args",
    "read",
]
