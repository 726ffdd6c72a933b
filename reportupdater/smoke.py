# Operating: smoke-test one interval of one report.
#
# Computes the interval holding a date, for every explode combination (or
# the ones asked for), and returns the TSV text exactly as `run` would store
# it for that interval, the rendered query, and the Graphite lines it would
# send (and the engine's result itself, which compare.py merges into the
# stored file). May touch: the report's database or script (to compute).
# Writes no file, takes no lock, sends nothing.

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from . import intervals, publish, store
from .config import ConfigError, FolderConfig, ReportConfig, find_report
from .datatypes import EngineError, Granularity, Interval, Job, Result
from .engines import SiteDefaults, engine_class
from .engines.base import render_query, script_argv
from .pivot import merge_shaped


@dataclass
class SmokeResult:
    explode: tuple[tuple[str, str], ...]
    file: Path                  # where `run` would store it, relative to OUTPUT
    query: str = ""             # the rendered template, or the script's command line
    text: str = ""              # the TSV as it would be stored (header + this interval's rows)
    graphite: list[str] = field(default_factory=list)
    error: str | None = None
    result: Result | None = None  # what the engine returned, before any pivot


def interval_of(report: ReportConfig, day: date) -> Interval:
    start = intervals.truncate(intervals.in_zone(day, report.zone), report.granularity)
    return Interval(start, intervals.step(start, report.granularity),
                              report.granularity is Granularity.HOURS)


def select_combinations(report: ReportConfig,
                        wanted: dict[str, list[str]]) -> list[tuple[tuple[str, str], ...]]:
    for name, values in wanted.items():
        if name not in report.explode_by:
            raise ConfigError(f"report '{report.key}' has no explode_by placeholder {name!r} "
                              f"(it has: {', '.join(report.explode_by) or 'none'})",
                              section="reports", report=report.key, key="explode_by")
        unknown = [value for value in values if value not in report.explode_by[name]]
        if unknown:
            raise ConfigError(f"report '{report.key}': {unknown[0]!r} is not one of the "
                              f"values of {name!r}", section="reports", report=report.key,
                              key=f"explode_by.{name}")
    return [combination for combination in report.combinations()
            if all(dict(combination)[name] in values for name, values in wanted.items())]


def smoke(folder: FolderConfig, report_key: str, day: date, wanted: dict[str, list[str]],
          site: SiteDefaults = SiteDefaults()) -> list[SmokeResult]:
    report = find_report(folder, report_key)
    interval = interval_of(report, day)
    engine = engine_class(report.type)(folder, site)
    lookups: dict[str, dict[str, str]] = {}
    results = []
    try:
        for explode in select_combinations(report, wanted):
            job = Job(report=report, interval=interval, explode=explode)
            result = SmokeResult(explode, Path(report.key, *(value for _, value in explode)))
            results.append(result)
            try:
                result.file = store.output_path(Path(), report.key, explode)
                if report.template is not None:
                    result.query = render_query(job)
                elif report.script_path is not None:  # a script report: its command line
                    result.query = shlex.join(script_argv(report.script_path, job))
                output = store.OutputFile(result.file)
                result.result = engine.run(job)
                merge_shaped(output, result.result, interval.label, report)
                result.text = output.text()
                if report.graphite is not None and folder.graphite is not None:
                    lookups = lookups or publish.load_lookups(folder.graphite)
                    points = publish.points_for_rows(report, explode, output.header, output.rows,
                                                     lookups, folder.graphite.prefix)
                    result.graphite = [point.line() for point in points]
            except (EngineError, store.StoreError, publish.PublishError) as exc:
                result.error = str(exc)
    finally:
        engine.close()
    return results
