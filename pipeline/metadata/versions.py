"""Version parsing exactly as docker/metadata-action sees versions.

metadata-action (``src/meta.ts``) hands tag names to two JavaScript libraries and
renders the results through Handlebars. Our tags must be byte-identical, so this
module reimplements the *observable behaviour of those libraries*, quirks
included, rather than the specs they claim to follow. Facts it relies on (read
from docker/metadata-action ``src/meta.ts`` and ``package.json``, npm
``semver@7.8.x`` and ``@renovate/pep440@1.0.0``):

type=semver (``procSemver``)
    * Validation is ``semver.valid(vraw)`` with **no options**, i.e. node-semver's
      *strict* grammar: optional leading ``v`` (not ``V``, not ``=``), exactly
      ``MAJOR.MINOR.PATCH`` without leading zeros, optional ``-pre`` and
      ``+build``. The input is JS-``trim()``-ed first and must be at most 256
      characters *before* trimming; each of major/minor/patch must be
      ``<= Number.MAX_SAFE_INTEGER``.
    * The object rendered by Handlebars comes from ``semver.parse(vraw,
      {loose: true})``. For a string that already passed the strict check the
      loose parse yields the same numbers, so ``{{raw}}`` is the untrimmed input,
      ``{{version}}`` is ``major.minor.patch[-pre]`` (build dropped) and
      ``{{major}}``/``{{minor}}``/``{{patch}}`` are the decimal numbers.
    * Prerelease detection is ``semver.prerelease(vraw)`` (strict again): true
      iff the ``-pre`` part is present.

type=pep440 (``procPep440``)
    * Validation is ``pep440.valid(vraw)``: the case-insensitive regex
      ``^VERSION_PATTERN$`` (no surrounding whitespace; ``v``/``V`` prefix ok).
    * ``{{version}}`` is ``pep440.clean(vraw)``: epoch only if non-zero, release
      joined by ``.``, pre ``a``/``b``/``rc`` + number, ``.postN``, ``.devN``,
      and ``+local`` where the local parts are joined with a **comma** (the
      library interpolates a JS array; ``1.0+abc.1`` -> ``1.0+abc,1``).
    * ``{{major}}`` is ``pep440.major`` = ``release[0]``; ``{{minor}}`` and
      ``{{patch}}`` are ``pep440.minor``/``pep440.patch``, which return **0 when
      the release has fewer than 2/3 parts** (renovatebot/pep440
      ``lib/semantic.js``; its test "pads zeros": ``minor('1') == 0``,
      ``patch('1.2') == 0``). They are *never* empty or "undefined": tag ``1``
      with ``{{major}}.{{minor}}.{{patch}}`` renders ``1.0.0``. The epoch is ignored
      (``major('25!1.2.3') == 1``).
    * Every number goes through JS ``Number()`` and back through JS
      ``Number#toString`` (Handlebars and template strings), so components above
      2**53 lose precision (``12345678901234567890`` -> ``12345678901234567000``)
      and local segments such as ``1e5`` or ``0x1f`` are read as numbers
      (``100000``, ``31``). This module reproduces that.
    * ``is_prerelease`` (pre or dev), ``is_postrelease`` (any post, including
      ``post0``) and ``is_devrelease`` come from ``pep440.explain``;
      metadata-action treats all three as "not a final release".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "MAX_LENGTH",
    "MAX_SAFE_INTEGER",
    "JsNumber",
    "Pep440",
    "SemVer",
    "js_number_to_string",
    "parse_pep440",
    "parse_semver",
]

#: A value as JavaScript holds it after ``Number()``: an exact ``int`` when the
#: double is finite (always an integer here), or ``math.inf`` on overflow.
JsNumber = int | float

# --------------------------------------------------------------------------- #
# JavaScript number semantics
# --------------------------------------------------------------------------- #

#: node-semver ``internal/constants.js``.
MAX_LENGTH = 256
MAX_SAFE_INTEGER = 2**53 - 1

# ECMAScript WhiteSpace + LineTerminator, i.e. what String.prototype.trim()
# strips (node-semver lists the same set as WHITESPACE_CHARACTERS). Python's
# str.strip() differs (it strips \x1c-\x1f and \x85 but not \ufeff).
_JS_TRIM_CHARS = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def _js_trim(text: str) -> str:
    """``String.prototype.trim`` (not Python's notion of whitespace)."""
    return text.strip(_JS_TRIM_CHARS)


def _to_js_number(value: int) -> JsNumber:
    """Round an exact integer the way a JS double would hold it.

    Integers up to 2**53 are exact; larger ones round to nearest-even (as both
    ``float(int)`` and JS string-to-number do); beyond the double range JS gives
    ``Infinity``.
    """
    if -(2**53) <= value <= 2**53:
        return value
    try:
        return int(float(value))
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _js_string_to_number(text: str) -> JsNumber | None:
    """JS ``Number(text)`` for the ``[0-9A-Za-z]+`` strings that reach it here.

    Returns ``None`` where JS gives ``NaN``. Only the StringNumericLiteral forms
    that can be spelled with letters and digits are possible: decimal digits
    with an optional ``e``/``E`` exponent, ``0x``/``0o``/``0b`` integers and the
    literal ``Infinity`` (case-sensitive).
    """
    if re.fullmatch(r"[0-9]+", text, re.ASCII):
        return _to_js_number(int(text))
    m = re.fullmatch(r"([0-9]+)[eE]([0-9]+)", text, re.ASCII)
    if m:
        mantissa, exponent = int(m.group(1)), int(m.group(2))
        if mantissa == 0:
            return 0
        if exponent > 400:  # far past the double range: skip the huge power
            return math.inf
        return _to_js_number(mantissa * 10**exponent)
    m = re.fullmatch(r"0(?:([xX])([0-9a-fA-F]+)|([oO])([0-7]+)|([bB])([01]+))", text, re.ASCII)
    if m:
        if m.group(1):
            return _to_js_number(int(m.group(2), 16))
        if m.group(3):
            return _to_js_number(int(m.group(4), 8))
        return _to_js_number(int(m.group(6), 2))
    if text == "Infinity":
        return math.inf
    return None


def js_number_to_string(value: JsNumber) -> str:
    """``Number.prototype.toString()`` for the integral values used here.

    Below 2**53 this is ``str(int)``. Above, JS prints the *shortest* digits that
    round-trip, padded with zeros up to 21 digits and in exponent form from
    1e21 on (``1e+21``, ``1.2345e+25``); Python's ``repr(float)`` computes the
    same shortest digits, so we only need JS's layout rules.
    """
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        value = int(value)
    if -(2**53) <= value <= 2**53:
        return str(value)
    sign = "-" if value < 0 else ""
    dec = Decimal(repr(float(abs(value))))
    digits = "".join(str(d) for d in dec.as_tuple().digits).rstrip("0") or "0"
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    # value == 0.digits * 10**n  (n = position of the decimal point)
    n = len("".join(str(d) for d in dec.as_tuple().digits)) + exponent
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


# --------------------------------------------------------------------------- #
# node-semver (strict)
# --------------------------------------------------------------------------- #

# Built from node-semver internal/re.js tokens (NUMERICIDENTIFIER,
# NONNUMERICIDENTIFIER, PRERELEASEIDENTIFIER, BUILDIDENTIFIER, FULLPLAIN).
# re.ASCII because JS \d and [a-z] never match non-ASCII characters.
_SV_NUM = r"0|[1-9][0-9]*"
_SV_NONNUM = r"[0-9]*[a-zA-Z-][a-zA-Z0-9-]*"
_SV_PREID = rf"(?:{_SV_NONNUM}|{_SV_NUM})"
_SV_BUILDID = r"[a-zA-Z0-9-]+"
_SEMVER_FULL = re.compile(
    rf"v?({_SV_NUM})\.({_SV_NUM})\.({_SV_NUM})"
    rf"(?:-({_SV_PREID}(?:\.{_SV_PREID})*))?"
    rf"(?:\+({_SV_BUILDID}(?:\.{_SV_BUILDID})*))?",
    re.ASCII,
)


@dataclass(frozen=True)
class SemVer:
    """A version accepted by node-semver's strict parser.

    ``prerelease`` holds ints for numeric identifiers below MAX_SAFE_INTEGER and
    strings otherwise (as node-semver does); ``build`` holds strings. ``raw`` is
    the input as given (untrimmed), which is what node-semver calls ``raw``; it
    takes no part in equality.
    """

    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()
    build: tuple[str, ...] = ()
    raw: str = field(default="", compare=False)

    @property
    def version(self) -> str:
        """``SemVer#version``: ``major.minor.patch[-pre]``; build metadata is dropped."""
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(p) for p in self.prerelease)
        return text

    @property
    def is_prerelease(self) -> bool:
        """``semver.prerelease(v) != null``: true iff there is a ``-pre`` part."""
        return bool(self.prerelease)

    def placeholders(self, raw: str) -> dict[str, str]:
        """Values for metadata-action's ``{{raw}}``/``{{version}}``/``{{major}}``/… .

        ``raw`` is passed in because metadata-action renders the string it
        validated (after ``match=`` and ``/`` → ``-``), which is the caller's
        business. Values are *not* HTML-escaped; Handlebars escaping is the
        renderer's job.
        """
        return {
            "raw": raw,
            "version": self.version,
            "major": str(self.major),
            "minor": str(self.minor),
            "patch": str(self.patch),
        }

    def __str__(self) -> str:
        return self.version


