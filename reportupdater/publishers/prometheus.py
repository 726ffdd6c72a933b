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
import time
from datetime import UTC, datetime
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
# read_url: how long the store may take to show what it took (read again,
# more slowly, until then). Prometheus shows it at once; VictoriaMetrics
# (1.79) a new series up to ~10 s late unless /internal/force_flush
# answers, and for a timestamp written twice either value, changing from
# query to query (measured; neither a restart nor a force_merge settles it).
# A sample still missing or different then fails the publish.
READ_BACK_SECONDS = 30.0
READ_BACK_DOC = "docs/publishing.md#reading-back-what-the-store-kept-read_url"
# PromQL label regexes are RE2: these are its metacharacters (re.escape
# escapes Python's wider set, space and "-" included).
_REGEX_SPECIAL = set("\\.+*?()|[]{}^$")
_MAX_MATCHER_CHARS = 20000  # a longer alternation of label values: filtered here instead
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
        # The query API: the same credentials and headers, not remote write's own.
        self._read_headers = {name: value for name, value in self._headers.items()
                              if name not in HEADERS or name == "User-Agent"}
        self._warned_replaces: set[str] = set()  # reports warned about this run (no read_url)
        self._read_back_failed: dict[Path, str] = {}  # batch -> its read-back error, this run
        self._read_back = 0  # samples read back as sent, this flush

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
        replaces: set[str] = set()  # reports whose batch changes values published before
        for each in stored:
            target = self.targets.get(each.report)
            if target is not None:
                samples = self.samples(each, target)
                items += samples
                if each.replaces and samples:
                    replaces.add(each.report)
        self.queue.add(items, {"replaces": sorted(replaces)} if replaces else None)
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
                raise _http_error(exc) from None
            if self.settings.read_url is not None:
                self.read_back(series)

    # ------------------------------------------------------------ read back
    #
    # Prometheus's receiver answers 2xx to another value for a timestamp of
    # its out-of-order head and keeps the old one (docs/publishing.md): only
    # reading back shows it. One instant query per metric of the request, a
    # range selector covering its timestamps (raw samples, on Prometheus and
    # VictoriaMetrics alike), its labels narrowed by matchers; the series
    # sent are picked out of the answer exactly.

    def read_back(self, series: Mapping[tuple[tuple[str, str], ...], Mapping[int, float]]) -> None:
        """Raise ReadBackError naming the first sample the store does not
        hold as sent; RemoteWriteError (4xx) or OSError (unreachable) when
        the query API does not answer."""
        deadline = time.monotonic() + READ_BACK_SECONDS
        delay = 0.05
        total = sum(len(points) for points in series.values())
        while True:
            wrong = self._compare(series, self._query(series))
            if not wrong:
                self._read_back += total
                return
            if time.monotonic() >= deadline:
                raise ReadBackError(wrong, total)
            # VictoriaMetrics shows a write seconds late (and a value written
            # over another one, either of them): flush its buffers, read again.
            self._force_flush()
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _force_flush(self) -> None:
        """Ask VictoriaMetrics to make what it took searchable. Any answer
        will do: Prometheus has no such endpoint (404), a VictoriaMetrics
        with -forceFlushAuthKey says 401; the reads are retried either way."""
        import urllib.request
        request = urllib.request.Request(f"{self.settings.read_url}/internal/force_flush",
                                         headers=self._read_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                response.read()
        except OSError:
            pass

    def _query(self, series: Mapping[tuple[tuple[str, str], ...], Mapping[int, float]]
               ) -> dict[tuple[tuple[str, str], ...], dict[int, float]]:
        """{labels: {timestamp ms: value}} the store holds around the samples sent."""
        by_metric: dict[str, list[tuple[tuple[str, str], ...]]] = {}
        for labels in series:
            by_metric.setdefault(dict(labels)["__name__"], []).append(labels)
        found: dict[tuple[tuple[str, str], ...], dict[int, float]] = {}
        for metric, members in by_metric.items():
            stamps = [stamp for labels in members for stamp in series[labels]]
            first, last = min(stamps), max(stamps)
            # (last + 1 s - window, last + 1 s]: every timestamp sent, whichever
            # end the store's range includes.
            expr = f"{_selector(metric, members)}[{last - first + 2000}ms]"
            data = self._get_query(expr, (last + 1000) / 1000)
            for result in data:
                labels = tuple(sort_labels(result.get("metric", {})))
                points = found.setdefault(labels, {})
                for stamp, text in result.get("values", ()):
                    points[round(float(stamp) * 1000)] = float(text)
        return found

    def _get_query(self, expr: str, at: float) -> list[dict[str, Any]]:
        import json
        import urllib.error
        import urllib.parse
        import urllib.request
        body = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}", "nocache": "1"}).encode()
        request = urllib.request.Request(f"{self.settings.read_url}/api/v1/query", data=body,
                                         headers={**self._read_headers, "Content-Type":
                                                  "application/x-www-form-urlencoded"},
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, "read_url: ") from None
        except ValueError as exc:  # not JSON: not a query API
            raise RemoteWriteError(200, f"read_url: not a Prometheus query API answer ({exc})") from None
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise RemoteWriteError(200, f"read_url: not a Prometheus query API answer: "
                                        f"{str(answer)[:200]}")
        return list(data.get("result") or [])

    @staticmethod
    def _compare(series: Mapping[tuple[tuple[str, str], ...], Mapping[int, float]],
                 found: Mapping[tuple[tuple[str, str], ...], Mapping[int, float]]
                 ) -> list[tuple[tuple[tuple[str, str], ...], int, float, float | None]]:
        """(labels, timestamp ms, sent, kept or None) of every sample not held as sent."""
        wrong = []
        for labels, points in series.items():
            held = found.get(labels, {})
            for stamp, value in sorted(points.items()):
                kept = held.get(stamp)
                if kept is None or not same_value(value, kept):
                    wrong.append((labels, stamp, value, kept))
        return wrong

    def flush(self) -> FlushResult:
        """Send the queue oldest first and stop at the first batch not taken,
        so that batches arrive in order (a later value for a timestamp wins)."""
        result = FlushResult()
        self._read_back = 0  # samples read back as sent (read_url), this flush
        kept_other = False  # the read-back failed: the runner's one error line says it all
        for path in self.queue.files():
            document = self.queue.read(path)
            if document is None:
                continue
            self._warn_replaces(document)
            if path in self._read_back_failed:  # this run already: the store will not change its mind
                result.error, result.refused, kept_other = self._read_back_failed[path], True, True
                break
            try:
                self.send(document["items"])
            except ReadBackError as exc:
                # Answered 2xx, but the store kept something else: the batch
                # stays, every run fails (the runner's error line says it all).
                result.error = f"{self.settings.remote_write_url}: {exc}"
                result.refused = kept_other = True
                self._read_back_failed[path] = result.error
                break
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
        if result.error is not None and not kept_other:
            log.warning("prometheus: %s: %d samples sent, %d kept in %s for the next run",
                        result.error, result.delivered, result.waiting, self.queue.folder)
        elif result.delivered:
            log.info("prometheus: sent %d samples to %s%s", result.delivered,
                     self.settings.remote_write_url, "" if self.settings.read_url is None else
                     f", {self._read_back} read back from {self.settings.read_url}: as sent")
        return result

    def _warn_replaces(self, document: Mapping[str, Any]) -> None:
        """Without read_url, once per run and report: a batch replacing values
        published before may be answered 2xx and dropped (Prometheus)."""
        if self.settings.read_url is not None:
            return
        for report in document.get("replaces") or ():
            if report not in self._warned_replaces:
                self._warned_replaces.add(report)
                log.warning("prometheus: report %r: values published before are sent again with "
                            "other values (a rerun or lookback change): Prometheus's receiver may "
                            "answer 2xx and keep the old ones silently; set prometheus: read_url "
                            "to check what the store kept (%s)", report, READ_BACK_DOC)

    def close(self) -> None:
        pass  # urllib keeps no connection open


