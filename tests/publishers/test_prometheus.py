# The Prometheus remote-write publisher against a live VictoriaMetrics and a
# live Prometheus: samples arrive with their labels, values and timestamps;
# a re-send of a timestamp; names checked at construction; an outage queues
# and a later flush delivers; the encoding itself, byte by byte.

from __future__ import annotations

from datetime import datetime, timedelta, UTC
from pathlib import Path

import pytest

from reportupdater.intervals import Interval
from reportupdater.publishers import PublishError, StoredInterval
from reportupdater.publishers import prometheus as remote
from reportupdater.publishers.prometheus import (PrometheusPublisher, PrometheusSettings,
                                                 PrometheusTarget)

# Within the 10-year out-of-order window tests/live_publish_servers.py gives Prometheus.
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]


def day(label: str) -> Interval:
    start = datetime.fromisoformat(label).replace(tzinfo=UTC)
    return Interval(start, start + timedelta(days=1))


def epoch(label: str) -> int:
    return int(datetime.fromisoformat(label).replace(tzinfo=UTC).timestamp())


def stored(label, rows, wiki="en", report="daily_edits", header=("date", "edits", "editors", "kind")):
    return StoredInterval(report, (("wiki", wiki),), tuple(header),
                          tuple(tuple([label, *row]) for row in rows), day(label))


def publisher(url: str, tmp_path: Path, prefix: str, labels=None, **settings) -> PrometheusPublisher:
    output, queries = tmp_path / "output", tmp_path / "queries"
    output.mkdir(parents=True, exist_ok=True)
    queries.mkdir(parents=True, exist_ok=True)
    target = PrometheusTarget({f"{prefix}_edits": "edits", f"{prefix}_editors": "editors"}, labels)
    return PrometheusPublisher(PrometheusSettings(url, **settings), {"daily_edits": target},
                               output, queries)


@pytest.fixture(params=[pytest.param("victoria_metrics", marks=pytest.mark.live),
                        pytest.param("prometheus", marks=pytest.mark.live)])
def store(request):
    return request.getfixturevalue(request.param)


def read(store, metric: str, first: str = DAYS[0], last: str = DAYS[-1]) -> dict[tuple, dict[int, float]]:
    return store.raw_samples(metric, epoch(first), epoch(last))


def test_samples_arrive_with_labels_values_and_timestamps(store, tmp_path):
    pub = publisher(store.remote_write_url, tmp_path, "ru_arrive", labels=["wiki", "kind"])
    assert pub.enqueue([stored(DAYS[0], [["10", "3", "bot"], ["12", "", "human"]]),
                        stored(DAYS[1], [["11", "4.5", "bot"]]),
                        stored(DAYS[0], [["7", "1", "bot"]], wiki="de")]) == 7  # one cell empty
    result = pub.flush()
    assert result.ok and result.delivered == 7 and pub.queue.files() == []
    en_bot = (("__name__", "ru_arrive_edits"), ("kind", "bot"), ("wiki", "en"))
    edits = read(store, "ru_arrive_edits")
    assert edits[en_bot] == {epoch(DAYS[0]): 10.0, epoch(DAYS[1]): 11.0}
    assert edits[(("__name__", "ru_arrive_edits"), ("kind", "human"), ("wiki", "en"))] == {
        epoch(DAYS[0]): 12.0}
    assert edits[(("__name__", "ru_arrive_edits"), ("kind", "bot"), ("wiki", "de"))] == {
        epoch(DAYS[0]): 7.0}
    editors = read(store, "ru_arrive_editors")
    assert editors[(("__name__", "ru_arrive_editors"), ("kind", "bot"), ("wiki", "en"))] == {
        epoch(DAYS[0]): 3.0, epoch(DAYS[1]): 4.5}
    # The empty cell made no sample (and no series for human editors).
    assert (("__name__", "ru_arrive_editors"), ("kind", "human"), ("wiki", "en")) not in editors


@pytest.mark.parametrize("store", [pytest.param("victoria_metrics", marks=pytest.mark.live),
                                   pytest.param("prometheus_alone", marks=pytest.mark.live)],
                         indirect=True)
