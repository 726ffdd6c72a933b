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

import yaml

from . import atomic, publish, store, templates
from .config import ConfigError, FolderConfig, load

_REPORT_ERROR = re.compile(r"^(?P<file>.*?): (?:report '(?P<report>[^']*)'|database '(?P<database>[^']*)')"
                           r"(?:: key '(?P<key>[^']*)')?: ")
_FILE_LIKE = re.compile(r"(/|\.(txt|csv|tsv|list|dblist|yaml)$)")


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _key_lines(config_path: Path) -> dict[tuple[str, str, str | None], int]:
    """(section, name, key or None) -> 1-based line, from the YAML node marks."""
    lines: dict[tuple[str, str, str | None], int] = {}
    try:
        root = yaml.compose(config_path.read_text(encoding="utf-8"),
                            Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return lines
    if not isinstance(root, yaml.MappingNode):
        return lines
    for section_key, section in root.value:
        if section_key.value not in ("reports", "databases") or not isinstance(section, yaml.MappingNode):
            continue
        kind = "report" if section_key.value == "reports" else "database"
        for name_node, body in section.value:
            lines[(kind, str(name_node.value), None)] = name_node.start_mark.line + 1
            if isinstance(body, yaml.MappingNode):
                for key_node, _ in body.value:
                    lines[(kind, str(name_node.value), str(key_node.value))] = key_node.start_mark.line + 1
    return lines


def _with_line(message: str, lines: dict[tuple[str, str, str | None], int]) -> str:
    match = _REPORT_ERROR.match(message)
    if not match:
        return message
    kind = "report" if match.group("report") is not None else "database"
    name = match.group("report") if kind == "report" else match.group("database")
    key = (match.group("key") or "").split(".")[0] or None
    line = lines.get((kind, name, key)) or lines.get((kind, name, None))
    if line is None:
        return message
    return f"{match.group('file')}:{line}:{message[len(match.group('file')) + 1:]}"


def validate(query_folder: Path, config_path: Path | None = None,
             output_folder: Path | None = None) -> Findings:
    findings = Findings()
    try:
        folder = load(query_folder, config_path)
    except ConfigError as exc:
        findings.problems.append(str(exc))
        return findings
    lines = _key_lines(folder.config_path)
    findings.problems += [_with_line(str(error), lines) for error in folder.errors]
    findings.warnings += [_with_line(warning, lines) for warning in folder.warnings]
    _check_explode_files(folder, lines, findings)
    _check_graphite(folder, lines, output_folder, findings)
    return findings


def _check_explode_files(folder: FolderConfig, lines, findings: Findings) -> None:
    # A token naming no file is, by the original's rule, the one value; a
    # token that looks like a file name is almost surely a missing file.
    for report in folder.reports.values():
        for name, values in report.explode_by.items():
            if len(values) == 1 and _FILE_LIKE.search(values[0]) and not (folder.query_folder / values[0]).exists():
                line = lines.get(("report", report.key, "explode_by"), "")
                findings.problems.append(
                    f"{folder.config_path}:{line}: report '{report.key}': key 'explode_by.{name}': "
                    f"file {values[0]!r} does not exist (it would be taken as the one value)")


def _check_graphite(folder: FolderConfig, lines, output_folder: Path | None, findings: Findings) -> None:
    if folder.graphite is not None:
        try:
            publish.load_lookups(folder.graphite)
        except publish.PublishError as exc:
            findings.problems.append(str(exc))  # names the lookups file and line
    senders: dict[tuple[str, str], str] = {}  # (path template, metric) -> first report
    for report in folder.reports.values():
        if report.graphite is None:
            continue
        where = (f"{folder.config_path}:{lines.get(('report', report.key, 'graphite'), '')}: "
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
