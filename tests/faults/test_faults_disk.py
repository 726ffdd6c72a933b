# A full disk and read-only outputs, for real: a 64 KiB tmpfs as the output
# folder (ENOSPC), a tmpfs remounted read-only (EROFS), and a run as an
# unprivileged user on a folder it may not write (EACCES; root ignores
# permission bits, so chmod alone proves nothing here). Writing fails
# cleanly: the previous file stays as it was, no temp file is left, the
# error names the path, the other reports still run, the exit status is 1.

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import datetime, UTC
from pathlib import Path

import pytest

from testkit import NOW, files_under, make_folder, run_cli, tsv

from faultkit import remount_read_only

REPO = Path(__file__).resolve().parents[2]

SMALL = """\
#!/bin/sh
printf 'date\\tvalue\\n%s\\t1\\n' "$1"
"""

# 3 KB a row: 35 days are 105 KB, more than the 64 KiB tmpfs holds.
BIG = """\
#!/bin/sh
printf 'date\\tfiller\\n%s\\t%3000s\\n' "$1" "$1"
"""

CONFIG = """\
reports:
  small1:
    type: script
    execute: small
    granularity: days
    starts: 2026-01-03
  big:
    type: script
    granularity: days
    starts: 2025-12-01
  small2:
    type: script
    execute: small
    granularity: days
    starts: 2026-01-03
"""

DONE = tsv("date\tvalue", "2026-01-03\t1", "2026-01-04\t1")


