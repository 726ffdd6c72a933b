# Stage 5 of 5: publishing to a Prometheus-compatible store (config -> plan
# -> execute -> store -> publish).
#
# The remote-write protocol 1.0, which Prometheus's own receiver,
# VictoriaMetrics, Mimir and Thanos accept: a protobuf WriteRequest of
# TimeSeries{labels, samples}, snappy-compressed (block format), POSTed
# with the protocol's headers. One sample per `metric: column` and row; its
# timestamp is the interval start (UTC, ms), as with Graphite; its labels
# are the report's chosen explode keys and result columns, sorted, with
# __name__ first. Samples wait in OUTPUT/.prometheus-queue/ (see
# publishers/__init__.py) and leave it once the store answered 2xx.
# May touch: that queue folder and the remote-write endpoint.

from __future__ import annotations

import base64
import logging
import math
import os
import re
import struct
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

from . import FlushResult, PublishError, StoredInterval
from .prometheus_keys import (_LABEL_NAME, _METRIC_NAME, DEFAULT_TIMEOUT_SECONDS,  # noqa: F401
                              PrometheusSettings, PrometheusTarget)
from .queue import DurableQueue

log = logging.getLogger(__name__)

NAME = "prometheus"
SAMPLES_PER_REQUEST = 5000
_TOO_OLD = re.compile(r"too old sample|out of bounds", re.IGNORECASE)
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "reportupdater",
}


def check_metric_name(name: str, where: str) -> None:
    if not _METRIC_NAME.match(name) or name.startswith("__"):
        raise PublishError(f"{where}: metric name {name!r} is not a Prometheus metric name "
                           "([a-zA-Z_:][a-zA-Z0-9_:]*, no leading __)")


def check_label_name(name: str, where: str) -> None:
    if not _LABEL_NAME.match(name) or name.startswith("__"):
        raise PublishError(f"{where}: label {name!r} is not a Prometheus label name "
                           "([a-zA-Z_][a-zA-Z0-9_]*, no leading __)")


# ------------------------------------------------------ remote-write encoding
#
# Hand-written rather than the `protobuf` package: the protocol uses three
# tiny messages of fixed shape (strings, a double, an int64), which take a
# few lines to encode; `protobuf` would add a generated schema module and a
# ~1.5 MB dependency whose runtime/generated-code versions must match.


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64: negative numbers as their two's complement (10 bytes)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_label(name: str, value: str) -> bytes:
    return _field(1, name.encode("utf-8")) + _field(2, value.encode("utf-8"))


def encode_sample(value: float, timestamp_ms: int) -> bytes:
    # field 1 double (wire type 1: 0x09), field 2 int64 varint (wire type 0: 0x10)
    return b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(timestamp_ms)


def encode_write_request(series: Sequence[tuple[Sequence[tuple[str, str]],
                                                Sequence[tuple[int, float]]]]) -> bytes:
    """WriteRequest{timeseries: [TimeSeries{labels, samples}]}: labels as
    given (sorted, __name__ first), samples as (timestamp ms, value)."""
    out = bytearray()
    for labels, samples in series:
        body = b"".join(_field(1, encode_label(n, v)) for n, v in labels)
        body += b"".join(_field(2, encode_sample(v, t)) for t, v in samples)
        out += _field(1, body)
    return bytes(out)


def compress(data: bytes) -> bytes:
    import cramjam  # only runs that publish to Prometheus need it
    return bytes(cramjam.snappy.compress_raw(data))  # the block format, not the framed one


# ---------------------------------------------------------------- publisher


