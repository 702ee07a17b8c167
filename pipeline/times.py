"""Timestamps other tools and APIs write: RFC 3339 with any fraction (Go writes nanoseconds), ``Z``,
no offset (taken as UTC), or epoch seconds; one parser for all of them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 text (any fraction length, ``Z``) or epoch seconds → aware UTC datetime; None if unusable
    (and for Go's zero time, ``0001-01-01T00:00:00Z``, which means "never")."""
    if value is None or value == "" or (isinstance(value, str) and value.startswith("0001-")):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), timezone.utc)
    text = str(value).strip()
    if text.replace(".", "", 1).isdigit():
        return datetime.fromtimestamp(float(text), timezone.utc)
    text = text.replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:  # Go writes nanoseconds; Python reads at most microseconds
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{(digits + '000000')[:6]}{rest[len(digits):]}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