def parse_semver(text: str) -> SemVer | None:
    """node-semver ``parse(text)`` without options (strict); ``None`` if invalid.

    This is the check metadata-action's ``semver.valid(vraw)`` performs, so
    ``None`` means "skip this rule". Order of checks as in ``classes/semver.js``:
    length of the untrimmed string, JS trim, strict regex, then the
    MAX_SAFE_INTEGER bound on each main component.
    """
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        return None
    m = _SEMVER_FULL.fullmatch(_js_trim(text))
    if m is None:
        return None
    major, minor, patch = (int(m.group(i)) for i in (1, 2, 3))
    if max(major, minor, patch) > MAX_SAFE_INTEGER:
        return None
    prerelease: tuple[int | str, ...] = ()
    if m.group(4):
        items: list[int | str] = []
        for ident in m.group(4).split("."):
            if ident.isdigit() and int(ident) < MAX_SAFE_INTEGER:
                items.append(int(ident))
            else:
                items.append(ident)
        prerelease = tuple(items)
    build = tuple(m.group(5).split(".")) if m.group(5) else ()
    return SemVer(major, minor, patch, prerelease, build, raw=text)


# --------------------------------------------------------------------------- #
# @renovate/pep440
# --------------------------------------------------------------------------- #

# lib/version.js VERSION_PATTERN, compiled case-insensitive like XRegExp(…, "i").
# re.ASCII keeps case folding ASCII-only, as in a non-unicode JS regex.
_PEP440 = re.compile(
    r"v?"
    r"(?:"
    r"(?:(?P<epoch>[0-9]+)!)?"
    r"(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?P<pre>[-_.]?(?P<pre_l>(?:a|b|c|rc|alpha|beta|pre|preview))[-_.]?(?P<pre_n>[0-9]+)?)?"
    r"(?P<post>(?:-(?P<post_n1>[0-9]+))|(?:[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?))?"
    r"(?P<dev>[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?"
    r")"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?",
    re.ASCII | re.IGNORECASE,
)

