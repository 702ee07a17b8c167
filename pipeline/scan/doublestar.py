"""Pure: doublestar globs (``**`` crosses directories), as Trivy's ignore file matches paths.

``*`` any run of characters except ``/``; ``?`` one such character; ``[abc]``,
``[a-z]``, ``[!x]``/``[^x]`` classes; ``{a,b}`` alternatives; ``**`` as a whole
path segment any number of directories (zero included); ``\\`` escapes.
"""

from __future__ import annotations

import functools
import re


class GlobError(ValueError):
    pass


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n, depth = 0, len(pattern), 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise GlobError(f"'{pattern}': a trailing backslash escapes nothing")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            if pattern.startswith("**", i):
                start_seg = i == 0 or pattern[i - 1] == "/"
                end = i + 2
                if start_seg and (end == n or pattern[end] == "/"):
                    if end == n:
                        if out and out[-1] == "/":            # 'a/**': a itself and everything below it
                            out[-1] = "(?:/.*)?"
                        else:
                            out.append(".*")
                        i = end
                    else:
                        out.append("(?:.*/)?")                # '**/' : zero or more directories
                        i = end + 1
                    continue
                out.append("[^/]*")
                i = end
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^") else i + 1)
            if j < 0:
                raise GlobError(f"'{pattern}': '[' without ']'")
            body = pattern[i + 1:j]
            neg = body[:1] in ("!", "^")
            body = body[1:] if neg else body
            out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
            i = j
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise GlobError(f"'{pattern}': '{{' without '}}'")
    return "".join(out)


@functools.lru_cache(maxsize=512)
def compile(pattern: str) -> re.Pattern[str]:  # noqa: A001 - mirrors re.compile
    try:
        return re.compile(_translate(pattern) + r"\Z", re.S)
    except re.error as exc:
        raise GlobError(f"'{pattern}': {exc}") from None


def match(pattern: str, path: str) -> bool:
    return compile(pattern).match(path) is not None
