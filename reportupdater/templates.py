# Part of stage 3 (execute): rendering query templates.
#
# Turns an interval and its explode values into the placeholder values that
# sql and hive templates use, and renders templates with them. Pure text:
# touches no file, database or network. Fields may only be plain names:
# `{x.attr}`, `{x[0]}` and unknown names are errors, so a template can never
# reach into Python objects.

from __future__ import annotations

import string
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache

# Placeholders every templated report gets from its interval. The original
# gave sql only the timestamps and hive only the dates; both get all here.
INTERVAL_PLACEHOLDERS = (
    "from_timestamp", "to_timestamp", "from_date", "to_date", "year", "month", "day", "hour",
)


class TemplateError(Exception):
    """A template that cannot be rendered."""


@lru_cache(maxsize=256)
def _parse(template: str) -> tuple[tuple[str, str | None, str | None, str | None], ...]:
    """The template's parts, parsed once per run and template (not per interval)."""
    try:
        return tuple(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"bad placeholder syntax: {exc}") from None


def fields(template: str) -> set[str]:
    """The placeholder names a template uses. Raises TemplateError on bad syntax."""
    names: set[str] = set()
    for _, field_name, format_spec, conversion in _parse(template):
        if field_name is None:
            continue
        _check_field(field_name, format_spec, conversion)
        names.add(field_name)
    return names


def _check_field(field_name: str, format_spec: str | None, conversion: str | None) -> None:
    if not field_name.isidentifier():
        raise TemplateError(f"placeholder {{{field_name}}} is not a plain name")
    if conversion not in (None, "s", "r", "a"):
        raise TemplateError(f"placeholder {{{field_name}}} has an unknown conversion !{conversion}")
    if format_spec:
        if "{" in format_spec:
            raise TemplateError(f"placeholder {{{field_name}}} has a nested format")
        try:
            format("", format_spec)  # every value is text
        except ValueError as exc:
            raise TemplateError(f"placeholder {{{field_name}:{format_spec}}}: {exc}") from None


def interval_values(start: datetime, end: datetime) -> dict[str, str]:
    """Placeholder values of an interval [start, end): timestamps in UTC (for
    the database), dates and parts in the interval's own time zone. A new
    dict each call (callers add their explode values to it)."""
    # The offsets are part of the key: aware datetimes of one instant compare
    # equal whatever their zone, and the dates are in the interval's zone.
    return dict(_interval_values(start, end, start.utcoffset(), end.utcoffset()))


# Every file of an exploded report renders the same interval in a row (plans
# order jobs by interval): the values are built once, not once per file.
@lru_cache(maxsize=1024)
def _interval_values(start: datetime, end: datetime, start_offset: object,
                     end_offset: object) -> dict[str, str]:
    start_utc = start.astimezone(UTC)
    end_utc = end.astimezone(UTC)
    return {
        "from_timestamp": start_utc.strftime("%Y%m%d%H%M%S"),
        "to_timestamp": end_utc.strftime("%Y%m%d%H%M%S"),
        "from_date": start.strftime("%Y-%m-%d"),
        "to_date": end.strftime("%Y-%m-%d"),
        "year": start.strftime("%Y"),
        "month": start.strftime("%m"),
        "day": start.strftime("%d"),
        "hour": start.strftime("%H"),
    }


def render(template: str, values: Mapping[str, str]) -> str:
    """str.format with only plain names allowed; unknown names raise TemplateError."""
    out: list[str] = []
    for literal, field_name, format_spec, conversion in _parse(template):
        out.append(literal)
        if field_name is None:
            continue
        _check_field(field_name, format_spec, conversion)
        if field_name not in values:
            raise TemplateError(f"unknown placeholder {{{field_name}}}")
        value = values[field_name]
        if conversion in ("r", "a"):
            value = repr(value) if conversion == "r" else ascii(value)
        try:
            out.append(format(value, format_spec or ""))
        except ValueError as exc:
            raise TemplateError(f"placeholder {{{field_name}:{format_spec}}}: {exc}") from None
    return "".join(out)
