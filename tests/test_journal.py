# The journal of computed results (reportupdater/journal.py): what a
# checkpoint writes is exactly what replay puts into the output files; a torn
# last frame is ignored, damage applies nothing, replay is idempotent, and a
# real SIGKILL mid-append loses at most the unfinished checkpoint.

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reportupdater import journal, store
from reportupdater.datatypes import Result
from reportupdater.lock import FolderLock

REPO = Path(__file__).resolve().parent.parent
HEADER = ("date", "edits", "editors")


def rows_for(day: int, wiki: str) -> tuple[tuple[str, ...], ...]:
    return ((f"2025-01-{day:02d}", str(day * 7 + len(wiki)), str(day % 5)),)


def expected_text(out: Path, relative: str, merges: list[tuple[str, tuple, tuple]],
                  fill: str = "", keep: bool = False) -> str:
    """The file as store.OutputFile would hold it after the same merges."""
    output = store.OutputFile.load(out / relative, root=out)
    for label, header, rows in merges:
        output.merge(Result(header, rows), {label}, fill, keep_column_order=keep)
    return output.text()


def append_days(entry: journal.Journal, out: Path, wiki: str, days: range) -> list:
    merges = []
    for day in days:
        label, rows = f"2025-01-{day:02d}", rows_for(day, wiki)
        entry.append("edits", out / "edits" / f"{wiki}.tsv", label, HEADER, rows)
        merges.append((label, HEADER, rows))
    return merges


def test_append_checkpoint_replay_round_trip(tmp_path):
    out = tmp_path / "out"
    with FolderLock(out) as lock:
        entry = journal.Journal.open(lock)
        a = append_days(entry, out, "enwiki", range(1, 11))
        b = append_days(entry, out, "dewiki", range(5, 8))
        assert entry.checkpoint() > 0
        entry.append("edits", out / "edits" / "enwiki.tsv", "2025-01-20", HEADER, ())  # no rows
        a.append(("2025-01-20", HEADER, ()))
        entry.checkpoint()
        entry.close()  # the run "crashes" here: no output file was written
        assert not (out / "edits").exists()
        want_a = expected_text(out, "edits/enwiki.tsv", a)
        want_b = expected_text(out, "edits/dewiki.tsv", b)
        outcome = journal.replay_into(lock)
    assert outcome.found and outcome.intervals == 14 and outcome.files == 2
    assert outcome.torn_bytes == 0 and outcome.damaged is None and not outcome.failed_files
    assert (out / "edits" / "enwiki.tsv").read_text() == want_a
    assert (out / "edits" / "dewiki.tsv").read_text() == want_b
    assert not journal.journal_path(out).exists()


def test_cells_a_tsv_line_cannot_hold_round_trip(tmp_path):
    out = tmp_path / "out"
    odd = (("2025-01-01", "a\tb", "line\nend"), ("2025-01-01", "\udcff", "é"))
    with FolderLock(out) as lock:
        entry = journal.Journal.open(lock)
        entry.append("r", out / "r.tsv", "2025-01-01", HEADER, odd)
        entry.checkpoint()
        entry.close()
        read = journal.read_journal(journal.journal_path(out).read_bytes())
    assert [record.rows for record in read.records] == [odd]


def test_nothing_pending_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with FolderLock(out) as lock:
        entry = journal.Journal.open(lock)
        assert entry.checkpoint() == 0
        assert not journal.journal_path(out).exists()
        assert journal.replay_into(lock).found is False