_LETTER_ALIASES = {
    "alpha": "a",
    "beta": "b",
    "c": "rc",
    "pre": "rc",
    "preview": "rc",
    "rev": "post",
    "r": "post",
}


def _letter_version(letter: str | None, number: str | None) -> tuple[str, JsNumber] | None:
    """``normalize_letter_version``: lower-case, alias spellings, implicit 0 / post."""
    if letter:
        low = letter.lower()
        return (_LETTER_ALIASES.get(low, low), _to_js_number(int(number)) if number else 0)
    if number:  # "1.0-1": a bare number is an implicit post-release
        return ("post", _to_js_number(int(number)))
    return None


@dataclass(frozen=True)
class Pep440:
    """A version as ``@renovate/pep440``'s ``parse``/``explain`` sees it.

    ``pre`` is ``(letter, number)`` with the letter normalised to a/b/rc;
    ``post``/``dev`` are the numbers or ``None``; ``local_parts`` are the local
    segments after JS ``Number()`` (numbers) or lower-cased (strings).
    """

    epoch: JsNumber
    release: tuple[JsNumber, ...]
    pre: tuple[str, JsNumber] | None = None
    post: JsNumber | None = None
    dev: JsNumber | None = None
    local_parts: tuple[JsNumber | str, ...] | None = None

    # -- explain() ---------------------------------------------------------- #
    @property
    def local(self) -> str | None:
        """``explain().local``: the local segments joined with ``.``."""
        if self.local_parts is None:
            return None
        return ".".join(_part_str(p) for p in self.local_parts)

    @property
    def base_version(self) -> str:
        """``explain().base_version``: ``[epoch!]release``."""
        prefix = f"{js_number_to_string(self.epoch)}!" if self.epoch != 0 else ""
        return prefix + ".".join(js_number_to_string(r) for r in self.release)

    @property
    def normalized(self) -> str:
        """``pep440.clean()``: what metadata-action puts in ``{{version}}``.

        Note the local segment is joined with ``,`` (library quirk, see module
        docstring), e.g. ``1.0+abc.1`` -> ``1.0+abc,1``.
        """
        text = self.base_version
        if self.pre is not None:
            text += self.pre[0] + js_number_to_string(self.pre[1])
        if self.post is not None:
            text += ".post" + js_number_to_string(self.post)
        if self.dev is not None:
            text += ".dev" + js_number_to_string(self.dev)
        if self.local_parts is not None:
            text += "+" + ",".join(_part_str(p) for p in self.local_parts)
        return text

    @property
    def public(self) -> str:
        """``explain().public``: the normalised version without ``+local``."""
        return self.normalized.split("+", 1)[0]

    @property
    def is_prerelease(self) -> bool:
        """Has a pre-release or a dev-release segment (``Boolean(dev || pre)``)."""
        return self.pre is not None or self.dev is not None

    @property
    def is_postrelease(self) -> bool:
        """Has a post segment, ``post0`` included."""
        return self.post is not None

    @property
    def is_devrelease(self) -> bool:
        """Has a dev segment, ``dev0`` included."""
        return self.dev is not None

    # -- semantic.js -------------------------------------------------------- #
    @property
    def major(self) -> JsNumber:
        """``pep440.major``: ``release[0]`` (the epoch is ignored)."""
        return self.release[0]

    @property
    def minor(self) -> JsNumber:
        """``pep440.minor``: ``release[1]``, or **0** when the release has one part."""
        return self.release[1] if len(self.release) >= 2 else 0

    @property
    def patch(self) -> JsNumber:
        """``pep440.patch``: ``release[2]``, or **0** when the release has fewer than 3 parts."""
        return self.release[2] if len(self.release) >= 3 else 0

    def placeholders(self, raw: str) -> dict[str, str]:
        """Values for ``{{raw}}``/``{{version}}``/``{{major}}``/``{{minor}}``/``{{patch}}``.

        As metadata-action's helper functions return them, stringified the way
        Handlebars stringifies numbers. Not HTML-escaped (the renderer's job).
        Missing minor/patch render as ``"0"``.
        """
        return {
            "raw": raw,
            "version": self.normalized,
            "major": js_number_to_string(self.major),
            "minor": js_number_to_string(self.minor),
            "patch": js_number_to_string(self.patch),
        }

    def __str__(self) -> str:
        return self.normalized


