# Crashes instead of one-line errors (issue 14, item 10, the runtime part):
# a ragged output file under status and --dry-run, calendars that run off
# the end of Python's dates. Each is one line naming the file or value; the
# other reports still run. (Config-time checks are in test_config_hostile.py.)

from __future__ import annotations

from testkit import NOW, make_folder, run_cli, tsv

SCRIPT = """\
#!/bin/sh
printf 'date\\tv\\n%s\\t1\\n' "$1"
"""

CONFIG = """\
reports:
  ragged:
    type: script
    granularity: days
    starts: 2026-01-01
  fine:
    type: script
    granularity: days
    starts: 2026-01-01
"""

# Two shapes of a ragged file: one the quick date scan rejects, one it lets
# through (a row with too many fields beside one with too few).
RAGGED = [tsv("date\tv", "2026-01-01\t1\t2", "2026-01-02"),
          tsv("date\ta\tb", "2026-01-01\t1\t2\t3", "2026-01-02\t1")]


def folder_with(tmp_path, ragged_text):
    folder = make_folder(tmp_path, CONFIG, scripts={"ragged": SCRIPT, "fine": SCRIPT})
    out = tmp_path / "out"
    out.mkdir()
    (out / "ragged.tsv").write_text(ragged_text)
    return folder, out


def test_status_and_dry_run_on_a_ragged_output_file(tmp_path):
    for number, text in enumerate(RAGGED):
        folder, out = folder_with(tmp_path / str(number), text)
        code, stdout, stderr = run_cli("status", folder, out, "--now", NOW)
        assert code == 1, stderr
        assert "internal error" not in stderr and "Traceback" not in stderr
        code, stdout, stderr = run_cli("run", folder, out, "--dry-run", "--now", NOW)
        assert code == 0, stderr
        assert "internal error" not in stderr and "Traceback" not in stderr
        assert "fine: 4 intervals: 2026-01-01..2026-01-04" in stdout
        code, stdout, stderr = run_cli("run", folder, out, "--now", NOW)
        assert "internal error" not in stderr and "Traceback" not in stderr
        assert (out / "ragged.tsv").read_text() == text  # never overwritten
        assert (out / "fine.tsv").exists()
    # The shape the scan rejects names the line in status and the dry run.
    folder, out = folder_with(tmp_path / "named", RAGGED[0])
    stdout = run_cli("status", folder, out, "--now", NOW)[1]
    assert "file error: " in stdout and "ragged.tsv:2: 3 fields, but the header has 2" in stdout
    stdout = run_cli("run", folder, out, "--dry-run", "--now", NOW)[1]
    assert "ragged: cannot plan: " in stdout


def test_more_data_points_than_the_calendar_holds(tmp_path):
    folder, out = folder_with(tmp_path, tsv("date\tv"))
    config = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(config + "    max_data_points: 1000000\n")
    for command in (["status"], ["run", "--dry-run"], ["run"], ["validate"]):
        code, stdout, stderr = run_cli(*command, folder, out, "--now", NOW)
        assert "internal error" not in stderr and "Traceback" not in stderr, (command, stderr)
        assert "max_data_points" in stdout + stderr, (command, stdout, stderr)
    # The broken report is refused at load; the other one ran.
    assert (out / "ragged.tsv").read_text().count("\n") == 5


def test_a_now_outside_the_calendar_is_one_line(tmp_path):
    folder, out = folder_with(tmp_path, tsv("date\tv"))
    for command in (["status"], ["run", "--dry-run"], ["run"]):
        code, stdout, stderr = run_cli(*command, folder, out, "--now", "9999-12-31")
        assert code == 2, (command, stderr)
        assert "'9999-12-31' is outside 1900..9000" in stderr
        assert "Traceback" not in stderr and "internal error" not in stderr
