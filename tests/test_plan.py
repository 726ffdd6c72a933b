# The planning stage in-process: plan_report is pure, so these tests build
# its inputs (a report's config, the dates of its output files, a state,
# pending reruns, `now`) and check the plan, without running anything.

from __future__ import annotations

from datetime import date, datetime, UTC
from pathlib import Path

from reportupdater import config, reruns
from reportupdater.intervals import DateRange
from reportupdater.plan import FileInput, Limits, Verdict, compress, plan_report
from reportupdater.state import State
from testkit import make_folder, write_script

NOW = datetime(2026, 1, 5, 5, tzinfo=UTC)  # due: 2026-01-01 .. 2026-01-04
DAYS = {"2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"}


def report(tmp_path: Path, **keys):
    lines = "".join(f"    {key}: {value}\n" for key, value in keys.items())
    folder = make_folder(tmp_path, "reports:\n  r:\n    type: script\n    granularity: days\n"
                                   "    starts: 2026-01-01\n" + lines)
    write_script(folder / "r", "#!/bin/sh\n")
    loaded = config.load(folder)
    assert not loaded.errors, loaded.errors
    return loaded.reports["r"]


def one_file(dates=frozenset(), explode=()):
    return [FileInput(explode, Path("out/r.tsv"), frozenset(dates))]


def labels(found):
    return [interval.label for interval in found]


def test_a_complete_file_plans_nothing(tmp_path):
    plan = plan_report(report(tmp_path), one_file(DAYS), State(tmp_path), [], NOW)
    assert plan.verdict is Verdict.DUE
    assert plan.jobs == () and plan.files[0].missing == ()


def test_missing_days_newest_first_within_the_limit(tmp_path):
    plan = plan_report(report(tmp_path, max_intervals_per_run=2), one_file(), State(tmp_path), [], NOW)
    assert [job.interval.label for job in plan.jobs] == ["2026-01-04", "2026-01-03"]
    assert labels(plan.files[0].later) == ["2026-01-01", "2026-01-02"]
    assert plan.todo == 2 and plan.later == 2
    assert ("2026-01-01..2026-01-02", "left for a later run (at most 2 intervals per run)") \
        in plan.files[0].reasons


def test_the_smaller_of_the_two_limits_applies(tmp_path):
    plan = plan_report(report(tmp_path, max_intervals_per_run=3), one_file(), State(tmp_path), [], NOW,
                       Limits(max_intervals=1))
    assert plan.todo == 1 and plan.limit == 1


def test_lookback_recomputes_the_newest_stored_days_and_counts_in_the_limit(tmp_path):
    plan = plan_report(report(tmp_path, lookback=2, max_intervals_per_run=3),
                       one_file(DAYS - {"2026-01-01"}), State(tmp_path), [], NOW)
    assert labels(plan.files[0].lookback) == ["2026-01-03", "2026-01-04"]
    assert sorted(labels(plan.files[0].todo)) == ["2026-01-01", "2026-01-03", "2026-01-04"]


def test_a_failed_day_waits_for_its_retry_time(tmp_path):
    state = State(tmp_path)
    state.record_failure("r", "2026-01-02", "boom", NOW.replace(hour=3))
    state.record_failure("r", "2026-01-02", "boom", NOW)  # the second failure waits 1 hour
    plan = plan_report(report(tmp_path), one_file(DAYS - {"2026-01-02"}), state, [], NOW)
    assert plan.jobs == ()
    assert labels(plan.files[0].backing_off) == ["2026-01-02"]
    assert plan_report(report(tmp_path / "2"), one_file(DAYS - {"2026-01-02"}), state, [], NOW,
                       Limits(retry_failed_now=True)).todo == 1


def test_batches_follow_the_missing_runs(tmp_path):
    plan = plan_report(report(tmp_path, batch=3, backfill_order="oldest"),
                       one_file({"2026-01-02"}), State(tmp_path), [], NOW)
    assert [(job.parts[0].label, len(job.parts)) for job in plan.jobs] == [
        ("2026-01-01", 1), ("2026-01-03", 2)]


def test_a_schedule_not_due_plans_no_job_but_says_why(tmp_path):
    r = report(tmp_path, schedule='"0 2 * * *"')
    plan = plan_report(r, one_file(), State(tmp_path), [], NOW)
    assert plan.verdict is Verdict.NOT_SCHEDULED and plan.jobs == ()
    assert plan.files[0].reasons == (("2026-01-01..2026-01-04",
                                      "not scheduled now (next 2026-01-06T02:00Z)"),)
    assert plan_report(r, one_file(), State(tmp_path), [], NOW, Limits(forced=True)).todo == 4