def test_resend_of_a_timestamp(store, tmp_path):
    """On Prometheus, DAYS[2] is here the newest sample of the database (in
    its in-order head); test_live_guarantees.py has the usual case, a
    Prometheus whose newest sample is now."""
    pub = publisher(store.remote_write_url, tmp_path, "ru_resend")
    pub.enqueue([stored(DAYS[2], [["10", "1", "x"]])])
    assert pub.flush().ok
    pub.enqueue([stored(DAYS[2], [["10", "1", "x"]])])  # the same value again: harmless everywhere
    assert pub.flush().ok
    pub.enqueue([stored(DAYS[2], [["20", "1", "x"]])])  # a rerun changed the value
    result = pub.flush()
    series = (("__name__", "ru_resend_edits"), ("wiki", "en"))
    if store.kind == "victoria-metrics":
        # With -dedup.minScrapeInterval one sample per timestamp is kept:
        # here (Debian's 1.79) the later write, also when it is smaller.
        assert result.ok
        assert read(store, "ru_resend_edits")[series] == {epoch(DAYS[2]): 20.0}
        pub.enqueue([stored(DAYS[2], [["5", "1", "x"]])])
        assert pub.flush().ok
        assert read(store, "ru_resend_edits")[series] == {epoch(DAYS[2]): 5.0}
    else:
        # Prometheus refuses a different value for the newest timestamp of
        # a series in its in-order head ("duplicate sample for timestamp",
        # HTTP 400): the batch stays queued, loudly, and the old value stays.
        assert not result.ok and result.refused and "400" in result.error
        assert "duplicate sample for timestamp" in result.error
        assert len(pub.queue.files()) == 1
        assert read(store, "ru_resend_edits")[series] == {epoch(DAYS[2]): 10.0}


def test_prometheus_refuses_samples_older_than_its_window(prometheus, tmp_path):
    pub = publisher(prometheus.remote_write_url, tmp_path, "ru_old")
    pub.enqueue([stored(DAYS[1], [["1", "1", "x"]])])
    assert pub.flush().ok
    # More than the out-of-order window (10 years) before the newest sample.
    pub.enqueue([stored("2010-01-01", [["2", "1", "x"]])])
    result = pub.flush()
    # Prometheus 2.42 says "HTTP 500 too old sample" (newer ones 400 "out of
    # bounds"): a refusal, loud, not an outage to retry quietly.
    assert not result.ok and result.refused, result.error
    assert "too old sample" in result.error or "out of bounds" in result.error
    assert len(pub.queue.files()) == 1


def test_prometheus_without_a_window_takes_only_the_last_hour(tmp_path):
    from live_publish_servers import prometheus_missing, start_prometheus
    reason = prometheus_missing()
    if reason:
        pytest.skip(reason)
    (tmp_path / "server").mkdir()
    server = start_prometheus(tmp_path / "server", out_of_order_window=None)
    try:
        pub = publisher(server.remote_write_url, tmp_path / "client", "ru_window")
        pub.enqueue([stored(DAYS[1], [["1", "1", "x"]])])
        assert pub.flush().ok  # an empty head takes any first sample
        pub.enqueue([stored(DAYS[0], [["2", "1", "x"]])])  # a day older than the newest
        result = pub.flush()
        assert result.refused and "HTTP 400 out of bounds" in result.error
    finally:
        server.stop()


def test_outage_queues_then_delivers(store, tmp_path):
    pub = publisher(store.remote_write_url, tmp_path, "ru_outage")
    store.stop()
    try:
        pub.enqueue([stored(DAYS[0], [["1", "2", "x"]])])
        pub.enqueue([stored(DAYS[1], [["3", "4", "x"]])])
        result = pub.flush()
        assert not result.ok and not result.refused and result.delivered == 0
        assert result.waiting == 4
        assert len(pub.queue.files()) == 2
    finally:
        store.start()
    result = pub.flush()
    assert result.ok and result.delivered == 4
    assert read(store, "ru_outage_edits")[(("__name__", "ru_outage_edits"), ("wiki", "en"))] == {
        epoch(DAYS[0]): 1.0, epoch(DAYS[1]): 3.0}


def test_wrong_port_queues(tmp_path):
    from live_servers import free_port
    pub = publisher(f"http://127.0.0.1:{free_port()}/api/v1/write", tmp_path, "ru_nowhere")
    pub.enqueue([stored(DAYS[0], [["1", "2", "x"]])])
    result = pub.flush()
    assert not result.ok and not result.refused and result.waiting == 2
    assert "refused" in result.error.lower()  # "Connection refused": an outage


def test_not_an_http_url_is_refused(tmp_path):
    pub = publisher("ftp//nowhere", tmp_path, "ru_url")
    pub.enqueue([stored(DAYS[0], [["1", "2", "x"]])])
    result = pub.flush()
    assert result.refused and "ftp//nowhere" in result.error and len(pub.queue.files()) == 1


