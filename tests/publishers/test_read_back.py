# prometheus: read_url, against the live stores: every remote-write request
# the store answered 2xx is read back and compared. Prometheus's receiver
# answers 2xx to another value for a timestamp of its out-of-order head and
# keeps the old one (docs/publishing.md): with read_url that is a failure
# of the run, one line, the batch kept; VictoriaMetrics replaces the value,
# and reading it back agrees. Without read_url, a batch that changes values
# published before warns, also when it is delivered by a later run.

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from reportupdater.publishers import prometheus
from reportupdater.publishers.prometheus import (PrometheusPublisher, PrometheusSettings,
                                                 ReadBackError, same_value)
from test_live_guarantees import (NOW, REPORTS, SCRIPT, VALUES, Destination, assert_store_is_the_tsvs,
                                  config_text, edit_values, queued, tsv)
from testkit import make_folder, run_cli

READ_BACK_LINE = re.compile(r".*answered 2xx but kept another value.*")
WARNING = "values published before are sent again with other values"


def make_query(tmp_path: Path, destination: Destination, read_url: str | None) -> Path:
    text = config_text(destination)
    if read_url is not None:
        text = text.replace("timeout: 120}", f'timeout: 120, read_url: "{read_url}"}}', 1)
        assert "read_url" in text
    return make_folder(tmp_path, text, {"values.txt": VALUES}, {report: SCRIPT for report in REPORTS},
                       dedent_text=False)


def run(query: Path, output: Path, level: str = "warning"):
    return run_cli("run", query, output, "--now", NOW, "-l", level, timeout=300)


def rerun(query: Path) -> None:
    code, _, err = run_cli("rerun", query, "2026-01-01", "2026-01-02", "--now", NOW)
    assert code == 0, err


def scraping(server) -> None:
    """A sample at the current time first, as in any Prometheus that scrapes
    something: every report sample then goes to its out-of-order head."""
    PrometheusPublisher(PrometheusSettings(server.remote_write_url), {}, Path("/nonexistent"),
                        Path("/")).send([[[["__name__", "up"]], int(time.time()) * 1000, 1.0]])


def prefix(tmp_path: Path) -> str:
    return "r" + tmp_path.name[-10:].replace("-", "_")


@pytest.mark.live
def test_prometheus_keeping_the_old_value_fails_the_run_with_one_line(prometheus_alone, tmp_path):
    scraping(prometheus_alone)
    destination = Destination("prometheus", prometheus_alone, prefix(tmp_path), scraping=True)
    query, output = make_query(tmp_path, destination, prometheus_alone.url), tmp_path / "output"
    code, _, err = run(query, output)
    assert code == 0, err  # first values: read back as sent
    assert queued(output, destination) == []

    edit_values(query, {"2026-01-01 en 10 a": "2026-01-01 en 12 a"})
    rerun(query)
    for _ in range(2):  # the batch stays: every later run fails the same way
        code, _, err = run(query, output, "info")
        assert code == 1, err
        lines = READ_BACK_LINE.findall(err)
        assert len(lines) == 1, err
        line = lines[0]
        metric = destination.metric("daily_edits")
        assert (f'{metric}{{kind="a",wiki="en"}} at 2026-01-01T00:00:00Z: sent 12, the store '
                "holds 10") in line, line
        assert "docs/publishing.md#reading-back-what-the-store-kept-read_url" in line
        assert f"the batch stays queued in {output}/.prometheus-queue/" in line
        assert f"{prometheus_alone.remote_write_url}" in line
        assert "for the next run" not in err  # no second line repeating it
        assert len(queued(output, destination)) >= 1
    assert tsv(output, "daily_edits")[("2026-01-01", "en", "a")] == 12.0
    assert destination.read("daily_edits")[("2026-01-01", "en", "a")] == 10.0  # what it kept
    code, out, _ = run_cli("status", query, output, "--now", NOW)
    assert "prometheus: " in out and "samples waiting in its queue" in out


@pytest.mark.live
def test_victoria_metrics_reads_back_equal_what_it_took(victoria_metrics, tmp_path):
    destination = Destination("victoria-metrics", victoria_metrics, prefix(tmp_path))
    query, output = make_query(tmp_path, destination, victoria_metrics.url), tmp_path / "output"
    code, _, err = run(query, output, "info")
    assert code == 0, err
    assert f"sent 10 samples to {victoria_metrics.remote_write_url}, 10 read back from " \
           f"{victoria_metrics.url}: as sent" in err  # per report: en's 4 rows, de's 1
    rerun(query)  # the same values again
    code, _, err = run(query, output, "info")
    assert code == 0, err
    assert f"sent 6 samples to {victoria_metrics.remote_write_url}, 6 read back from " \
           f"{victoria_metrics.url}: as sent" in err  # per report: 2026-01-01 (the end is exclusive)
    assert queued(output, destination) == []
    assert_store_is_the_tsvs(destination, output)