def df(folder: Path) -> int:
    """Free bytes."""
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def test_disk_full_fails_that_file_only_and_keeps_the_previous_one(tmp_path, tmpfs):
    folder = make_folder(tmp_path, CONFIG, scripts={"small": SMALL, "big": BIG})
    code, _, stderr = run_cli("run", folder, tmp_path / "reference", "--now", NOW)
    assert code == 0, stderr
    reference = files_under(tmp_path / "reference")
    assert len(reference["big.tsv"]) > 100_000

    out = tmpfs(tmp_path / "out", "64k")
    previous = "".join(reference["big.tsv"].splitlines(keepends=True)[:4])  # 3 days, 9 KB
    (out / "big.tsv").write_text(previous)
    free = df(out)

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1, stderr
    assert f"ERROR big: {out / 'big.tsv'}: cannot write: No space left on device" in stderr, stderr
    assert "Traceback" not in stderr
    assert (out / "big.tsv").read_text() == previous
    assert files_under(out) == {"small1.tsv": DONE, "big.tsv": previous, "small2.tsv": DONE}
    versions = out / ".reportupdater-versions"  # bookkeeping: which version computed what
    assert sorted(path.name for path in out.rglob(".*")
                  if versions not in (path, path.parent)) == [".reportupdater.lock"]  # no temp file
    assert all(not path.name.startswith(".") for path in versions.iterdir())
    # Its space is back: only the two small files, the run's lock and the
    # reports' version records were added.
    assert df(out) >= free - (3 + len(list(versions.iterdir()))) * 4096

    # With room again, the next run completes it.
    done = subprocess.run(["mount", "-o", "remount,size=1m", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 0, stderr
    assert files_under(out) == reference


GRAPHITE_CONFIG = """\
graphite:
  host: 127.0.0.1
  port: {port}
reports:
  graph:
    type: script
    execute: many
    granularity: days
    starts: 2025-12-01
    graphite:
      path: "g.{{_metric}}"
      metrics: {{{metrics}}}
"""

COLUMNS = [f"c{n:02d}" for n in range(1, 21)]

# 20 columns a row: 35 rows are 700 points, about 20 KB of queue.
MANY = """\
#!/bin/sh
printf 'date'; for c in {columns}; do printf '\\t%s' $c; done; printf '\\n'
printf '%s' "$1"; for c in {columns}; do printf '\\t1234567.%s' ${{c#c}}; done; printf '\\n'
""".format(columns=" ".join(COLUMNS))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when this returns: nothing listens


def test_disk_full_while_queueing_graphite_points_never_queues_a_partial_batch(tmp_path, tmpfs):
    # Graphite is unreachable, so every point stays in the queue to be read.
    config = GRAPHITE_CONFIG.format(port=closed_port(),
                                    metrics=", ".join(f"m{c[1:]}: {c}" for c in COLUMNS))
    folder = make_folder(tmp_path, config, scripts={"many": MANY})
    out = tmpfs(tmp_path / "out", "64k")
    (out / "filler").write_bytes(b"\0" * 48000)  # 16 KiB left: less than the queue batch
    queue = out / ".graphite-queue"

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert f"ERROR graph: {out / 'graph.tsv'}: cannot write: No space left on device" in stderr \
        or re.search(r"ERROR graph: Graphite queue \S+: No space left on device", stderr), stderr
    assert not (out / "graph.tsv").exists()
    for path in queue.rglob("*.txt"):  # whatever was queued is whole points
        text = path.read_text()
        assert text.endswith("\n") and all(
            re.fullmatch(r"g\.m\d\d 1234567\.\d\d \d+", line) for line in text.splitlines()), \
            f"{path} holds a cut batch: ...{text[-60:]!r}"

    # With room again: every point of every stored row is queued.
    (out / "filler").unlink()
    code, _, stderr = run_cli("run", folder, out, "--now", NOW)
    assert code == 0, stderr
    rows = (out / "graph.tsv").read_text().splitlines()[1:]
    assert len(rows) == 35
    queued = {line for path in queue.rglob("*.txt") for line in path.read_text().splitlines()}
    wanted = {f"g.m{c[1:]} 1234567.{c[1:]} "
              f"{int(datetime.fromisoformat(row[:10]).replace(tzinfo=UTC).timestamp())}"
              for row in rows for c in COLUMNS}
    assert wanted <= queued
    assert sorted(path.name for path in out.rglob(".*.tmp")) == []


# ------------------------------------------------------------- read-only

EXPLODED = """\
reports:
  first:
    type: script
    execute: small
    granularity: days
    starts: 2026-01-03
  locked:
    type: script
    execute: small
    granularity: days
    starts: 2026-01-01
    explode_by:
      wiki: enwiki, dewiki
  last:
    type: script
    execute: small
    granularity: days
    starts: 2026-01-03
"""

OLD = tsv("date\tvalue", "2026-01-01\t1", "2026-01-02\t1")


def test_read_only_mount_fails_those_files_and_keeps_them(tmp_path, tmpfs):
    folder = make_folder(tmp_path, EXPLODED, scripts={"small": SMALL})
    out = tmp_path / "out"
    locked = tmpfs(out / "locked", "1m")
    (locked / "enwiki.tsv").write_text(OLD)
    remount_read_only(locked)

    code, _, stderr = run_cli("run", folder, out, "--now", NOW)

    assert code == 1, stderr
    assert "Traceback" not in stderr
    for wiki in ("enwiki", "dewiki"):
        assert (f"ERROR locked wiki={wiki}: {locked / f'{wiki}.tsv'}: cannot write: "
                "Read-only file system") in stderr, stderr
    assert (locked / "enwiki.tsv").read_text() == OLD
    assert sorted(path.name for path in locked.iterdir()) == ["enwiki.tsv"]
    assert files_under(out) == {"first.tsv": DONE, "last.tsv": DONE, "locked/enwiki.tsv": OLD}


def _unprivileged() -> tuple[list[str], int, int]:
    """A command prefix that runs as nobody, or skip."""
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root")
    for prefix in (["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"],
                   ["runuser", "-u", "nobody", "--"]):
        if shutil.which(prefix[0]) and subprocess.run(prefix + ["true"]).returncode == 0:
            break
    else:
        pytest.skip("neither setpriv nor runuser can switch to nobody here")
    done = subprocess.run(prefix + [sys.executable, "-c", "import reportupdater"], cwd="/",
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"nobody cannot run this checkout's Python ({sys.executable}, {REPO}): "
                    f"{done.stderr.strip().splitlines()[-1:]}")
    return prefix, user.pw_uid, user.pw_gid


def test_read_only_folder_for_an_unprivileged_run(tmp_path):
    prefix, uid, gid = _unprivileged()
    # pytest's tmp_path is private to root (0700): work in a folder nobody can reach.
    base = Path(tempfile.mkdtemp(prefix="ru-faults-"))
    try:
        base.chmod(0o755)
        folder = make_folder(base, EXPLODED, scripts={"small": SMALL})
        out = base / "out"
        (out / "locked").mkdir(parents=True)
        (out / "locked" / "enwiki.tsv").write_text(OLD)
        (out / "locked" / "enwiki.tsv").chmod(0o444)
        for path in (folder, out):
            os.chown(path, uid, gid)
        (out / "locked").chmod(0o555)  # root's, and nobody may not write it

        done = subprocess.run(prefix + [sys.executable, "-m", "reportupdater", "run", str(folder),
                                        str(out), "--now", NOW],
                              capture_output=True, text=True, timeout=60, cwd="/",
                              env={**os.environ, "PYTHONPATH": str(REPO)})

        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        for wiki in ("enwiki", "dewiki"):
            assert (f"ERROR locked wiki={wiki}: {out / 'locked' / f'{wiki}.tsv'}: cannot write: "
                    "Permission denied") in done.stderr, done.stderr
        assert (out / "locked" / "enwiki.tsv").read_text() == OLD
        assert sorted(path.name for path in (out / "locked").iterdir()) == ["enwiki.tsv"]
        assert files_under(out) == {"first.tsv": DONE, "last.tsv": DONE, "locked/enwiki.tsv": OLD}
        assert (out / "first.tsv").stat().st_uid == uid  # it really ran as nobody
    finally:
        shutil.rmtree(base, ignore_errors=True)
