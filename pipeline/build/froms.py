"""Pure: the base images a Dockerfile builds FROM, as BuildKit's Dockerfile frontend would resolve them.

Hand-written because the answer must match BuildKit's own reading of the file, not a general
shell: parser directives (``# escape=``), line continuations (comment lines inside one are
dropped), instructions in any case, global ``ARG``s before the first ``FROM`` (their defaults,
overridden by ``[image.build_args]`` for declared names only), the expansions BuildKit allows in a
``FROM`` (``$VAR``, ``${VAR}``, ``${VAR:-word}``, ``${VAR-word}``, ``${VAR:+word}``, ``${VAR+word}``),
and the automatic platform arguments (``BUILDPLATFORM``, ``TARGETPLATFORM`` and their parts) that a
``FROM --platform=`` may use without declaring them (a bare ``ARG BUILDPLATFORM`` keeps the automatic
value). ``scratch`` and the names of earlier stages are not images; heredoc bodies (``RUN <<EOF``) are
not instructions. Only the stages the target (``image.target``, else the last stage) reaches through
``FROM``, ``COPY --from`` and ``RUN --mount=…,from=`` count, as BuildKit resolves only those; a
``COPY --from=<image>`` names a base image too.

:func:`context_name` gives the name BuildKit looks a named build context up by
(``--build-context NAME=oci-layout://…``): the reference in docker's short ("familiar") form,
``docker.io/library/`` dropped and a trailing ``:latest`` removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.refs import DOCKER_HUB, Ref, RefError, parse

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_FROM_FLAG = re.compile(r"--from=(\S+)")
_MOUNT_FROM = re.compile(r"--mount=\S*?\bfrom=([^,\s]+)")
HUB_ALIASES = ("index.docker.io", "registry-1.docker.io")
_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$")
PLATFORM_ARGS = ("BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
                 "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT")


class DockerfileError(ValueError):
    """A Dockerfile the frontend would refuse (``line`` is 1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
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
    """(first line number, instruction) with continuations joined, comments dropped and heredoc bodies
    (``RUN <<EOF`` … ``EOF``) skipped."""
    lines = text.lstrip("\ufeff").splitlines()
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
    i = start
    while i < len(lines):
        raw = lines[i]
        i += 1
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue                           # a comment (inside a continuation too)
        if not current:
            if not stripped:
                continue
            first = i
        elif not stripped:
            continue                           # an empty line inside a continuation
        body = raw.rstrip()
        if body.endswith(escape):
            current.append(body[:-1])
            continue
        current.append(body)
        instruction = " ".join(part.strip() for part in current)
        current = []
        out.append((first, instruction))
        keyword = instruction.split(None, 1)[0].upper()
        if keyword in ("RUN", "COPY", "ADD"):
            for dash, _, word in _HEREDOC.findall(instruction):   # each body ends at its word alone on a line
                while i < len(lines) and (lines[i].lstrip("\t") if dash else lines[i]).rstrip("\r") != word:
                    i += 1
                i += 1
    if current:
        out.append((first, " ".join(part.strip() for part in current)))
    return out


def expand(word: str, values: Mapping[str, str | None], line: int = 0) -> str:
    """Expand ``$VAR`` forms the way BuildKit's frontend does in a FROM (unset → empty), nested words
    (``${A:-${B}}``) included."""
    out: list[str] = []
    i = 0
    while i < len(word):
        ch = word[i]
        if ch != "$" or i + 1 >= len(word):
            out.append(ch)
            i += 1
            continue
        if word[i + 1] == "{":
            depth, j = 1, i + 2
            while j < len(word) and depth:
                depth += {"{": 1, "}": -1}.get(word[j], 0)
                j += 1
            if depth:
                raise DockerfileError(line, f"unbalanced braces in '{word}'")
            out.append(_one(word[i + 2:j - 1], values, line))
            i = j
            continue
        m = _NAME.match(word, i + 1)
        if not m:
            out.append(ch)
            i += 1
            continue
        out.append(values.get(m.group(0)) or "")
        i = m.end()
    return "".join(out)


def _one(inner: str, values: Mapping[str, str | None], line: int) -> str:
    m = _NAME.match(inner)
    if not m:
        raise DockerfileError(line, f"'${{{inner}}}' is not a variable expansion")
    name, rest = m.group(0), inner[m.end():]
    value = values.get(name)
    if not rest:
        return value or ""
    op = next((o for o in (":-", ":+", "-", "+") if rest.startswith(o)), None)
    if op is None:
        raise DockerfileError(line, f"'${{{inner}}}': only :-, -, :+ and + are understood in a FROM")
    word = expand(rest[len(op):], values, line)
    if op == ":-":
        return value if value else word
    if op == "-":
        return value if value is not None else word
    if op == ":+":
        return word if value else ""
    return word if value is not None else ""


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


def _normal(ref: Ref) -> Ref:
    """Docker Hub under any of its names is ``docker.io`` (as docker and BuildKit normalise it)."""
    if ref.registry in HUB_ALIASES:
        return Ref(DOCKER_HUB, ref.repository, ref.tag, ref.digest)
    return ref


@dataclass
class _Stage:
    index: int
    name: str | None
    line: int
    image: str                   # the FROM's image, expanded
    pinned: str | None           # the FROM's --platform, as written
    needs: list[str] = field(default_factory=list)    # COPY --from / RUN --mount from: stage names or images


def read(text: str, build_args: Mapping[str, str], platforms: Sequence[str], build_platform: str,
         target: str | None = None) -> Stages:
    """Every base image the target stage needs (see the module docstring). ``platforms``: the release's
    target platforms; ``build_platform``: the builder's own (what ``$BUILDPLATFORM`` means)."""
    declared: dict[str, str | None] = {}
    automatic = {**platform_args(build_platform, "BUILD")}
    stages: list[_Stage] = []
    per_platform_images: dict[int, dict[str, list[str]]] = {}
    for line, instruction in _logical_lines(text):
        parts = instruction.split(None, 1)
        keyword, rest = parts[0].upper(), (parts[1].strip() if len(parts) > 1 else "")
        if keyword == "ARG" and not stages:
            for name, default in _arg_pairs(rest, line):
                if name in build_args:
                    declared[name] = build_args[name]
                elif default is not None:
                    declared[name] = expand(default, {**automatic, **declared}, line)
                elif name not in declared and name not in PLATFORM_ARGS:
                    declared[name] = None          # declared without a value: unset
            continue
        if keyword in ("COPY", "ADD", "RUN") and stages:
            found = _FROM_FLAG.findall(rest) if keyword != "RUN" else _MOUNT_FROM.findall(rest)
            stages[-1].needs += [_unquote(f) for f in found]
            continue
        if keyword != "FROM":
            continue
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
        pinned = next((_unquote(f.split("=", 1)[1]) for f in flags if f.startswith("--platform=")), None)
        images: dict[str, list[str]] = {}
        for target_platform in platforms:
            values: dict[str, str | None] = {**automatic, **platform_args(target_platform, "TARGET"),
                                             **{k: v for k, v in declared.items() if v is not None}}
            where = expand(pinned, values, line) if pinned else target_platform
            images.setdefault(expand(_unquote(words[0]), values, line), []).append(where)
        if len(images) > 1:
            raise DockerfileError(line, f"FROM {words[0]} names a different image per platform"
                                  f" ({', '.join(images)}); the mirror keeps one image per FROM")
        image = next(iter(images))
        if not image:
            raise DockerfileError(line, f"FROM {words[0]} expands to nothing (set the ARG's default or"
                                  " [image.build_args])")
        per_platform_images[len(stages)] = images
        stages.append(_Stage(len(stages), stage, line, image, pinned))
    if not stages:
        raise DockerfileError(1, "no FROM instruction")
    return _resolve(stages, per_platform_images, target)


def _resolve(stages: list[_Stage], images: dict[int, dict[str, list[str]]], target: str | None) -> Stages:
    names: dict[str, int] = {}
    roots: list[tuple[str, object]] = []
    by_stage: dict[int, From | None] = {}
    for st in stages:
        if st.image.lower() in names:
            roots.append(("stage", names[st.image.lower()]))
        elif st.image.lower() == "scratch":
            roots.append(("scratch", None))
        else:
            try:
                ref = _normal(parse(st.image))
            except RefError as exc:
                raise DockerfileError(st.line, f"FROM {st.image}: {exc}") from None
            wheres = tuple(dict.fromkeys(w for ws in images[st.index].values() for w in ws))
            found = From(st.line, st.image, ref, wheres, st.name, st.index)
            by_stage[st.index] = found
            roots.append(("image", found))
        if st.name is not None:
            names[st.name.lower()] = st.index
    if target:
        if target.lower() not in names:
            raise DockerfileError(0, f"no stage named '{target}' (image.target names a FROM … AS NAME)")
        start = names[target.lower()]
    else:
        start = len(stages) - 1
    reached: set[int] = set()
    extra: list[From] = []
    todo = [start]
    while todo:
        i = todo.pop()
        if i in reached:
            continue
        reached.add(i)
        kind, value = roots[i]
        if kind == "stage":
            todo.append(value)  # type: ignore[arg-type]
        for need in stages[i].needs:
            if need.isdigit() and int(need) < len(stages):
                todo.append(int(need))
            elif need.lower() in names:
                todo.append(names[need.lower()])
            elif "$" not in need:
                try:
                    ref = _normal(parse(need))
                except RefError as exc:
                    raise DockerfileError(stages[i].line, f"--from={need}: {exc}") from None
                platforms = by_stage[i].platforms if by_stage.get(i) else \
                    tuple(dict.fromkeys(w for ws in images[i].values() for w in ws))
                extra.append(From(stages[i].line, need, ref, platforms, None, i))
    bases = [by_stage[i] for i in sorted(reached) if by_stage.get(i) is not None] + extra
    return Stages(tuple(b for b in bases if b is not None), tuple(roots), names)


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
