"""Hive servers that stop answering: the run fails those intervals with one
line and goes on (no Spark here: real sockets on 127.0.0.1 that accept and
then say nothing, trickle, hang up, or a real Thrift server that hangs
mid-query)."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from testkit import NOW, assert_failed, files_under, make_folder, run_cli, tsv

FINE = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""

# A generous bound on the whole run: only a hang reaches it.
RUN_TIMEOUT = 90


def query_folder(tmp_path, url: str, starts: str = "2026-01-04"):
    """A hive report (timeout 3 s) on `url` from `starts`, and a script report."""
    return make_folder(tmp_path, config(url, starts),
                       files={"toggles.hql": "SELECT '{from_date}' AS date, 1 AS n"},
                       scripts={"fine": FINE})


def config(url: str, starts: str) -> str:
    return f"""\
databases:
  hive:
    url: "{url}"
reports:
  toggles:
    type: hive
    granularity: days
    starts: {starts}
    timeout: 3
  fine:
    type: script
    granularity: days
    starts: 2026-01-04
"""


@contextlib.contextmanager
def listener(serve: Callable[[socket.socket, threading.Event], None]) -> Iterator[int]:
    """A TCP listener on a free port of 127.0.0.1 that hands each accepted
    connection to `serve` (in a thread of its own); yields the port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(connection)
            threading.Thread(target=serve, args=(connection, stop), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()
        for connection in accepted:
            connection.close()


def silent(connection: socket.socket, stop: threading.Event) -> None:
    stop.wait()  # never a byte back


def trickling(connection: socket.socket, stop: threading.Event) -> None:
    """Answers the SASL start with a header promising 1000 bytes, then sends
    one every half second: no single read ever waits long."""
    connection.sendall(struct.pack(">BI", 2, 1000))
    while not stop.wait(0.5):
        try:
            connection.sendall(b"x")
        except OSError:
            return


def hanging_up(connection: socket.socket, stop: threading.Event) -> None:
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()  # with linger 0: a reset


def run(folder, out) -> tuple[int, str, float]:
    started = time.monotonic()
    code, _, stderr = run_cli("run", folder, out, "--now", NOW, timeout=RUN_TIMEOUT)
    return code, stderr, time.monotonic() - started


def assert_one_line_failure(stderr: str) -> None:
    """Only the runner's own log lines: no traceback, nothing printed bare."""
    assert "CRITICAL" not in stderr, stderr
    for line in stderr.splitlines():
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ [A-Z]+ ", line), stderr


URLS = {
    "NONE": "hive://analytics@127.0.0.1:{port}/default",
    "NOSASL": "hive://analytics@127.0.0.1:{port}/default?auth=NOSASL",
    "LDAP": "hive://analytics:secret@127.0.0.1:{port}/default?auth=LDAP",
}


@pytest.mark.parametrize("auth", sorted(URLS))
def test_a_server_that_accepts_and_never_answers_fails_each_interval_and_the_run_goes_on(
        tmp_path, auth):
    # Before: no socket timeout, the run waited for ever on the SASL
    # handshake (NONE, LDAP) or on OpenSession (NOSASL).
    with listener(silent) as port:
        folder = query_folder(tmp_path, URLS[auth].format(port=port), "2026-01-03")
        out = tmp_path / "out"
        code, stderr, _ = run(folder, out)
    assert code == 1, stderr
    for day in ("2026-01-03", "2026-01-04"):  # the broken connection was not kept
        assert_failed(stderr, f"toggles {day}",
                      f"Hive server at 127.0.0.1:{port} did not answer within 3 s")
    assert_one_line_failure(stderr)
    assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-04\t1")}


def test_a_server_that_trickles_bytes_is_cut_off_at_the_connect_timeout(tmp_path):
    # Each read gets a byte within the socket timeout: only the deadline on
    # the whole exchange ends it.
    with listener(trickling) as port:
        folder = query_folder(tmp_path, URLS["NONE"].format(port=port))
        out = tmp_path / "out"
        code, stderr, _ = run(folder, out)
    assert code == 1, stderr
    assert_failed(stderr, "toggles 2026-01-04",
                  f"Hive server at 127.0.0.1:{port} did not answer within 3 s")
    assert_one_line_failure(stderr)
    assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-04\t1")}


@pytest.mark.parametrize("auth", sorted(URLS))
def test_a_server_that_hangs_up_at_once_fails_with_one_line(tmp_path, auth):
    with listener(hanging_up) as port:
        folder = query_folder(tmp_path, URLS[auth].format(port=port))
        out = tmp_path / "out"
        code, stderr, _ = run(folder, out)
    assert code == 1, stderr
    assert_failed(stderr, "toggles 2026-01-04", f"cannot connect to Hive at 127.0.0.1:{port}: ")
    assert_one_line_failure(stderr)
    assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-04\t1")}


def test_a_server_whose_tcp_connect_never_completes_fails_at_the_connect_timeout(tmp_path):
    # A listener whose accept queue is full (backlog 0, one connection
    # waiting, never accepted): Linux drops the next SYNs. Before: the
    # connect waited for the kernel's SYN retries (about 2 minutes).
    backlog_full = socket.socket()
    backlog_full.bind(("127.0.0.1", 0))
    backlog_full.listen(0)
    port = backlog_full.getsockname()[1]
    waiting = socket.create_connection(("127.0.0.1", port))
    try:
        folder = query_folder(tmp_path, URLS["NONE"].format(port=port))
        out = tmp_path / "out"
        code, stderr, _ = run(folder, out)
    finally:
        waiting.close()
        backlog_full.close()
    assert code == 1, stderr
    assert_failed(stderr, "toggles 2026-01-04",
                  f"Hive server at 127.0.0.1:{port} did not answer within 3 s")
    assert_one_line_failure(stderr)
    assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-04\t1")}


def test_a_port_nobody_listens_on_fails_with_one_line(tmp_path):
    # Before: thrift's own "Could not connect to any of [...]" was printed
    # bare on stderr beside the ERROR line.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # bound once, never listened on: connections are refused
    folder = query_folder(tmp_path, URLS["NONE"].format(port=port))
    out = tmp_path / "out"
    code, stderr, _ = run(folder, out)
    assert code == 1, stderr
    assert_failed(stderr, "toggles 2026-01-04", f"cannot connect to Hive at 127.0.0.1:{port}: ")
    assert_one_line_failure(stderr)
    assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-04\t1")}


# -- a real HiveServer2 (Thrift, NOSASL) that opens sessions and then hangs


@contextlib.contextmanager
def thrift_server(hang_in: str) -> Iterator[int]:
    """A TCLIService server on a free port that answers OpenSession and the
    `USE` of the connect, then never answers `hang_in` (GetOperationStatus;
    or CancelOperation, while every poll says RUNNING)."""
    from TCLIService import TCLIService, ttypes
    from thrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
    from thrift.server.TServer import TThreadedServer
    from thrift.transport.TSocket import TServerSocket
    from thrift.transport.TTransport import TBufferedTransportFactory

    stop = threading.Event()
    ok = ttypes.TStatus(statusCode=ttypes.TStatusCode.SUCCESS_STATUS)
    handles = iter(range(1, 1_000_000))

    def handle() -> ttypes.THandleIdentifier:
        number = next(handles).to_bytes(16, "big")
        return ttypes.THandleIdentifier(guid=number, secret=number)

    class Handler:
        def OpenSession(self, request):  # noqa: N802 (Thrift's names)
            return ttypes.TOpenSessionResp(
                status=ok, serverProtocolVersion=request.client_protocol,
                sessionHandle=ttypes.TSessionHandle(sessionId=handle()))

        def ExecuteStatement(self, request):  # noqa: N802
            return ttypes.TExecuteStatementResp(status=ok, operationHandle=ttypes.TOperationHandle(
                operationId=handle(), operationType=ttypes.TOperationType.EXECUTE_STATEMENT,
                hasResultSet=True))

        def GetOperationStatus(self, request):  # noqa: N802
            if hang_in == "GetOperationStatus":
                stop.wait()
            return ttypes.TGetOperationStatusResp(
                status=ok, operationState=ttypes.TOperationState.RUNNING_STATE)

        def CancelOperation(self, request):  # noqa: N802
            stop.wait()
            return ttypes.TCancelOperationResp(status=ok)

        def CloseOperation(self, request):  # noqa: N802
            return ttypes.TCloseOperationResp(status=ok)

        def CloseSession(self, request):  # noqa: N802
            return ttypes.TCloseSessionResp(status=ok)

    server_socket = TServerSocket(host="127.0.0.1", port=0)
    server_socket.listen()
    port = server_socket.handle.getsockname()[1]
    server = TThreadedServer(TCLIService.Processor(Handler()), server_socket,
                             TBufferedTransportFactory(), TBinaryProtocolFactory(), daemon=True)

    def serve() -> None:
        # Not server.serve(): once the socket is closed, its loop logs
        # "'NoneType' object has no attribute 'accept'" for ever, burning a
        # core and landing in later tests' caplog.
        while not stop.is_set():
            try:
                client = server_socket.accept()
            except Exception:
                return  # closed by the fixture
            if client:
                threading.Thread(target=server.handle, args=(client,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield port
    finally:
        stop.set()
        server_socket.close()


@pytest.mark.parametrize("hang_in", ["GetOperationStatus", "CancelOperation"])
def test_a_server_that_stops_answering_mid_query_fails_the_interval(tmp_path, hang_in):
    # Before: a poll that never came back (or a cancel at the timeout that
    # never did) held the run for ever.
    with thrift_server(hang_in) as port:
        folder = query_folder(tmp_path, URLS["NOSASL"].format(port=port), "2026-01-03")
        out = tmp_path / "out"
        code, stderr, _ = run(folder, out)
    assert code == 1, stderr
    # The query's timeout (3 s) plus the margin: the connection is opened
    # again for the second day, which fails the same way.
    for day in ("2026-01-03", "2026-01-04"):
        assert_failed(stderr, f"toggles {day}",
                      f"Hive server at 127.0.0.1:{port} did not answer within 8 s")
    assert_one_line_failure(stderr)
    assert files_under(out) == {"fine.tsv": tsv("date\tvalue", "2026-01-04\t1")}
