"""reportupdater.templates: placeholder names, safe rendering, interval values."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, UTC

import pytest

from reportupdater.templates import (INTERVAL_PLACEHOLDERS, TemplateError, fields,
                                     interval_values, render)

UTC = UTC


# ----------------------------------------------------------------- fields


def test_fields_lists_every_placeholder_once():
    template = ("SELECT '{from_date}' AS date, count(*) FROM {wiki}.revision\n"
                "WHERE rev_timestamp >= '{from_timestamp}' AND rev_timestamp < '{to_timestamp}'\n"
                "AND '{wiki}' <> ''")
    assert fields(template) == {"from_date", "wiki", "from_timestamp", "to_timestamp"}


def test_fields_of_a_template_without_placeholders():
    assert fields("SELECT 1") == set()
    assert fields("") == set()


def test_fields_ignores_doubled_braces():
    assert fields("SELECT '{{not_a_field}}', '{real}'") == {"real"}


@pytest.mark.parametrize("template, shown", [
    ("{x.__class__}", "{x.__class__}"),
    ("{x[0]}", "{x[0]}"),
    ("{x.y}", "{x.y}"),
    ("{0}", "{0}"),
    ("{}", "{}"),
])
def test_fields_rejects_anything_but_plain_names(template, shown):
    with pytest.raises(TemplateError) as caught:
        fields(template)
    assert str(caught.value) == f"placeholder {shown} is not a plain name"


def test_fields_rejects_nested_format_specs():
    with pytest.raises(TemplateError, match=r"placeholder \{x\} has a nested format"):
        fields("{x:{y}}")


@pytest.mark.parametrize("template", ["SELECT {x", "SELECT x}", "{x!}"])
def test_fields_rejects_bad_brace_syntax(template):
    with pytest.raises(TemplateError, match="^bad placeholder syntax: "):
        fields(template)


# ----------------------------------------------------------------- render


def test_render_substitutes_values():
    assert render("a={a} b={b} a again={a}", {"a": "1", "b": "two"}) == "a=1 b=two a again=1"


def test_render_keeps_literal_braces():
    assert render("{{literal}} {x} {{{x}}}", {"x": "v"}) == "{literal} v {v}"


def test_render_unknown_placeholder_is_an_error_naming_it():
    with pytest.raises(TemplateError) as caught:
        render("SELECT {known}, {unknown}", {"known": "1"})
    assert str(caught.value) == "unknown placeholder {unknown}"


@pytest.mark.parametrize("template", ["{x.__class__}", "{x[0]}", "{x.__class__.__mro__}"])
def test_render_never_reaches_into_objects(template):
    with pytest.raises(TemplateError, match="is not a plain name"):
        render(template, {"x": "value"})


def test_render_extra_values_are_ignored():
    assert render("{a}", {"a": "1", "b": "2"}) == "1"


def test_render_format_spec_and_repr_conversion():
    assert render("[{x:>4}]", {"x": "ab"}) == "[  ab]"
    assert render("{x!r}", {"x": "ab"}) == "'ab'"


def test_bad_format_spec_is_a_template_error():
    # '{from_date:d}' cannot format text: it is refused when the config is
    # loaded (fields) and when rendering, as a TemplateError -- never a
    # ValueError that escapes the engines and aborts the whole run.
    with pytest.raises(TemplateError, match=r"\{from_date:d\}"):
        fields("{from_date:d}")
    with pytest.raises(TemplateError, match=r"\{from_date:d\}"):
        render("{from_date:d}", {"from_date": "2026-01-01"})
    with pytest.raises(TemplateError, match="unknown conversion"):
        fields("{x!z}")


def test_render_bad_syntax_is_a_template_error():
    with pytest.raises(TemplateError, match="^bad placeholder syntax: "):
        render("SELECT {x", {"x": "1"})


# -------------------------------------------------------- interval_values


def test_interval_placeholders_are_the_documented_names():
    assert set(INTERVAL_PLACEHOLDERS) == {
        "from_timestamp", "to_timestamp", "from_date", "to_date", "year", "month", "day", "hour"}


def test_interval_values_of_a_day():
    values = interval_values(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC))
    assert values == {
        "from_timestamp": "20260105000000",
        "to_timestamp": "20260106000000",   # exclusive: the next interval's start
        "from_date": "2026-01-05",
        "to_date": "2026-01-06",
        "year": "2026",
        "month": "01",
        "day": "05",
        "hour": "00",
    }


def test_interval_values_of_february_in_a_leap_year():
    values = interval_values(datetime(2028, 2, 1, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC))
    assert values == {
        "from_timestamp": "20280201000000",
        "to_timestamp": "20280301000000",
        "from_date": "2028-02-01",
        "to_date": "2028-03-01",
        "year": "2028",
        "month": "02",
        "day": "01",
        "hour": "00",
    }


def test_interval_values_across_a_year_end():
    values = interval_values(datetime(2026, 12, 27, tzinfo=UTC), datetime(2027, 1, 3, tzinfo=UTC))
    assert (values["from_timestamp"], values["to_timestamp"]) == ("20261227000000", "20270103000000")
    assert (values["year"], values["month"], values["day"]) == ("2026", "12", "27")
    assert values["to_date"] == "2027-01-03"


def test_interval_timestamps_are_in_utc():
    plus_two = timezone(timedelta(hours=2))
    values = interval_values(datetime(2026, 1, 5, 2, 0, tzinfo=plus_two),
                             datetime(2026, 1, 6, 2, 0, tzinfo=plus_two))
    assert values["from_timestamp"] == "20260105000000"
    assert values["to_timestamp"] == "20260106000000"


def test_rendering_a_query_with_interval_values():
    values = interval_values(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    values["wiki"] = "enwiki"
    query = render("SELECT '{from_date}', COUNT(*) FROM {wiki}.revision "
                   "WHERE rev_timestamp >= '{from_timestamp}' AND rev_timestamp < '{to_timestamp}' "
                   "/* {year}/{month}/{day} {{x}} */", values)
    assert query == ("SELECT '2026-03-01', COUNT(*) FROM enwiki.revision "
                     "WHERE rev_timestamp >= '20260301000000' AND rev_timestamp < '20260401000000' "
                     "/* 2026/03/01 {x} */")


def test_interval_values_of_one_instant_follow_each_interval_zone():
    # Cached per interval: the same instants in another zone are other dates.
    from datetime import datetime, timedelta, timezone

    from reportupdater.templates import interval_values

    utc = interval_values(datetime(2026, 1, 1, 23, tzinfo=UTC),
                          datetime(2026, 1, 2, 23, tzinfo=UTC))
    plus_one = timezone(timedelta(hours=1))
    local = interval_values(datetime(2026, 1, 2, tzinfo=plus_one), datetime(2026, 1, 3, tzinfo=plus_one))
    assert (utc["from_date"], utc["day"], utc["hour"]) == ("2026-01-01", "01", "23")
    assert (local["from_date"], local["day"], local["hour"]) == ("2026-01-02", "02", "00")
    assert local["from_timestamp"] == utc["from_timestamp"] == "20260101230000"
    local["from_date"] = "changed"  # each call gets a dict of its own
    assert interval_values(datetime(2026, 1, 2, tzinfo=plus_one),
                           datetime(2026, 1, 3, tzinfo=plus_one))["from_date"] == "2026-01-02"
