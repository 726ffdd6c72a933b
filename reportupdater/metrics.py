# Operating: a run's figures in Prometheus text format, for node_exporter's
# textfile collector (`run --metrics-file PATH`). Written by atomic.write
# (temp beside, fsync, rename; no link followed), so the collector never
# reads half a file. May touch: that one file.

from __future__ import annotations

from datetime import datetime, UTC
from pathlib import Path

from . import atomic, intervals
from .config import FolderConfig
from .runner import RunSummary

_METRICS = [
    ("reportupdater_intervals_computed", "Intervals computed by the last run."),
    ("reportupdater_intervals_failed", "Intervals that failed in the last run."),
    ("reportupdater_intervals_waiting_retry", "Failed intervals waiting for their retry time."),
    ("reportupdater_report_seconds", "Seconds the last run spent on the report."),
    ("reportupdater_report_ok", "1 when the report's last run had no failure."),
    ("reportupdater_newest_data_age_seconds",
     "Seconds since the end of the report's newest interval in its outputs."),
]


def _number(value: float) -> str:
    """Exact: integers as integers (no 2.7762e+06), others as Python prints them."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(folder: FolderConfig, summary: RunSummary, now: datetime) -> str:
    folder_name = _label(str(folder.query_folder.resolve()))
    lines: list[str] = []
    rows: dict[str, list[tuple[str, float]]] = {name: [] for name, _ in _METRICS}
    for key, outcome in summary.reports.items():
        labels = f'folder="{folder_name}",report="{_label(key)}"'
        rows["reportupdater_intervals_computed"].append((labels, outcome.computed))
        rows["reportupdater_intervals_failed"].append((labels, outcome.failed))
        rows["reportupdater_intervals_waiting_retry"].append((labels, outcome.backing_off))
        rows["reportupdater_report_seconds"].append((labels, round(outcome.seconds, 3)))
        rows["reportupdater_report_ok"].append((labels, 1 if outcome.ok else 0))
        if outcome.newest:
            report = folder.reports[key]
            start = intervals.label_start(outcome.newest, report)
            end = intervals.step(start, report.granularity)
            rows["reportupdater_newest_data_age_seconds"].append(
                (labels, round((intervals.as_utc(now) - end).total_seconds())))
    for name, help_text in _METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{{{labels}}} {_number(value)}" for labels, value in rows[name]]
    run_labels = f'folder="{folder_name}"'
    lines += [
        "# HELP reportupdater_config_errors Configuration errors found by the last run.",
        "# TYPE reportupdater_config_errors gauge",
        f"reportupdater_config_errors{{{run_labels}}} {len(summary.config_errors)}",
        "# HELP reportupdater_last_run_timestamp_seconds When the last run ended (UTC epoch).",
        "# TYPE reportupdater_last_run_timestamp_seconds gauge",
        f"reportupdater_last_run_timestamp_seconds{{{run_labels}}} "
        f"{int(datetime.now(UTC).timestamp())}",
        "# HELP reportupdater_last_run_exit_code Exit status of the last run.",
        "# TYPE reportupdater_last_run_exit_code gauge",
        f"reportupdater_last_run_exit_code{{{run_labels}}} {summary.exit_code}",
    ]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    """Raises OSError (a link at PATH is refused, never written through)."""
    atomic.write(path, text.encode("utf-8"))