@pytest.mark.parametrize("damage", ["torn", "garbled"])
def test_a_torn_or_garbled_last_frame_is_ignored(tmp_path, damage):
    out = tmp_path / "out"
    with FolderLock(out) as lock:
        entry = journal.Journal.open(lock)
        kept = append_days(entry, out, "enwiki", range(1, 4))
        first = entry.checkpoint()
        append_days(entry, out, "enwiki", range(4, 9))
        second = entry.checkpoint()
        entry.close()
        path = journal.journal_path(out)
        data = bytearray(path.read_bytes())
        assert len(data) == first + second
        if damage == "torn":
            data = data[:first + second // 2]
        else:
            data[first + second - 3] ^= 0x20
        path.write_bytes(bytes(data))
        want = expected_text(out, "edits/enwiki.tsv", kept)
        outcome = journal.replay_into(lock)
    assert outcome.intervals == 3 and outcome.torn_bytes == len(data) - first
    assert (out / "edits" / "enwiki.tsv").read_text() == want
    assert not path.exists()


def test_damage_before_a_whole_frame_applies_nothing_and_is_named(tmp_path, caplog):
    out = tmp_path / "out"
    with FolderLock(out) as lock:
        entry = journal.Journal.open(lock)
        append_days(entry, out, "enwiki", range(1, 4))
        entry.checkpoint()
        append_days(entry, out, "enwiki", range(4, 9))
        entry.checkpoint()
        entry.close()
        path = journal.journal_path(out)
        data = bytearray(path.read_bytes())
        data[20] ^= 0x01  # inside the first frame's payload
        path.write_bytes(bytes(data))
        outcome = journal.replay_into(lock)
    assert outcome.damaged == out / (journal.JOURNAL_NAME + journal.DAMAGED_SUFFIX)
    assert outcome.intervals == 0 and not (out / "edits").exists()
    assert not path.exists() and outcome.damaged.read_bytes() == bytes(data)
    assert any(journal.JOURNAL_NAME in record.getMessage() and "nothing of it was applied"
               in record.getMessage() for record in caplog.records)


def test_a_record_with_another_header_merges_as_store_merges(tmp_path):
    out = tmp_path / "out"
    (out / "edits").mkdir(parents=True)
    (out / "edits" / "enwiki.tsv").write_text(
        "date\tedits\told\n2024-12-30\t1\tx\n2024-12-31\t2\ty\n2025-01-02\t9\tz\n")
    new_header = ("date", "editors", "edits")
    merges = [("2025-01-01", HEADER, rows_for(1, "enwiki")),
              ("2025-01-02", new_header, (("2025-01-02", "4", "5"),))]
    want = expected_text(out, "edits/enwiki.tsv", merges)
    pivot_merges = [("2025-01-03", ("date", "zz", "aa"), (("2025-01-03", "1", "2"),))]
    (out / "pivot.tsv").write_text("date\tmm\n2025-01-01\t3\n")
    want_pivot = expected_text(out, "pivot.tsv", pivot_merges, fill="0", keep=True)
    with FolderLock(out) as lock:
        entry = journal.Journal.open(lock)
        for label, header, rows in merges:
            entry.append("edits", out / "edits" / "enwiki.tsv", label, header, rows)
        for label, header, rows in pivot_merges:
            entry.append("pivot", out / "pivot.tsv", label, header, rows, fill="0",
                         keep_column_order=True)
        entry.checkpoint()
        entry.close()
        journal.replay_into(lock)
    assert (out / "edits" / "enwiki.tsv").read_text() == want
    assert want.startswith("date\teditors\tedits\told\n2024-12-30\t\t1\tx\n")
    assert (out / "pivot.tsv").read_text() == want_pivot == "date\tmm\tzz\taa\n2025-01-01\t3\t0\t0\n2025-01-03\t0\t1\t2\n"


def test_replay_is_idempotent(tmp_path):
    """A crash during replay leaves the journal; replaying it again over the
    files already written gives the same bytes."""
    out = tmp_path / "out"
    (out / "edits").mkdir(parents=True)
    (out / "edits" / "enwiki.tsv").write_text("date\tedits\n2024-12-31\t1\n")
    with FolderLock(out) as lock:
        entry = journal.Journal.open(lock)
        append_days(entry, out, "enwiki", range(1, 6))
        entry.append("edits", out / "edits" / "enwiki.tsv", "2025-01-03", ("date", "x", "edits"),
                     (("2025-01-03", "7", "8"),))
        append_days(entry, out, "dewiki", range(1, 3))
        entry.checkpoint()
        entry.close()
        saved = journal.journal_path(out).read_bytes()
        journal.replay_into(lock)
        once = {path: path.read_bytes() for path in (out / "edits").iterdir()}
        journal.journal_path(out).write_bytes(saved)
        journal.replay_into(lock)
        twice = {path: path.read_bytes() for path in (out / "edits").iterdir()}
    assert once == twice and len(once) == 2


def test_open_refuses_an_existing_journal_and_an_unheld_lock(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(journal.JournalError, match="lock"):
        journal.Journal.open(FolderLock(out))
    with FolderLock(out) as lock:
        journal.journal_path(out).write_bytes(b"")
        with pytest.raises(journal.JournalError, match="replay it first"):
            journal.Journal.open(lock)
        assert journal.replay_into(lock).found  # an empty journal: nothing to apply, removed
        assert not journal.journal_path(out).exists()


def test_an_unreadable_output_file_is_named_and_left_as_it_was(tmp_path):
    out = tmp_path / "out"
    (out / "edits").mkdir(parents=True)
    (out / "edits" / "enwiki.tsv").write_text("no line end")
    with FolderLock(out) as lock:
        entry = journal.Journal.open(lock)
        append_days(entry, out, "enwiki", range(1, 3))
        good = append_days(entry, out, "dewiki", range(1, 3))
        entry.checkpoint()
        entry.close()
        want = expected_text(out, "edits/dewiki.tsv", good)
        outcome = journal.replay_into(lock)
    assert len(outcome.failed_files) == 1 and "enwiki.tsv" in outcome.failed_files[0]
    assert (out / "edits" / "enwiki.tsv").read_text() == "no line end"
    assert (out / "edits" / "dewiki.tsv").read_text() == want


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from reportupdater import journal
    from reportupdater.lock import FolderLock

    out = Path(sys.argv[1])
    per_checkpoint = int(sys.argv[2])
    header = ("date", "wiki", "value")
    with FolderLock(out) as lock:
        entry = journal.Journal.open(lock)
        n = 0
        while True:
            for _ in range(per_checkpoint):
                wiki = f"w{n % 50}"
                entry.append("r", out / "r" / f"{wiki}.tsv", "2025-01-01",
                             header, (("2025-01-01", wiki, str(n)),))
                n += 1
            entry.checkpoint()
            print(n, flush=True)
""")


def test_sigkill_mid_append_replays_exactly_the_checkpointed_records(tmp_path):
    """A real child appending and checkpointing in a loop, killed with
    SIGKILL at some point: the journal holds whole checkpoints only, and at
    least every checkpoint the child saw complete."""
    out = tmp_path / "out"
    per_checkpoint = 2000
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(per_checkpoint)],
                             stdout=subprocess.PIPE, text=True, env=env)
    seen = 0
    try:
        for line in child.stdout:  # a hang is caught by the timeout below
            seen = int(line)
            if seen >= 5 * per_checkpoint:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert seen >= 5 * per_checkpoint
    data = journal.journal_path(out).read_bytes()
    read = journal.read_journal(data)
    assert read.damage is None
    count = len(read.records)
    assert count % per_checkpoint == 0 and count >= seen
    # Each record's value is its sequence number: the replayed ones are exactly 0..count-1.
    assert [int(record.rows[0][2]) for record in read.records] == list(range(count))
    with FolderLock(out) as lock:
        outcome = journal.replay_into(lock)
    assert outcome.intervals == count
    # Every wiki's file holds the last value appended for it among those records.
    for wiki_index in range(50):
        last = max(n for n in range(count) if n % 50 == wiki_index)
        assert (out / "r" / f"w{wiki_index}.tsv").read_text() == (
            f"date\twiki\tvalue\n2025-01-01\tw{wiki_index}\t{last}\n")