def _part_str(part: JsNumber | str) -> str:
    return part if isinstance(part, str) else js_number_to_string(part)


def parse_pep440(text: str) -> Pep440 | None:
    """``pep440.explain(text)`` (== ``valid`` + ``parse``); ``None`` if invalid.

    No whitespace trimming: metadata-action validates with ``valid()``, which
    anchors the pattern without ``\\s*``.
    """
    if not isinstance(text, str):
        return None
    m = _PEP440.fullmatch(text)
    if m is None:
        return None
    epoch = _to_js_number(int(m.group("epoch"))) if m.group("epoch") else 0
    release = tuple(_to_js_number(int(p)) for p in m.group("release").split("."))
    pre = _letter_version(m.group("pre_l"), m.group("pre_n"))
    post = _letter_version(m.group("post_l"), m.group("post_n1") or m.group("post_n2"))
    dev = _letter_version(m.group("dev_l"), m.group("dev_n"))
    local_parts: tuple[JsNumber | str, ...] | None = None
    if m.group("local"):
        parts: list[JsNumber | str] = []
        for piece in re.split(r"[._-]", m.group("local")):
            number = _js_string_to_number(piece)
            parts.append(piece.lower() if number is None else number)
        local_parts = tuple(parts)
    return Pep440(
        epoch=epoch,
        release=release,
        pre=pre,
        post=post[1] if post else None,
        dev=dev[1] if dev else None,
        local_parts=local_parts,
    )