def sort_labels(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """__name__ first, then by name (the order the protocol asks for)."""
    return sorted(labels.items(), key=lambda item: (item[0] != "__name__", item[0]))


class PrometheusPublisher:
    """Queue samples of stored intervals; send them with remote write."""

    name = NAME

    def __init__(self, settings: PrometheusSettings, targets: Mapping[str, PrometheusTarget],
                 output_folder: Path, query_folder: Path):
        for report, target in targets.items():
            where = f"report '{report}': prometheus"
            if not target.metrics:
                raise PublishError(f"{where}: no metrics")
            for metric in target.metrics:
                check_metric_name(metric, where)
            for label in target.labels or ():
                check_label_name(label, where)
        for name in settings.headers:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise PublishError(f"prometheus: header name {name!r} is not valid")
        self.settings = settings
        self.targets = dict(targets)
        self.queue = DurableQueue(NAME, output_folder, query_folder)
        self._headers = {**HEADERS, **settings.headers}
        if settings.basic_auth_user is not None:
            variable = settings.basic_auth_password_env
            password = os.environ.get(variable, "") if variable else ""
            if variable and variable not in os.environ:
                raise PublishError(f"prometheus: basic_auth_password_env: the variable "
                                   f"{variable!r} is not set")
            token = base64.b64encode(f"{settings.basic_auth_user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def samples(self, each: StoredInterval, target: PrometheusTarget) -> list[list[Any]]:
        """[[labels as pairs], timestamp ms, value] for every metric of every row."""
        where = f"report '{each.report}': prometheus"
        columns = {name: index for index, name in enumerate(each.header)}
        for metric, column in target.metrics.items():
            if column not in columns:
                raise PublishError(f"{where}: metric {metric!r}: column {column!r} is not in the "
                                   f"output (columns: {', '.join(each.header)})")
        explode = dict(each.explode)
        label_names = list(target.labels) if target.labels is not None else list(explode)
        for label in label_names:
            if label not in explode and label not in columns:
                raise PublishError(f"{where}: label {label!r} is neither an explode key nor a "
                                   f"column (columns: {', '.join(each.header)})")
        timestamp = int(each.start_utc.timestamp()) * 1000
        out: list[list[Any]] = []
        for row in each.rows:
            labels: dict[str, str] = {}
            for label in label_names:
                value = row[columns[label]] if label in columns else explode[label]
                if value != "":  # an empty label value is no label in Prometheus
                    labels[label] = value
            for metric, column in target.metrics.items():
                text = row[columns[column]].strip()
                if not text:
                    continue
                try:
                    number = float(text)
                except ValueError:
                    raise PublishError(f"{where}: row {row[0]} metric {metric!r}: value {text!r} of "
                                       f"column {column!r} is not a number") from None
                if not math.isfinite(number):
                    raise PublishError(f"{where}: row {row[0]} metric {metric!r}: value {text!r} "
                                       "is not a finite number")
                pairs = sort_labels({**labels, "__name__": metric})
                bad = next((name for name, text in pairs if not _is_utf8(text)), None)
                if bad is not None:  # bytes the TSV kept as they were (surrogateescape)
                    raise PublishError(f"{where}: row {row[0]}: the value of label {bad!r} is "
                                       "not valid UTF-8")
                out.append([pairs, timestamp, number])
        return out

    def enqueue(self, stored: Sequence[StoredInterval]) -> int:
        items: list[list[Any]] = []
        for each in stored:
            target = self.targets.get(each.report)
            if target is not None:
                items += self.samples(each, target)
        self.queue.add(items)
        return len(items)

    def send(self, samples: Sequence[Sequence[Any]]) -> None:
        """One WriteRequest per SAMPLES_PER_REQUEST samples. Raises
        RemoteWriteError (the store refused: keep it) or OSError (unreachable)."""
        for start in range(0, len(samples), SAMPLES_PER_REQUEST):
            series: dict[tuple[tuple[str, str], ...], dict[int, float]] = {}
            for labels, timestamp, value in samples[start:start + SAMPLES_PER_REQUEST]:
                # The same series and timestamp twice in one batch: the later wins.
                series.setdefault(tuple(map(tuple, labels)), {})[int(timestamp)] = float(value)
            body = encode_write_request([(labels, sorted(points.items()))
                                         for labels, points in series.items()])
            import urllib.error  # here: config imports this module, and urllib.request loads OpenSSL
            import urllib.request
            request = urllib.request.Request(self.settings.remote_write_url, data=compress(body),
                                             headers=self._headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                detail = _first_line(exc.read())
                if exc.code >= 500 and _TOO_OLD.search(detail):
                    # Prometheus 2.42 answers 500 "too old sample" for a sample
                    # before its out-of-order window: no retry will change that.
                    raise RemoteWriteError(exc.code, detail) from None
                if exc.code == 429 or exc.code >= 500:
                    # Overloaded or broken for now: the next run sends again.
                    raise OSError(f"HTTP {exc.code} {detail}") from None
                raise RemoteWriteError(exc.code, detail) from None

    def flush(self) -> FlushResult:
        """Send the queue oldest first and stop at the first batch not taken,
        so that batches arrive in order (a later value for a timestamp wins)."""
        result = FlushResult()
        for path in self.queue.files():
            document = self.queue.read(path)
            if document is None:
                continue
            try:
                self.send(document["items"])
            except RemoteWriteError as exc:
                # A 4xx other than 429 (or a 5xx "too old sample", above)
                # says the request itself is wrong: a bad
                # URL or credentials, or samples the store will not take (too
                # old for Prometheus's window). Sending it again unchanged
                # fails again, and dropping it would lose data silently: it
                # stays queued, loudly, until an operator fixes the cause.
                result.error = f"{self.settings.remote_write_url}: refused: {exc}"
                result.refused = True
                log.error("prometheus: %s; the batch %s stays queued", result.error, path)
                break
            except ValueError as exc:  # not an http(s) URL: a setting to fix, not an outage
                result.error = f"{self.settings.remote_write_url}: {exc}"
                result.refused = True
                break
            except OSError as exc:
                result.error = f"{self.settings.remote_write_url}: {getattr(exc, 'reason', exc)}"
                break
            self.queue.done(path)
            result.delivered += len(document["items"])
        if result.error is not None:
            result.waiting = self.queue.size()
            log.warning("prometheus: %s: %d samples sent, %d kept in %s for the next run",
                        result.error, result.delivered, result.waiting, self.queue.folder)
        elif result.delivered:
            log.info("prometheus: sent %d samples to %s", result.delivered,
                     self.settings.remote_write_url)
        return result

    def close(self) -> None:
        pass  # urllib keeps no connection open


class RemoteWriteError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status} {detail}".strip())
        self.status = status


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_line(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0][:300] if text else ""
