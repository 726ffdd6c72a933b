"""Graphite publishing against a real carbon-cache, read back from its whisper
files, and the Grafana dashboard rendered by a real graphite-web."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, UTC
from functools import partial
from pathlib import Path

import pytest
from testkit import run_cli_process

DAY = 86400
JAN1 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())

# Prints, per interval, one row per bucket; values come from factor.txt so a
# test can change them and rerun.
SCRIPT = """#!/bin/sh
factor=$(cat factor.txt)
day=$(echo "$1" | cut -c9-10 | sed 's/^0//')
printf 'date\\tbucket\\tedits\\tratio\\n'
printf '%s\\tsmall\\t%d\\t0.5\\n' "$1" $((day * factor))
printf '%s\\tlarge\\t%d\\t\\n' "$1" $((day * factor * 10))
"""


# Against a live carbon, as cron runs it: a subprocess.
run_cli = partial(run_cli_process, timeout=120)


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]  # the carbon server is shared by the session


def make_folder(tmp_path: Path, carbon, prefix: str, path: str = "edits.{wiki}.{bucket}.{_metric}",
                metrics: str = "{edits: edits, ratio: ratio}", factor: int = 1) -> Path:
    folder = tmp_path / "queries"
    folder.mkdir()
    (folder / "config.yaml").write_text(f"""
graphite:
  host: {carbon.host}
  port: {carbon.port}
  prefix: {prefix}
  lookups:
    wiki: sitematrix.yaml
reports:
  edits:
    type: script
    granularity: days
    starts: 2026-01-01
    explode_by:
      wiki: enwiki, dewiki
    graphite:
      path: "{path}"
      metrics: {metrics}