def test_a_4xx_keeps_the_batch_queued(store, tmp_path):
    pub = publisher(store.url + "/no/such/endpoint", tmp_path, "ru_notfound")
    pub.enqueue([stored(DAYS[0], [["1", "2", "x"]])])
    result = pub.flush()
    assert not result.ok and result.refused and "HTTP 4" in result.error
    assert len(pub.queue.files()) == 1


@pytest.mark.parametrize(("metric", "labels", "message"), [
    ("2xx", None, "metric name '2xx'"),
    ("ru-edits", None, "metric name 'ru-edits'"),
    ("__ru", None, "metric name '__ru'"),
    ("ru_edits", ["wiki:x"], "label 'wiki:x'"),
    ("ru_edits", ["__name__"], "label '__name__'"),
])
def test_invalid_names_refused_at_construction(tmp_path, metric, labels, message):
    with pytest.raises(PublishError) as error:
        PrometheusPublisher(PrometheusSettings("http://127.0.0.1:1/api/v1/write"),
                            {"daily_edits": PrometheusTarget({metric: "edits"}, labels)},
                            tmp_path, tmp_path)
    text = str(error.value)
    assert "report 'daily_edits'" in text and message in text and "\n" not in text


def test_not_a_number_names_report_row_and_column(tmp_path):
    pub = publisher("http://127.0.0.1:1/api/v1/write", tmp_path, "ru_nan")
    with pytest.raises(PublishError, match=r"report 'daily_edits'.*2024-01-01.*'n/a'.*'edits'"):
        pub.enqueue([stored(DAYS[0], [["n/a", "1", "x"]])])
    assert pub.queue.files() == []


def test_label_value_not_utf8(tmp_path):
    pub = publisher("http://127.0.0.1:1/api/v1/write", tmp_path, "ru_bytes", labels=["kind"])
    with pytest.raises(PublishError, match="label 'kind' is not valid UTF-8"):
        pub.enqueue([stored(DAYS[0], [["1", "1", b"caf\xe9".decode("utf-8", "surrogateescape")]])])


def test_encoding_matches_the_protocol():
    # Label{name: "a", value: "b"}; Sample{value: 1.0, timestamp: 1000}
    assert remote.encode_label("a", "b") == b"\x0a\x01a\x12\x01b"
    assert remote.encode_sample(1.0, 1000) == b"\x09" + bytes.fromhex("000000000000f03f") + b"\x10\xe8\x07"
    assert remote._varint(-1) == b"\xff" * 9 + b"\x01"  # int64 -1: ten bytes
    request = remote.encode_write_request([([("__name__", "m")], [(1000, 1.0)])])
    label = b"\x0a\x08__name__\x12\x01m"
    sample = b"\x09" + bytes.fromhex("000000000000f03f") + b"\x10\xe8\x07"
    series = b"\x0a" + bytes([len(label)]) + label + b"\x12" + bytes([len(sample)]) + sample
    assert request == b"\x0a" + bytes([len(series)]) + series
    assert remote.sort_labels({"b": "1", "__name__": "m", "a": "2"}) == [
        ("__name__", "m"), ("a", "2"), ("b", "1")]
    import cramjam
    assert bytes(cramjam.snappy.decompress_raw(remote.compress(request))) == request


def test_basic_auth_and_headers_sent(tmp_path, monkeypatch):
    """A real HTTP server on loopback records what arrives."""
    import http.server
    import threading
    seen: list = []  # the requests' headers (names case-insensitive)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the standard library's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("RU_TEST_REMOTE_PASSWORD", "s3cret")
        pub = publisher(f"http://127.0.0.1:{server.server_port}/api/v1/write", tmp_path, "ru_auth",
                        basic_auth_user="reports", basic_auth_password_env="RU_TEST_REMOTE_PASSWORD",
                        headers={"X-Scope-OrgID": "tenant-1"}, timeout=10)
        pub.enqueue([stored(DAYS[0], [["1", "2", "x"]])])
        assert pub.flush().ok
    finally:
        server.shutdown()
        server.server_close()
    headers = seen[0]
    assert headers["Authorization"] == "Basic cmVwb3J0czpzM2NyZXQ="  # reports:s3cret
    assert headers["X-Scope-OrgID"] == "tenant-1"
    assert headers["Content-Encoding"] == "snappy"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"


def test_missing_password_variable_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("RU_TEST_NO_SUCH_VARIABLE", raising=False)
    with pytest.raises(PublishError, match="'RU_TEST_NO_SUCH_VARIABLE' is not set"):
        publisher("http://127.0.0.1:1/api/v1/write", tmp_path, "ru_x", basic_auth_user="u",
                  basic_auth_password_env="RU_TEST_NO_SUCH_VARIABLE")
