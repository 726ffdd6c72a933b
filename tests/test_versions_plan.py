# Planning with versions, in-process: plan_report gets the version record and
# today's version as inputs (no I/O) and plans the dates an older version
# computed like a rerun request's, as the report's on_query_change says.

from __future__ import annotations

from datetime import datetime, UTC
from pathlib import Path

from reportupdater import config
from reportupdater.plan import FileInput, Limits, plan_report
from reportupdater.state import State
from reportupdater.versions import PlanVersions, ReportRecord
from testkit import make_folder, write_script

NOW = datetime(2026, 1, 5, 5, tzinfo=UTC)  # due: 2026-01-01 .. 2026-01-04
DAYS = {"2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"}
OUT = Path("out")
FILE = OUT / "r.tsv"


def report(tmp_path: Path, **keys):
    lines = "".join(f"    {key}: {value}\n" for key, value in keys.items())
    folder = make_folder(tmp_path, "reports:\n  r:\n    type: script\n    granularity: days\n"
                                   "    starts: 2026-01-01\n" + lines)
    write_script(folder / "r", "#!/bin/sh\n")
    loaded = config.load(folder)
    assert not loaded.errors, loaded.errors
    return loaded.reports["r"]


def record(*ranges: tuple[str, str, str]) -> ReportRecord:
    found = ReportRecord(OUT, "r")
    if ranges:
        found.files["r.tsv"] = list(ranges)
    return found


def plan(tmp_path, versions, dates=frozenset(DAYS), limits=Limits(), **keys):
    return plan_report(report(tmp_path, **keys), [FileInput((), FILE, frozenset(dates))], State(tmp_path),
                       [], NOW, limits, versions)


OLD_THEN_NEW = record(("2026-01-01", "2026-01-02", "old"), ("2026-01-03", "2026-01-04", "new"))


def test_keep_plans_nothing_for_an_older_version(tmp_path):
    found = plan(tmp_path, PlanVersions(OLD_THEN_NEW, "new"))
    assert found.todo == 0 and found.files[0].stale == frozenset()


def test_rerun_plans_the_older_versions_dates_newest_first_within_the_limit(tmp_path):
    found = plan(tmp_path, PlanVersions(record(("2026-01-01", "2026-01-04", "old")), "new"),
                 on_query_change="rerun", max_intervals_per_run=3)
    assert [job.interval.label for job in found.jobs] == ["2026-01-04", "2026-01-03", "2026-01-02"]
    assert [interval.label for interval in found.files[0].later] == ["2026-01-01"]
    assert found.files[0].reasons == (
        ("2026-01-01", "left for a later run (at most 3 intervals per run)"),
        ("2026-01-02..2026-01-04", "computed by an older version of the report (on_query_change: the "
                                   "next run recomputes it)"))


def test_rerun_leaves_the_current_versions_dates(tmp_path):
    found = plan(tmp_path, PlanVersions(OLD_THEN_NEW, "new"), on_query_change="rerun")
    assert sorted(interval.label for interval in found.files[0].todo) == ["2026-01-01", "2026-01-02"]


def test_a_change_back_makes_the_old_dates_current(tmp_path):
    found = plan(tmp_path, PlanVersions(OLD_THEN_NEW, "old"), on_query_change="rerun")
    assert sorted(interval.label for interval in found.files[0].todo) == ["2026-01-03", "2026-01-04"]


def test_rerun_since_plans_only_from_its_date(tmp_path):
    found = plan(tmp_path, PlanVersions(record(("2026-01-01", "2026-01-04", "old")), "new"),
                 on_query_change="{rerun_since: 2026-01-03}")
    assert sorted(interval.label for interval in found.files[0].todo) == ["2026-01-03", "2026-01-04"]


def test_dates_of_unknown_version_are_not_stale(tmp_path):
    found = plan(tmp_path, PlanVersions(record(("2026-01-04", "2026-01-04", "new")), "new"),
                 on_query_change="rerun")
    assert found.todo == 0
    assert plan(tmp_path, None, on_query_change="rerun").todo == 0  # no record at all


def test_a_date_the_file_lacks_is_missing_not_stale(tmp_path):
    found = plan(tmp_path, PlanVersions(record(("2026-01-01", "2026-01-04", "old")), "new"),
                 dates=DAYS - {"2026-01-02"}, on_query_change="rerun")
    assert sorted(interval.label for interval in found.files[0].stale) == ["2026-01-01", "2026-01-03",
                                                                         "2026-01-04"]
    assert found.todo == 4
    assert ("2026-01-02", "not computed yet (the next run computes it)") in found.files[0].reasons


def test_the_plan_does_not_change_the_record(tmp_path):
    before = OLD_THEN_NEW.to_json()
    plan(tmp_path, PlanVersions(OLD_THEN_NEW, "other"), on_query_change="rerun")
    assert OLD_THEN_NEW.to_json() == before
