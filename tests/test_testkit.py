"""testkit.run_cli, the in-process CLI: it prints, exits and fails as a fresh
`python -m reportupdater` would, and leaves this process as it found it."""

from __future__ import annotations

import logging
import os
import re
import signal
import time

import pytest

from testkit import NOW, CliTimeout, make_folder, run_cli, run_cli_process

SCRIPT_REPORT = """\
reports:
  r:
    type: script
    granularity: days
    starts: 2026-01-03
"""
PRINTS = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""


def test_same_output_and_exit_code_as_a_subprocess(tmp_path):
    folder = make_folder(tmp_path, SCRIPT_REPORT, scripts={"r": PRINTS})
    for args in (["--version"], ["status", folder, tmp_path / "out", "--now", NOW],
                 ["frobnicate", folder], ["smoke", folder, "r", "2026-01-03"],
                 ["run", folder, tmp_path / "missing" / "x", "-r", "nope", "--now", NOW]):
        assert without_times(run_cli(*args)) == without_times(run_cli_process(*args)), args


def without_times(result):
    return result._replace(stderr=re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", "", result.stderr))


def test_log_lines_of_the_run_are_on_its_stderr_and_nowhere_else(tmp_path, caplog):
    folder = make_folder(tmp_path, SCRIPT_REPORT, scripts={"r": PRINTS})
    code, stdout, stderr = run_cli("-l", "info", "run", folder, tmp_path / "out", "--now", NOW)
    assert code == 0, stderr
    assert stdout == ""
    assert " INFO " in stderr
    assert caplog.records == []  # pytest's handlers were off during the call
    second = run_cli("run", folder, tmp_path / "out", "--now", NOW)  # -l warning: quiet again
    assert second == (0, "", "")


def test_process_state_is_restored(tmp_path):
    folder = make_folder(tmp_path, SCRIPT_REPORT, scripts={"r": PRINTS})
    handlers = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    library_logger = logging.getLogger("reportupdater")
    before = (os.getcwd(), dict(os.environ), list(library_logger.handlers), library_logger.level)
    code, _, stderr = run_cli("run", "query", "out", "--now", NOW, cwd=tmp_path,
                              env={"TESTKIT_PROBE": "1"})
    assert code == 0, stderr
    assert (tmp_path / "out" / "r.tsv").exists()  # relative to cwd
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    assert (os.getcwd(), dict(os.environ), list(library_logger.handlers),
            library_logger.level) == before
    assert folder.exists()


def test_a_hang_fails_the_test_at_the_timeout(tmp_path):
    folder = make_folder(tmp_path, SCRIPT_REPORT, scripts={"r": "#!/bin/sh\nexec sleep 60\n"})
    started = time.monotonic()
    with pytest.raises(CliTimeout, match="no end after 1 s"):
        run_cli("run", folder, tmp_path / "out", "--now", NOW, "-j", "1", timeout=1)
    assert time.monotonic() - started < 30
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    # The stopped run left nothing behind that a fresh process would not have.
    folder = make_folder(tmp_path, SCRIPT_REPORT, scripts={"r": PRINTS}, name="again")
    code, stdout, stderr = run_cli("smoke", folder, "r", "2026-01-03")
    assert (code, stdout) == (0, "date\tvalue\n2026-01-03\t1\n"), stderr