@pytest.mark.live
def test_victoria_metrics_does_not_reliably_replace_and_read_url_says_so(victoria_metrics, tmp_path):
    """Measured on Debian's 1.79 (-dedup.minScrapeInterval=1ms): a timestamp
    written twice with different values answers either of them, per series,
    and a series' answer may change from one query to the next (also after
    a restart or /internal/force_merge). With 40 series changed, some answer
    the old value: the read-back fails the batch, which stays queued."""
    metric = prefix(tmp_path) + "_replace"
    settings = PrometheusSettings(victoria_metrics.remote_write_url, read_url=victoria_metrics.url)
    publisher = PrometheusPublisher(settings, {}, tmp_path / "out", tmp_path)
    stamp = 1767225600000

    def batch(value) -> list:
        return [[[["__name__", metric], ["i", f"{i:02d}"]], stamp, value(i)] for i in range(40)]
    publisher.queue.add(batch(lambda i: 10.0))
    assert publisher.flush().ok  # read back as sent
    time.sleep(3)  # the first values in a part of their own, as after an earlier run
    urllib.request.urlopen(victoria_metrics.url + "/internal/force_flush", timeout=30).read()
    publisher.queue.add(batch(lambda i: 5.0 if i % 2 else 20.0))  # lower and higher
    result = publisher.flush()
    assert result.refused and not result.ok
    assert "the store answered 2xx but kept another value" in result.error
    assert re.search(rf'{metric}{{i="\d\d"}} at 2026-01-01T00:00:00Z: sent (5|20), the store '
                     r"holds 10 \(\d+ of the request's 40 samples", result.error), result.error
    assert len(publisher.queue.files()) == 1 and result.waiting == 40
    held = victoria_metrics.raw_samples(metric, stamp // 1000, stamp // 1000)
    assert len(held) == 40
    assert any(points[stamp // 1000] == 10.0 for points in held.values())  # not replaced


@pytest.mark.live
def test_without_read_url_a_replacing_batch_warns_also_when_a_later_run_delivers_it(
        prometheus_alone, tmp_path):
    scraping(prometheus_alone)
    destination = Destination("prometheus", prometheus_alone, prefix(tmp_path), scraping=True)
    query, output = make_query(tmp_path, destination, None), tmp_path / "output"
    code, _, err = run(query, output)
    assert code == 0, err
    assert WARNING not in err  # first values: nothing replaced

    edit_values(query, {"2026-01-01 en 10 a": "2026-01-01 en 12 a",
                        "2026-01-01 en 11 b": "2026-01-01 en 13 b"})
    rerun(query)
    destination.stop()
    try:
        code, _, err = run(query, output)
        assert code == 0, err  # an outage
        assert "for the next run" in err
    finally:
        destination.start()
    batches = [json.loads(path.read_text()) for path in queued(output, destination)]
    assert [batch.get("replaces") for batch in batches] == [["daily_edits"], ["daily_more"]]

    code, _, err = run(query, output)  # nothing to compute: the queue goes, and warns
    assert code == 0, err
    assert queued(output, destination) == []
    for report in REPORTS:
        warnings = [line for line in err.splitlines() if WARNING in line]
        assert len([line for line in warnings if f"report '{report}'" in line]) == 1, err
        assert "read_url" in warnings[0] and "keep the old ones silently" in warnings[0]
    # Silently kept, as the warning says.
    assert destination.read("daily_edits")[("2026-01-01", "en", "a")] == 10.0
    code, _, err = run(query, output)
    assert code == 0 and WARNING not in err  # nothing replaced this time


@pytest.mark.live
def test_an_unchanged_rerun_does_not_warn(victoria_metrics, tmp_path):
    destination = Destination("victoria-metrics", victoria_metrics, prefix(tmp_path))
    query, output = make_query(tmp_path, destination, None), tmp_path / "output"
    assert run(query, output)[0] == 0
    rerun(query)
    code, _, err = run(query, output)
    assert code == 0, err
    assert WARNING not in err  # the same values again: nothing can be kept wrongly
    edit_values(query, {"2026-01-03 en 30 a": "2026-01-03 en 31 a"})  # in the lookback
    code, _, err = run(query, output)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if WARNING in line]
    assert [report for report in REPORTS if any(f"report '{report}'" in line for line in warnings)
            ] == list(REPORTS) and len(warnings) == 2, err  # once per report (both read values.txt)


@pytest.mark.live
def test_a_read_url_that_is_no_query_api_is_refused(victoria_metrics, tmp_path):
    destination = Destination("victoria-metrics", victoria_metrics, prefix(tmp_path))
    query = make_query(tmp_path, destination, victoria_metrics.url + "/nothing-here")
    code, _, err = run(query, tmp_path / "output")
    assert code == 1, err
    assert "read_url: " in err and "HTTP 4" in err
    assert len(queued(tmp_path / "output", destination)) == 2


# ------------------------------------------------------------ unit


def test_values_compare_exactly_except_fractions_to_11_digits():
    assert same_value(42.0, 42.0) and not same_value(42.0, 43.0)
    assert not same_value(123456789012.0, 123456789013.0)  # counts: exactly
    assert same_value(1 / 3, 0.333333333333)  # VictoriaMetrics' 12 digits
    assert same_value(0.30000000000000004, 0.3)
    assert not same_value(0.5, 0.5000001)


def test_the_selector_matches_each_label_and_escapes():
    members = [(("__name__", "m"), ("kind", "a"), ("wiki", 'e"n')),
               (("__name__", "m"), ("kind", "a"), ("wiki", "d.e|x\\"))]
    assert prometheus._selector("m", members) == ('m{kind="a",wiki=~"d\\\\.e\\\\|x\\\\\\\\|e\\"n"}')
    # A label not every series has is not matched (the answer is filtered).
    assert prometheus._selector("m", [(("__name__", "m"), ("a", "1")), (("__name__", "m"),)]) == "m{}"


def test_the_error_names_the_first_sample_and_counts_the_others():
    labels = (("__name__", "m"), ("wiki", "en"))
    text = str(ReadBackError([(labels, 1767225600000, 12.0, 10.0), (labels, 1767312000000, 1.5, None)],
                             5000))
    assert text.startswith('the store answered 2xx but kept another value: m{wiki="en"} at '
                           "2026-01-01T00:00:00Z: sent 12, the store holds 10 (2 of the request's "
                           "5000 samples differ or are missing)")