def test_nothing_due_before_the_start(tmp_path):
    plan = plan_report(report(tmp_path), one_file(), State(tmp_path), [],
                       datetime(2025, 12, 1, tzinfo=UTC))
    assert plan.verdict is Verdict.NOTHING_DUE and plan.due == ()


def request(start, end, *reports):
    return reruns.RerunRequest(Path(".reruns/1"), DateRange(start, end), reports, "abc")


def test_a_pending_rerun_recomputes_its_stored_days(tmp_path):
    pending = [reruns.PendingRerun(request(date(2026, 1, 2), date(2026, 1, 4), "r"))]
    plan = plan_report(report(tmp_path), one_file(DAYS), State(tmp_path), pending, NOW)
    assert compress(plan.files[0].todo) == "2026-01-02..2026-01-03"
    assert sorted(labels(plan.files[0].rerun)) == ["2026-01-02", "2026-01-03"]


def test_rerun_progress_narrows_to_what_is_left(tmp_path):
    left = {("r", ""): (("2026-01-02", "2026-01-02"),)}
    pending = [reruns.PendingRerun(request(date(2026, 1, 1), date(2026, 1, 5)), left=left)]
    plan = plan_report(report(tmp_path), one_file(DAYS), State(tmp_path), pending, NOW)
    assert labels(plan.files[0].todo) == ["2026-01-02"]
    done = [reruns.PendingRerun(request(date(2026, 1, 1), date(2026, 1, 5)),
                                done_reports=frozenset({"r"}))]
    assert plan_report(report(tmp_path / "2"), one_file(DAYS), State(tmp_path), done, NOW).jobs == ()


def test_a_file_that_cannot_be_read_plans_nothing_for_it_only(tmp_path):
    r = report(tmp_path)
    files = [FileInput((), Path("out/r.tsv"), error="out/r.tsv:2: bad"),
             FileInput((), Path("out/r2.tsv"))]
    plan = plan_report(r, files, State(tmp_path), [], NOW)
    assert plan.files[0].error and plan.files[0].todo == ()
    assert len(plan.files[1].todo) == 4 and plan.todo == 4


def test_progress_file_round_trip(tmp_path):
    r = report(tmp_path)
    req = request(date(2026, 1, 1), date(2026, 1, 5), "r")
    progress = reruns.RerunProgress(tmp_path)
    pending = progress.pending([req])
    plan = plan_report(r, one_file(DAYS), State(tmp_path), pending, NOW)
    progress.record(pending[0], "r", {"": list(plan.files[0].todo[:2])})
    progress.save()
    again = reruns.RerunProgress.load(tmp_path).pending([req])
    assert again[0].left == {("r", ""): (("2026-01-01", "2026-01-02"),)}
    progress.record(pending[0], "r", {"": []})
    assert progress.finish(pending[0], ["r"])
    assert progress.pending([req]) == []


def test_missing_history_goes_before_lookback_when_the_limit_is_small(tmp_path):
    """lookback 2 x 2 files = 4 recomputations, limit 3: were lookback first,
    the missing day would never be computed."""
    r = report(tmp_path, lookback=2, max_intervals_per_run=3)
    files = [FileInput((("wiki", w),), Path(f"out/r/{w}.tsv"), frozenset(DAYS - {"2026-01-01"}))
             for w in ("a", "b")]
    plan = plan_report(r, files, State(tmp_path), [], NOW)
    assert [(job.explode[0][1], job.interval.label) for job in plan.jobs] == [
        ("a", "2026-01-01"), ("b", "2026-01-01"), ("a", "2026-01-04")]


def test_jobs_are_built_as_they_are_iterated_and_again_each_time(tmp_path):
    # A wide backfill does not hold every Job up front: the plan's jobs are
    # made by iterating, each iteration anew, in the same order.
    from reportupdater.plan import Jobs

    plan = plan_report(report(tmp_path), one_file(()), State(tmp_path), (), NOW)
    assert isinstance(plan.jobs, Jobs) and not isinstance(plan.jobs, tuple)
    first, second = list(plan.jobs), list(plan.jobs)
    assert first == second and plan.jobs == tuple(first)
    assert plan.todo == sum(len(job.parts) for job in first) == len(plan.files[0].todo) > 0
    assert iter(plan.jobs) is not iter(plan.jobs)
