"""moment.js date formatting, as metadata-action's ``{{date}}``/``{{commit_date}}`` do it.

metadata-action renders ``{{date 'fmt' tz='Zone'}}`` as
``moment(date).tz(tz).format(fmt)`` (moment 2.30+, moment-timezone 0.6, English
locale, default zone ``UTC``). Tags have to match byte for byte, so
:func:`format_moment` follows moment's own algorithm (``src/lib/format/format.js``)
rather than a strftime translation:

1. An empty format means moment's default, ``YYYY-MM-DDTHH:mm:ssZ``, or
   ``YYYY-MM-DDTHH:mm:ss[Z]`` when the moment "is UTC" (after ``.tz()`` that is
   whenever the zone's offset is 0), so UTC prints ``…Z`` and not ``…+00:00``.
2. Locale tokens (``LTS LT L LL LLL LLLL l ll lll llll``) are expanded with the
   English formats (``expandFormat``).
3. The format is split with moment's ``formattingTokens`` regex; alternatives are
   tried in the regex's order, which gives "longest token first" for each
   family (``DDDD`` before ``DD``, ``SSS…`` up to 9). A match that names a
   token function is replaced by its value; anything else is literal text, with
   ``[...]`` unwrapped and backslashes removed.
4. Quirks kept on purpose: JS ``.`` does not match line terminators, so a bare
   ``\\n``/``\\r``/U+2028/U+2029 outside brackets disappears from the output, and
   a format made only of them makes moment throw (we raise ``ValueError``);
   ``w|``/``W|`` are swallowed as (unknown, hence literal) tokens.

Precision: moment holds milliseconds, so microseconds are truncated and
``SSSS``… pad the millisecond with zeros. Zone abbreviations (``z``/``zz``; in
moment-timezone both give the abbreviation) come from Python's tz database via
``tzname()``; they match moment-timezone where both databases agree (any
modern date).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

__all__ = ["DEFAULT_FORMAT", "DEFAULT_FORMAT_UTC", "DEFAULT_ZONE", "format_moment", "in_zone"]

#: moment ``hooks.defaultFormat`` / ``hooks.defaultFormatUtc``.
DEFAULT_FORMAT = "YYYY-MM-DDTHH:mm:ssZ"
DEFAULT_FORMAT_UTC = "YYYY-MM-DDTHH:mm:ss[Z]"
#: metadata-action's zone when ``tz=`` is not given.
DEFAULT_ZONE = "UTC"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# moment src/lib/format/format.js `formattingTokens`, with JS `.` spelled out as
# "anything but a JS line terminator".
_FORMATTING_TOKENS = re.compile(
    r"(\[[^\[]*\])|(\\e)|(\\)?(eHHmm|[Hh]mm(ss)?|Mo|MM?M?M?|Do|DDDo|DD?D?D?|ddd?d?|do?|"
    r"w[o|w]?|W[o|W]?|Qo?|N{1,5}|YYYYYY|YYYYY|YYYY|YY|y{2,4}|yo?|gg(ggg?)?|GG(GGG?)?|"
    r"e|E|a|A|hh?|HH?|kk?|mm?|ss?|S{1,9}|x|X|zz?|ZZ?|[^\n\r\u2028\u2029])"
)
# format.js `localFormattingTokens`.
_LOCAL_FORMATTING_TOKENS = re.compile(r"(\[[^\[]*\])|(\\)?(LTS|LT|LL?L?L?|l{1,4})")

# locale/formats.js defaultLongDateFormat; the lower-case forms are derived by
# longDateFormat() (MMMM->MMM, MM->M, DD->D, dddd->ddd).
_LONG_DATE_FORMATS = {
    "LTS": "h:mm:ss A",
    "LT": "h:mm A",
    "L": "MM/DD/YYYY",
    "LL": "MMMM D, YYYY",
    "LLL": "MMMM D, YYYY h:mm A",
    "LLLL": "dddd, MMMM D, YYYY h:mm A",
    "l": "M/D/YYYY",
    "ll": "MMM D, YYYY",
    "lll": "MMM D, YYYY h:mm A",
    "llll": "ddd, MMM D, YYYY h:mm A",
}

# English locale data (moment src/lib/units/month.js, day-of-week.js).
_MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
_MONTHS_SHORT = [m[:3] for m in _MONTHS]
_WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_WEEKDAYS_SHORT = [d[:3] for d in _WEEKDAYS]
_WEEKDAYS_MIN = [d[:2] for d in _WEEKDAYS]
# Locale week rule of "en": weeks start on Sunday (dow 0), and week 1 is the one
# containing Jan 1 (doy 6). ISO is dow 1 / doy 4.
_EN_DOW, _EN_DOY = 0, 6
_ISO_DOW, _ISO_DOY = 1, 4


def _zero_fill(number: int, target_length: int, force_sign: bool = False) -> str:
    """moment ``utils/zero-fill.js``."""
    digits = str(abs(number))
    sign = ("+" if force_sign else "") if number >= 0 else "-"
    return sign + "0" * max(0, target_length - len(digits)) + digits


def _ordinal(number: int) -> str:
    """English ``ordinal``: 1st 2nd 3rd 4th … 11th 12th 13th … 21st 22nd 23rd."""
    last = number % 10
    if (number % 100) // 10 == 1:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(last, "th")
    return f"{number}{suffix}"


def _jan1_weekday(year: int) -> int:
    """Weekday of 1 January (0 = Sunday), valid past year 9999 unlike ``date``."""
    y = year - 1
    return (1 + 5 * (y % 4) + 4 * (y % 100) + 6 * (y % 400)) % 7


def _days_in_year(year: int) -> int:
    return 366 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 365


def _first_week_offset(year: int, dow: int, doy: int) -> int:
    """``week-calendar-utils.js firstWeekOffset``: start of week 1 minus 1 Jan."""
    fwd = 7 + dow - doy
    fwdlw = (7 + (_jan1_weekday(year) + fwd - 1) % 7 - dow) % 7
    return -fwdlw + fwd - 1


def _weeks_in_year(year: int, dow: int, doy: int) -> int:
    offset = _first_week_offset(year, dow, doy)
    offset_next = _first_week_offset(year + 1, dow, doy)
    return (_days_in_year(year) - offset + offset_next) // 7


def _week_of_year(year: int, day_of_year: int, dow: int, doy: int) -> tuple[int, int]:
    """``weekOfYearFromDayOfYear``: (week, week-year) for a week rule."""
    week = (day_of_year - _first_week_offset(year, dow, doy) - 1) // 7 + 1
    if week < 1:
        return week + _weeks_in_year(year - 1, dow, doy), year - 1
    if week > _weeks_in_year(year, dow, doy):
        return week - _weeks_in_year(year, dow, doy), year + 1
    return week, year


class _Moment:
    """The fields moment's token functions read, computed once from ``dt``."""

    def __init__(self, dt: datetime) -> None:
        self.dt = dt
        self.year = dt.year
        self.month = dt.month  # 1-based here; moment's month() is 0-based
        self.day = dt.day
        self.hour = dt.hour
        self.minute = dt.minute
        self.second = dt.second
        self.ms = dt.microsecond // 1000
        self.weekday = dt.isoweekday() % 7  # 0 = Sunday, moment day()
        self.day_of_year = dt.timetuple().tm_yday
        offset = dt.utcoffset() or timedelta(0)
        self.offset_seconds = int(offset.total_seconds())
        self.epoch_ms = (dt - _EPOCH) // timedelta(milliseconds=1)

    @functools.cached_property
    def locale_week(self) -> tuple[int, int]:
        return _week_of_year(self.year, self.day_of_year, _EN_DOW, _EN_DOY)

    @functools.cached_property
    def iso_week(self) -> tuple[int, int]:
        return _week_of_year(self.year, self.day_of_year, _ISO_DOW, _ISO_DOY)

    def offset(self, separator: str) -> str:
        """``Z``/``ZZ``: ±HH:mm, whole minutes truncated like moment's ``~~``."""
        total = self.offset_seconds
        sign = "-" if total < 0 else "+"
        minutes = abs(total) // 60
        return f"{sign}{_zero_fill(minutes // 60, 2)}{separator}{_zero_fill(minutes % 60, 2)}"

    def h12(self) -> int:
        return self.hour % 12 or 12

    def meridiem(self, lower: bool) -> str:
        text = "PM" if self.hour > 11 else "AM"
        return text.lower() if lower else text

    def zone_abbr(self) -> str:
        return self.dt.tzname() or ""


