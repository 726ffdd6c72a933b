# Operating: check a whole query folder without touching any database.
#
# Every problem the runner would meet (each report's keys, templates and
# their placeholders, scripts, explode files and values, databases) plus
# Graphite paths and lookups files, one line each with file:line where the
# YAML says where. May read: the query folder and, to learn result columns,
# the headers of existing output files. Writes nothing, connects to nothing.

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import atomic, publish, store, templates
from .config import ConfigError, ConfigWarning, FolderConfig, load

_FILE_LIKE = re.compile(r"(/|\.(txt|csv|tsv|list|dblist|yaml)$)")


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate(query_folder: Path, config_path: Path | None = None,
             output_folder: Path | None = None) -> Findings:
    findings = Findings()
    try:
        folder = load(query_folder, config_path)
    except ConfigError as exc:
        findings.problems.append(str(exc))
        return findings
    findings.problems += [error.located() for error in folder.errors]
    findings.warnings += [warning.located() if isinstance(warning, ConfigWarning) else warning
                          for warning in folder.warnings]
    _check_explode_files(folder, findings)
    _check_graphite(folder, output_folder, findings)
    return findings


def _line(folder: FolderConfig, report: str, key: str) -> int | str:
    # The key's own line only: one given in `defaults` shows none.
    return folder.key_lines.get(("report", report, key), "")


def _check_explode_files(folder: FolderConfig, findings: Findings) -> None:
    # A token naming no file is, by the original's rule, the one value; a
    # token that looks like a file name is almost surely a missing file.
    for report in folder.reports.values():
        for name, values in report.explode_by.items():
            named_file = folder.query_folder / values[0]
            if len(values) == 1 and _FILE_LIKE.search(values[0]) and not named_file.exists():
                line = _line(folder, report.key, "explode_by")
                findings.problems.append(
                    f"{folder.config_path}:{line}: report '{report.key}': key 'explode_by.{name}': "
                    f"file {values[0]!r} does not exist (it would be taken as the one value)")


def _check_graphite(folder: FolderConfig, output_folder: Path | None, findings: Findings) -> None:
    if folder.graphite is not None:
        try:
            publish.load_lookups(folder.graphite)
        except publish.PublishError as exc:
            findings.problems.append(str(exc))  # names the lookups file and line
    senders: dict[tuple[str, str], str] = {}  # (path template, metric) -> first report
    for report in folder.reports.values():
        if report.graphite is None:
            continue
        where = (f"{folder.config_path}:{_line(folder, report.key, 'graphite')}: "
                 f"report '{report.key}': key 'graphite.path'")
        for metric in report.graphite.metrics:
            other = senders.setdefault((report.graphite.path, metric), report.key)
            if other != report.key:
                findings.warnings.append(
                    f"{where}: metric {metric!r} goes to the same path as in report '{other}' "
                    f"({report.graphite.path!r}): where their values overlap, Graphite keeps the last sent")
        if folder.graphite is None:
            findings.problems.append(f"{where}: the report has a graphite section but the config "
                                     "has no top-level 'graphite' (host, port)")
        try:
            names = templates.fields(report.graphite.path)
        except templates.TemplateError as exc:
            findings.problems.append(f"{where}: {exc}")
            continue
        known = set(report.explode_by) | {"_metric"} | set(report.graphite.metrics.values())
        known |= _output_columns(report, output_folder)
        for name in sorted(names - known):
            near = difflib.get_close_matches(name, sorted(set(report.explode_by) | {"_metric"}), n=1)
            if near:  # a typo of a placeholder, not a result column
                findings.problems.append(f"{where}: {{{name}}} is not an explode_by placeholder "
                                         f"(did you mean {{{near[0]}}}?)")
            elif output_folder is None:
                # Without outputs the result columns are unknown: maybe one.
                findings.warnings.append(
                    f"{where}: {{{name}}} is not an explode_by placeholder or _metric; it must be a "
                    "result column (give OUTPUT_FOLDER to check against the output files)")
            else:
                findings.problems.append(
                    f"{where}: {{{name}}} is not an explode_by placeholder, _metric, or a column "
                    "of the output files")


def _output_columns(report, output_folder: Path | None) -> set[str]:
    if output_folder is None:
        return set()
    columns: set[str] = set()
    for explode in report.combinations():
        try:
            path = store.output_path(output_folder, report.key, explode)
            # atomic.read: no link followed, no FIFO waited on.
            header = atomic.read(path).split(b"\n", 1)[0].decode("utf-8", errors="replace")
            columns |= set(header.rstrip("\r").split("\t"))
        except (OSError, store.StoreError):
            continue
        break  # every file of a report has the same kind of header
    return columns