""")
    (folder / "sitematrix.yaml").write_text("enwiki: en_wikipedia\ndewiki: de_wikipedia\n")
    (folder / "edits").write_text(SCRIPT)
    (folder / "edits").chmod(0o755)
    (folder / "factor.txt").write_text(f"{factor}\n")
    return folder


def expected_edits(days: int, factor: int, scale: int) -> dict[int, float]:
    return {JAN1 + (day - 1) * DAY: float(day * factor * scale) for day in range(1, days + 1)}


def test_exploded_report_with_lookups_reaches_graphite(carbon, prefix, tmp_path):
    folder = make_folder(tmp_path, carbon, prefix)
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-04T01:00")
    assert done.returncode == 0, done.stderr
    end = JAN1 + 3 * DAY
    for wiki in ("en_wikipedia", "de_wikipedia"):
        assert carbon.wait_for(f"{prefix}.edits.{wiki}.small.edits", expected_edits(3, 1, 1),
                               JAN1, end) == expected_edits(3, 1, 1)
        assert carbon.wait_for(f"{prefix}.edits.{wiki}.large.edits", expected_edits(3, 1, 10),
                               JAN1, end) == expected_edits(3, 1, 10)
        assert carbon.wait_for(f"{prefix}.edits.{wiki}.small.ratio", {t: 0.5 for t in expected_edits(3, 1, 1)},
                               JAN1, end) == {t: 0.5 for t in expected_edits(3, 1, 1)}
    # Empty values are skipped: no ratio for the large bucket at all.
    assert not carbon.wsp(f"{prefix}.edits.en_wikipedia.large.ratio").exists()
    assert not (out / ".graphite-queue").exists() or not list((out / ".graphite-queue").glob("*/*.txt"))


def test_rerun_sends_the_new_values(carbon, prefix, tmp_path):
    folder = make_folder(tmp_path, carbon, prefix)
    out = tmp_path / "out"
    assert run_cli("run", str(folder), str(out), "--now", "2026-01-04T01:00").returncode == 0
    metric = f"{prefix}.edits.en_wikipedia.small.edits"
    assert carbon.wait_for(metric, expected_edits(3, 1, 1), JAN1, JAN1 + 3 * DAY) == expected_edits(3, 1, 1)
    (folder / "factor.txt").write_text("7\n")
    assert run_cli("rerun", str(folder), "2026-01-02", "2026-01-03", "--now", "2026-01-04T01:00").returncode == 0
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-04T01:00")
    assert done.returncode == 0, done.stderr
    expected = {JAN1: 1.0, JAN1 + DAY: 14.0, JAN1 + 2 * DAY: 3.0}
    assert carbon.wait_for(metric, expected, JAN1, JAN1 + 3 * DAY) == expected


def test_carbon_down_then_up_every_point_arrives(carbon, prefix, tmp_path):
    folder = make_folder(tmp_path, carbon, prefix)
    out = tmp_path / "out"
    carbon.stop()
    try:
        done = run_cli("run", str(folder), str(out), "--now", "2026-01-06T01:00")
    finally:
        carbon.start()
    # The TSVs are written; the points wait in the queue.
    assert done.returncode == 0, done.stderr
    assert "Graphite unreachable" in done.stderr
    assert (out / "edits" / "enwiki.tsv").read_text().count("\n") == 1 + 5 * 2
    queued = "".join(path.read_text() for path in (out / ".graphite-queue").glob("*/*.txt"))
    assert queued.count("\n") == 2 * 5 * 3  # 2 wikis x 5 days x (2 edits + 1 ratio)
    # Next run: nothing to compute, the queue goes first.
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-06T01:00", "-l", "info")
    assert done.returncode == 0, done.stderr
    assert "sent 30 points" in done.stderr
    assert not list((out / ".graphite-queue").glob("*/*.txt"))
    for wiki in ("en_wikipedia", "de_wikipedia"):
        metric = f"{prefix}.edits.{wiki}.large.edits"
        assert carbon.wait_for(metric, expected_edits(5, 1, 10), JAN1, JAN1 + 5 * DAY) == expected_edits(5, 1, 10)


def test_no_graphite_sends_and_queues_nothing(carbon, prefix, tmp_path):
    folder = make_folder(tmp_path, carbon, prefix)
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-03T01:00", "--no-graphite")
    assert done.returncode == 0, done.stderr
    assert (out / "edits" / "enwiki.tsv").exists()
    assert not (out / ".graphite-queue").exists()
    assert not (carbon.whisper_dir / prefix).exists()


def test_value_that_is_not_a_number_fails_the_graphite_step_only(carbon, prefix, tmp_path):
    folder = make_folder(tmp_path, carbon, prefix, metrics="{edits: edits, bucket: bucket}")
    out = tmp_path / "out"
    done = run_cli("run", str(folder), str(out), "--now", "2026-01-02T01:00")
    assert done.returncode == 1
    assert "report 'edits' row 2026-01-01 metric 'bucket': value 'small' of column 'bucket' " \
           "is not a number" in done.stderr
    assert (out / "edits" / "enwiki.tsv").read_text().startswith("date\tbucket\tedits\tratio\n")


def test_path_with_an_unknown_placeholder_is_a_clear_error(carbon, prefix, tmp_path):
    folder = make_folder(tmp_path, carbon, prefix, path="edits.{wikki}.{_metric}")
    done = run_cli("run", str(folder), str(tmp_path / "out"), "--now", "2026-01-02T01:00")
    assert done.returncode == 1
    assert "graphite path 'edits.{wikki}.{_metric}': unknown placeholder {wikki}" in done.stderr


def test_graphite_backfill_sends_what_the_tsvs_hold(carbon, prefix, tmp_path):
    folder = make_folder(tmp_path, carbon, prefix)
    out = tmp_path / "out"
    assert run_cli("run", str(folder), str(out), "--now", "2026-01-04T01:00", "--no-graphite").returncode == 0
    done = run_cli("graphite-backfill", str(folder), str(out), "-r", "edits", "--since", "2026-01-02")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "12 points queued; all sent"  # 2 wikis x 2 days x 3 points
    metric = f"{prefix}.edits.de_wikipedia.large.edits"
    expected = {JAN1 + DAY: 20.0, JAN1 + 2 * DAY: 30.0}
    assert carbon.wait_for(metric, expected, JAN1, JAN1 + 3 * DAY) == expected


def test_grafana_dashboard_targets_render_in_graphite_web(carbon, graphite_web, prefix, tmp_path):
    folder = make_folder(tmp_path, carbon, prefix)
    out = tmp_path / "out"
    assert run_cli("run", str(folder), str(out), "--now", "2026-01-04T01:00").returncode == 0
    carbon.wait_for(f"{prefix}.edits.de_wikipedia.large.edits", expected_edits(3, 1, 10),
                    JAN1, JAN1 + 3 * DAY)
    done = run_cli("grafana", str(folder))
    assert done.returncode == 0, done.stderr
    board = json.loads(done.stdout)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "graphite"
    assert variables["wiki"]["query"] == f"{prefix}.edits.*"
    assert variables["bucket"]["query"] == f"{prefix}.edits.$wiki.*"
    assert [panel["title"] for panel in board["panels"]] == ["edits: edits", "edits: ratio"]
    for panel in board["panels"]:
        target = panel["targets"][0]["target"]
        # Grafana replaces "All" of a variable by its allValue, '*'.
        rendered = re.sub(r"\$\w+", "*", target)
        series = graphite_web.render(rendered, "20251231", "20260104")
        assert series, f"{target} rendered no series"
        points = {point[1]: point[0] for s in series for point in s["datapoints"] if point[0] is not None}
        assert JAN1 in points and JAN1 + 2 * DAY in points, (target, series)
    edits = graphite_web.render(re.sub(r"\$\w+", "*", board["panels"][0]["targets"][0]["target"]),
                                "20251231", "20260104")
    assert sorted(s["target"] for s in edits) == [
        "de_wikipedia.large", "de_wikipedia.small", "en_wikipedia.large", "en_wikipedia.small"]