class RemoteWriteError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status} {detail}".strip())
        self.status = status


class ReadBackError(Exception):
    """The store answered 2xx but does not hold what was sent (read_url)."""

    def __init__(self, wrong: Sequence[tuple[tuple[tuple[str, str], ...], int, float, float | None]],
                 total: int):
        labels, stamp, sent, kept = wrong[0]
        when = datetime.fromtimestamp(stamp / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        held = "nothing" if kept is None else f"{_number(kept)}"
        more = f" ({len(wrong)} of the request's {total} samples differ or are missing)"
        super().__init__(
            f"the store answered 2xx but kept another value: {_series_text(labels)} at {when}: "
            f"sent {_number(sent)}, the store holds {held}{more}; it does not take a changed "
            f"value for a timestamp it holds (Prometheus keeps the first one of its out-of-order "
            f"head): see {READ_BACK_DOC}")
        self.wrong = list(wrong)


def same_value(sent: float, kept: float) -> bool:
    """Whether the store holds `sent`: exactly, except a fraction to 11
    significant digits (VictoriaMetrics stores about 12: 1/3 comes back as
    0.333333333333); integers, counts, always exactly."""
    if sent == kept:
        return True
    return not sent.is_integer() and math.isclose(sent, kept, rel_tol=1e-11, abs_tol=0.0)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def _series_text(labels: Sequence[tuple[str, str]]) -> str:
    named = dict(labels)
    inner = ",".join(f'{name}="{_quoted(value)}"' for name, value in labels if name != "__name__")
    return f"{named.get('__name__', '')}{{{inner}}}"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _selector(metric: str, members: Sequence[Sequence[tuple[str, str]]]) -> str:
    """metric{...}: a label every series has, matched (= for one value, =~ an
    alternation for several); the answer may hold more series than sent."""
    values: dict[str, set[str]] = {}
    for number, labels in enumerate(members):
        named = {name: value for name, value in labels if name != "__name__"}
        if number == 0:
            values = {name: {value} for name, value in named.items()}
        else:
            values = {name: seen | {named[name]} for name, seen in values.items() if name in named}
    matchers = []
    for name, seen in sorted(values.items()):
        if len(seen) == 1:
            matchers.append(f'{name}="{_quoted(next(iter(seen)))}"')
            continue
        alternation = "|".join(sorted("".join("\\" + c if c in _REGEX_SPECIAL else c for c in value)
                                      for value in seen))
        if len(alternation) <= _MAX_MATCHER_CHARS:
            matchers.append(f'{name}=~"{_quoted(alternation)}"')
    return f"{metric}{{{','.join(matchers)}}}"


def _http_error(exc: Any, what: str = "") -> Exception:
    """An HTTP error answer as what send() raises: RemoteWriteError (refused
    for good) or OSError (an outage: the next run tries again)."""
    detail = _first_line(exc.read())
    if exc.code >= 500 and _TOO_OLD.search(detail):
        # Prometheus 2.42 answers 500 "too old sample" for a sample
        # before its out-of-order window: no retry will change that.
        return RemoteWriteError(exc.code, f"{what}{detail}".strip())
    if exc.code == 429 or exc.code >= 500:
        # Overloaded or broken for now: the next run sends again.
        return OSError(f"{what}HTTP {exc.code} {detail}".strip())
    return RemoteWriteError(exc.code, f"{what}{detail}".strip())


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_line(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0][:300] if text else ""