_TokenFn = Callable[[_Moment], str]


def _fraction_token(width: int) -> _TokenFn:
    """``SSSS``…``S×9``: the millisecond scaled up and zero-filled (no finer precision)."""
    return lambda m: _zero_fill(m.ms * 10 ** (width - 3), width)


# Every key of moment's formatTokenFunctions (src/lib/units/*.js) for "en".
_TOKENS: dict[str, _TokenFn] = {
    # year.js
    "Y": lambda m: _zero_fill(m.year, 4) if m.year <= 9999 else f"+{m.year}",
    "YY": lambda m: _zero_fill(m.year % 100, 2),
    "YYYY": lambda m: _zero_fill(m.year, 4),
    "YYYYY": lambda m: _zero_fill(m.year, 5),
    "YYYYYY": lambda m: _zero_fill(m.year, 6, True),
    # quarter.js
    "Q": lambda m: str((m.month + 2) // 3),
    "Qo": lambda m: _ordinal((m.month + 2) // 3),
    # month.js
    "M": lambda m: str(m.month),
    "MM": lambda m: _zero_fill(m.month, 2),
    "Mo": lambda m: _ordinal(m.month),
    "MMM": lambda m: _MONTHS_SHORT[m.month - 1],
    "MMMM": lambda m: _MONTHS[m.month - 1],
    # day-of-month.js
    "D": lambda m: str(m.day),
    "DD": lambda m: _zero_fill(m.day, 2),
    "Do": lambda m: _ordinal(m.day),
    # day-of-year.js
    "DDD": lambda m: str(m.day_of_year),
    "DDDD": lambda m: _zero_fill(m.day_of_year, 3),
    "DDDo": lambda m: _ordinal(m.day_of_year),
    # day-of-week.js ("en" dow is 0, so the locale weekday e equals d)
    "d": lambda m: str(m.weekday),
    "do": lambda m: _ordinal(m.weekday),
    "dd": lambda m: _WEEKDAYS_MIN[m.weekday],
    "ddd": lambda m: _WEEKDAYS_SHORT[m.weekday],
    "dddd": lambda m: _WEEKDAYS[m.weekday],
    "e": lambda m: str((m.weekday + 7 - _EN_DOW) % 7),
    "E": lambda m: str(m.weekday or 7),
    "eHHmm": lambda m: f"{(m.weekday + 7 - _EN_DOW) % 7}{_zero_fill(m.hour, 2)}{_zero_fill(m.minute, 2)}",
    # week.js
    "w": lambda m: str(m.locale_week[0]),
    "ww": lambda m: _zero_fill(m.locale_week[0], 2),
    "wo": lambda m: _ordinal(m.locale_week[0]),
    "W": lambda m: str(m.iso_week[0]),
    "WW": lambda m: _zero_fill(m.iso_week[0], 2),
    "Wo": lambda m: _ordinal(m.iso_week[0]),
    # week-year.js
    "gg": lambda m: _zero_fill(m.locale_week[1] % 100, 2),
    "gggg": lambda m: _zero_fill(m.locale_week[1], 4),
    "ggggg": lambda m: _zero_fill(m.locale_week[1], 5),
    "GG": lambda m: _zero_fill(m.iso_week[1] % 100, 2),
    "GGGG": lambda m: _zero_fill(m.iso_week[1], 4),
    "GGGGG": lambda m: _zero_fill(m.iso_week[1], 5),
    # hour.js
    "H": lambda m: str(m.hour),
    "HH": lambda m: _zero_fill(m.hour, 2),
    "h": lambda m: str(m.h12()),
    "hh": lambda m: _zero_fill(m.h12(), 2),
    "k": lambda m: str(m.hour or 24),
    "kk": lambda m: _zero_fill(m.hour or 24, 2),
    "hmm": lambda m: f"{m.h12()}{_zero_fill(m.minute, 2)}",
    "hmmss": lambda m: f"{m.h12()}{_zero_fill(m.minute, 2)}{_zero_fill(m.second, 2)}",
    "Hmm": lambda m: f"{m.hour}{_zero_fill(m.minute, 2)}",
    "Hmmss": lambda m: f"{m.hour}{_zero_fill(m.minute, 2)}{_zero_fill(m.second, 2)}",
    "a": lambda m: m.meridiem(True),
    "A": lambda m: m.meridiem(False),
    # minute.js, second.js
    "m": lambda m: str(m.minute),
    "mm": lambda m: _zero_fill(m.minute, 2),
    "s": lambda m: str(m.second),
    "ss": lambda m: _zero_fill(m.second, 2),
    # millisecond.js: fractions of a second from the millisecond only
    "S": lambda m: str(m.ms // 100),
    "SS": lambda m: _zero_fill(m.ms // 10, 2),
    "SSS": lambda m: _zero_fill(m.ms, 3),
    **{"S" * n: _fraction_token(n) for n in range(4, 10)},
    # offset.js, timezone.js (moment-timezone: z and zz are both the abbreviation)
    "Z": lambda m: m.offset(":"),
    "ZZ": lambda m: m.offset(""),
    "z": lambda m: m.zone_abbr(),
    "zz": lambda m: m.zone_abbr(),
    # timestamp.js
    "X": lambda m: str(m.epoch_ms // 1000),
    "x": lambda m: str(m.epoch_ms),
    # era.js ("en": AD from 0001-01-01; datetime cannot go below year 1)
    "N": lambda m: "AD",
    "NN": lambda m: "AD",
    "NNN": lambda m: "AD",
    "NNNN": lambda m: "Anno Domini",
    "NNNNN": lambda m: "AD",
    "y": lambda m: str(m.year),
    "yy": lambda m: _zero_fill(m.year, 2),
    "yyy": lambda m: _zero_fill(m.year, 3),
    "yyyy": lambda m: _zero_fill(m.year, 4),
    "yo": lambda m: _ordinal(m.year),
}


def _expand_format(fmt: str) -> str:
    """``expandFormat``: replace locale tokens, at most 6 passes like moment."""

    def replace(match: re.Match[str]) -> str:
        return _LONG_DATE_FORMATS.get(match.group(0), match.group(0))

    for _ in range(6):
        if not _LOCAL_FORMATTING_TOKENS.search(fmt):
            break
        fmt = _LOCAL_FORMATTING_TOKENS.sub(replace, fmt)
    return fmt


def _literal(token: str) -> str:
    """``removeFormattingTokens``: unwrap ``[...]`` or drop backslashes."""
    if re.search(r"\[[\s\S]", token):
        return re.sub(r"^\[|\]\Z", "", token)
    return token.replace("\\", "")


def format_moment(dt: datetime, fmt: str = "") -> str:
    """Format ``dt`` like ``moment(dt).format(fmt)`` in the English locale.

    ``dt`` is formatted in its own zone (use :func:`in_zone` first, as
    metadata-action's ``.tz(tz)`` does). A naive ``dt`` is taken as UTC, since
    metadata-action's default zone is UTC.

    Raises ``ValueError`` for a non-empty format with no formattable character
    at all (only line terminators), where moment itself throws a TypeError.
    """
    if dt.tzinfo is None or dt.utcoffset() is None:
        dt = dt.replace(tzinfo=UTC)
    mom = _Moment(dt)
    if not fmt:
        fmt = DEFAULT_FORMAT_UTC if mom.offset_seconds == 0 else DEFAULT_FORMAT
    fmt = _expand_format(fmt)
    pieces = [match.group(0) for match in _FORMATTING_TOKENS.finditer(fmt)]
    if not pieces:
        raise ValueError(f"moment cannot format with {fmt!r}: it has no token or literal text")
    out = []
    for piece in pieces:
        func = _TOKENS.get(piece)
        out.append(func(mom) if func is not None else _literal(piece))
    return "".join(out)


# --------------------------------------------------------------------------- #
# zones
# --------------------------------------------------------------------------- #


def _normalize_zone_name(name: str) -> str:
    """moment-timezone ``normalizeName``: lower-case, ``/`` → ``_``."""
    return name.lower().replace("/", "_")


@functools.lru_cache(maxsize=1)
def _zone_index() -> dict[str, str]:
    """Normalised name -> tz database key, for moment-timezone's lenient lookup."""
    return {_normalize_zone_name(key): key for key in sorted(available_timezones())}


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    if not name:
        raise ValueError("time zone name is empty")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    # moment-timezone finds zones case-insensitively and treats "/" like "_"
    # ("asia/tokyo", "ASIA_TOKYO" both mean Asia/Tokyo); the filesystem doesn't.
    key = _zone_index().get(_normalize_zone_name(name))
    if key is not None:
        try:
            return ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise ValueError(f"unknown time zone {name!r}")


def in_zone(dt: datetime, tz_name: str = DEFAULT_ZONE) -> datetime:
    """``moment(dt).tz(tz_name)``: the same instant seen in zone ``tz_name``.

    A naive ``dt`` is taken as UTC. Zone names are looked up like
    moment-timezone does (case-insensitive, ``/`` and ``_`` interchangeable).

    Raises ``ValueError`` naming the zone when it is unknown. (moment-timezone
    would only log an error and keep formatting in the runner's local zone, UTC
    on GitHub-hosted runners; we refuse instead so a typo is a config error.)
    """
    if dt.tzinfo is None or dt.utcoffset() is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(_zone(tz_name))
