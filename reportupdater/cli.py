# The command line: a thin layer over the library.
#
# Parses arguments, sets up logging to stderr, calls runner.run or
# reruns.request_rerun, and maps outcomes to exit codes: 0 done, 1 something
# failed, 2 usage or config error. Bad input is one line on stderr, never a
# traceback (tracebacks only at -l debug, for bugs).

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

from . import __version__
from . import config as config_stage
from . import dashboard, intervals, metrics, overview, publish, reruns, runner
from . import smoke as smoke_stage
from . import validate as validate_stage
from .engines import SiteDefaults
from .lock import FolderBusy, FolderLock, LockError

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
COMMANDS = ("run", "rerun", "status", "smoke", "validate", "graphite-backfill", "grafana")
log = logging.getLogger("reportupdater")


class UsageError(Exception):
    pass


class Terminated(BaseException):
    """SIGTERM, raised where the run is, so that scripts and queries it waits
    for are stopped on the way out (they run in sessions of their own)."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def parse_now(text: str) -> datetime:
    """--now: an ISO date or date-time, UTC unless it names an offset."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date-time like 2026-11-23T05:00")
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def parse_date(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def parse_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reportupdater",
        description="Compute the missing intervals of a query folder's reports into TSV files.",
        epilog="Without a command, 'run' is assumed, so the original "
               "'update_reports.py [options] QUERY_FOLDER OUTPUT_FOLDER' line works as is.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config-path", type=Path,
                        help="config file (default: QUERY_FOLDER/config.yaml)")
    common.add_argument("-l", "--log-level", type=parse_level, default="warning",
                        metavar="LEVEL", help=f"one of {', '.join(LOG_LEVELS)} (default: warning)")
    common.add_argument("--now", type=parse_now, metavar="DATETIME",
                        help="evaluate everything as if it were this UTC time, e.g. 2026-11-23T05:00")

    run = commands.add_parser("run", parents=[common], help="compute missing intervals (the default)",
                              description="Compute every missing interval of every report.")
    run.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    _add_output_folder(run, "go")
    run.add_argument("--no-graphite", action="store_true", help="send nothing to Graphite")
    run.add_argument("--hive-url", metavar="URL", default=os.environ.get("REPORTUPDATER_HIVE_URL"),
                     help="Hive server for hive reports of folders that configure none, "
                          "e.g. hive://user@host:10000/default (default: $REPORTUPDATER_HIVE_URL; "
                          "without either, such reports run 'hive -e')")
    run.add_argument("-r", "--report", action="append", default=[], metavar="REPORT",
                     help="only this report (repeatable)")
    run.add_argument("-j", "--jobs", type=_positive_int, default=0, metavar="N",
                     help=f"intervals computed at the same time (default: {runner.DEFAULT_JOBS}); "
                          "1 runs them one by one")
    run.add_argument("--max-intervals", type=_positive_int, metavar="N",
                     help="compute at most N intervals per report in this run (newest first by default)")
    run.add_argument("--diff", action="store_true",
                     help="print old and new rows of every stored date a recomputation changed")
    run.add_argument("--dry-run", action="store_true",
                     help="print what would be computed (intervals folded into ranges); run nothing")
    run.add_argument("--retry-failed-now", action="store_true",
                     help="retry failed intervals now, whatever their backoff says")
    run.add_argument("--metrics-file", type=Path, metavar="PATH",
                     help="write the run's figures in Prometheus text format (textfile collector)")

    status = commands.add_parser(
        "status", parents=[common], help="what is computed, missing or failing, per report",
        description="One line per report: granularity, first and last computed interval, missing "
                    "intervals, failures, pending reruns, next due time. Exit 0 when nothing is "
                    "missing or failing, 1 otherwise (usable as a monitoring check).")
    status.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    _add_output_folder(status, "are")
    status.add_argument("--json", action="store_true", help="JSON for machines")
    status.add_argument("-v", "--verbose", action="store_true", help="one line per explode combination")
    status.add_argument("-r", "--report", action="append", default=[], metavar="REPORT",
                        help="only this report (repeatable)")

    smoke = commands.add_parser(
        "smoke", parents=[common], help="compute one interval and print it; store nothing",
        description="Compute the interval of REPORT that holds DATE and print the TSV exactly as "
                    "'run' would store it. Writes no file, takes no lock, sends nothing.")
    smoke.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    smoke.add_argument("report", metavar="REPORT")
    smoke.add_argument("date", type=parse_date, metavar="DATE", help="YYYY-MM-DD, inside the interval")
    smoke.add_argument("--explode", action="append", default=[], metavar="NAME=VALUE",
                       help="only this explode value (repeatable), e.g. --explode wiki=enwiki")
    smoke.add_argument("--show-query", action="store_true",
                       help="print the rendered query (or the script's command line) on stderr")
    smoke.add_argument("--show-graphite", action="store_true",
                       help="print the Graphite lines it would send on stderr")
    smoke.add_argument("--hive-url", metavar="URL", default=os.environ.get("REPORTUPDATER_HIVE_URL"),
                       help="as for run")

    validate = commands.add_parser(
        "validate", parents=[common], help="check a query folder without touching any database",
        description="Report every problem of a query folder, one line each (file:line where "
                    "possible). Exit 1 if there is any.")
    validate.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    validate.add_argument("output_folder", type=Path, metavar="OUTPUT_FOLDER", nargs="?",
                          help="also learn result columns from existing outputs (graphite paths)")

    rerun = commands.add_parser("rerun", parents=[common], help="mark a date range to be recomputed",
                                description="Mark reports to be recomputed for [START, END) "
                                            "on the next run.")
    rerun.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    rerun.add_argument("start", type=parse_date, metavar="START", help="YYYY-MM-DD, inclusive")
    rerun.add_argument("end", type=parse_date, metavar="END", help="YYYY-MM-DD, exclusive")
    rerun.add_argument("-r", "--report", action="append", default=[], metavar="REPORT",
                       help="report to recompute (repeatable; default: all)")
    rerun.add_argument("--diff", action="store_true",
                       help="recompute now (into --output-folder) and print what changed")
    rerun.add_argument("--output-folder", type=Path, default=Path("output"), metavar="OUTPUT_FOLDER",
                       help="with --diff: where the TSV files are (default: ./output)")
    backfill = commands.add_parser(
        "graphite-backfill", parents=[common], help="re-send what the TSVs hold to Graphite",
        description="Send every point of the reports' TSV files to Graphite again "
                    "(a new Graphite server, a changed metric path).")
    backfill.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    _add_output_folder(backfill, "are")
    backfill.add_argument("-r", "--report", action="append", default=[], metavar="REPORT",
                          help="only this report (repeatable)")
    backfill.add_argument("--since", type=parse_date, metavar="DATE",
                          help="only rows from this date on (YYYY-MM-DD)")

    grafana = commands.add_parser(
        "grafana", parents=[common], help="print a Grafana dashboard for the folder's metrics",
        description="Print a Grafana dashboard (JSON) with one panel per Graphite metric and a "
                    "template variable per path placeholder. Import it in Grafana's UI or put "
                    "it in a provisioned dashboards folder.")
    grafana.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    grafana.add_argument("--title", help="dashboard title (default: reportupdater: <folder>)")
    return parser


def _add_output_folder(command: argparse.ArgumentParser, verb: str) -> None:
    command.add_argument("output_folder", type=Path, metavar="OUTPUT_FOLDER", nargs="?",
                         default=Path("output"), help=f"where the TSV files {verb} (default: ./output)")


class _Formatter(logging.Formatter):
    converter = time.gmtime  # log times in UTC, like everything else

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("reportupdater")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "run")  # the original's command line had no command word
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return int(exit.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    setup_logging(args.log_level)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C / SIGINT stops the run even when started from a shell or a
    # parent that ignores SIGINT (which Python would otherwise inherit).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        handler = {"run": _run, "rerun": _rerun, "status": _status, "smoke": _smoke,
                   "validate": _validate, "graphite-backfill": _graphite_backfill,
                   "grafana": _grafana}[args.command]
        return handler(args)
    except (config_stage.ConfigError, reruns.RerunError, UsageError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 1
    except Terminated:
        log.error("terminated by SIGTERM")
        return 128 + signal.SIGTERM
    except Exception as exc:  # a bug: one line, the traceback only at debug level
        log.critical("internal error: %s: %s", type(exc).__name__, exc,
                     exc_info=log.isEnabledFor(logging.DEBUG))
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _dry_run(args)
    progress = _Progress() if sys.stderr.isatty() else None
    options = runner.RunOptions(
        query_folder=args.query_folder, output_folder=args.output_folder,
        config_path=args.config_path, now=args.now, only_reports=tuple(args.report),
        graphite=not args.no_graphite, hive_url=args.hive_url,
        retry_failed_now=args.retry_failed_now, progress=progress, jobs=args.jobs,
        max_intervals=args.max_intervals, diff=_print_diff if args.diff else None)
    try:
        summary = runner.run(options)
    finally:
        if progress:
            progress.clear()
    if args.metrics_file and summary.folder is not None and not summary.busy:
        try:
            metrics.write(args.metrics_file, metrics.render(summary.folder, summary,
                                                            args.now or runner.utcnow()))
        except OSError as exc:
            log.error("%s: cannot write the metrics file: %s", args.metrics_file, exc.strerror)
            return max(summary.exit_code, 1)
    return summary.exit_code


class _Progress:
    """One self-erasing line on a terminal: intervals done of planned."""

    def __call__(self, name: str, done: int, total: int) -> None:
        sys.stderr.write(f"\r\x1b[K{name}: {done}/{total} intervals")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _load(args: argparse.Namespace) -> config_stage.FolderConfig:
    folder = config_stage.load(args.query_folder, args.config_path)
    for warning in folder.warnings:
        log.warning("%s", warning)
    for error in folder.errors:
        log.error("%s", error)
    unknown = [key for key in getattr(args, "report", []) or []
               if key not in folder.reports and key not in folder.broken_reports]
    if unknown:
        raise UsageError(f"{folder.config_path}: report {unknown[0]!r} is not in 'reports'")
    return folder


def _dry_run(args: argparse.Namespace) -> int:
    folder = _load(args)
    now = args.now or runner.utcnow()
    for view in overview.survey(folder, args.output_folder, now, tuple(args.report),
                                args.retry_failed_now):
        report = view.report
        if view.due == 0:
            print(f"{report.key}: starts {report.starts}, nothing due yet")
            continue
        if not view.schedule_due:
            upcoming = intervals.next_schedule_time(report.schedule, now)
            print(f"{report.key}: not scheduled now ({report.schedule}); next {upcoming:%Y-%m-%dT%H:%MZ}")
            continue
        for combination in view.combinations:
            name = f"{report.key} {combination.name}".strip()
            if combination.error:
                print(f"{name}: cannot plan: {combination.error}")
                continue
            todo = [i for i in combination.missing if i not in combination.backing_off]
            line = f"{name}: {len(todo)} intervals"
            if todo:
                line += f": {overview.compress(todo)}"
            if combination.backing_off:
                line += f" ({len(combination.backing_off)} waiting to retry: " \
                        f"{overview.compress(combination.backing_off)})"
            print(line)
    return 2 if folder.errors else 0


def _status(args: argparse.Namespace) -> int:
    folder = _load(args)
    now = args.now or runner.utcnow()
    views = overview.survey(folder, args.output_folder, now, tuple(args.report))
    data = overview.status_json(folder, views, args.verbose)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_status(data, args.verbose)
    return 0 if data["ok"] else 1


def _print_status(data: dict, verbose: bool) -> None:
    columns = ("REPORT", "GRAN", "FIRST", "LAST", "MISSING", "FAILING", "RERUNS", "NEXT DUE", "LAST FAILURE")
    rows = []
    for entry in data["reports"]:
        failure = entry["last_failure"]
        rows.append((entry["report"], entry["granularity"], entry["first"] or "-", entry["last"] or "-",
                     str(entry["missing"]), str(entry["failing"]), str(entry["pending_reruns"]),
                     entry["next_due"] or "-",
                     f"{failure['where']}: {failure['error']} (x{failure['attempts']})" if failure else "-"))
        for combination in entry.get("combinations", []) if verbose else []:
            name = " ".join(f"{k}={v}" for k, v in combination["explode"].items()) or "(file)"
            rows.append(("  " + name, "", combination["first"] or "-", combination["last"] or "-",
                         str(combination["missing"]), str(len(combination["failures"])), "", "",
                         combination["error"] or ""))
            for why in combination["why_missing"]:
                rows.append((f"    {why['intervals']}", "", "", "", "", "", "", "", why["reason"]))
    widths = [max(len(column), *(len(row[i]) for row in rows)) if rows else len(column)
              for i, column in enumerate(columns)]
    for row in [columns, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for entry in data["reports"] if verbose else []:
        for note in entry.get("notes", []):
            print(f"{entry['report']}: {note}")
    for error in data["config_errors"]:
        print(f"config error: {error}")


def _smoke(args: argparse.Namespace) -> int:
    folder = config_stage.load(args.query_folder, args.config_path)
    wanted: dict[str, list[str]] = {}
    for item in args.explode:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--explode {item!r}: expected NAME=VALUE, e.g. wiki=enwiki")
        wanted.setdefault(name, []).append(value)
    results = smoke_stage.smoke(folder, args.report, args.date, wanted,
                                SiteDefaults(hive_url=args.hive_url))
    failed = False
    for result in results:
        if len(results) > 1:
            print(f"==> {result.file} <==", flush=True)
        if args.show_query:
            sys.stderr.write(f"-- {result.file}\n{result.query.rstrip()}\n")
        if result.error:
            log.error("%s: %s", result.file, result.error)
            failed = True
            continue
        sys.stdout.write(result.text)
        sys.stdout.flush()
        if args.show_graphite:
            for line in result.graphite:
                sys.stderr.write(f"graphite: {line}\n")
    return 1 if failed else 0


def _validate(args: argparse.Namespace) -> int:
    findings = validate_stage.validate(args.query_folder, args.config_path, args.output_folder)
    for warning in findings.warnings:
        print(f"warning: {warning}")
    for problem in findings.problems:
        print(problem)
    if not findings.problems:
        print(f"{args.query_folder}: OK")
    return 1 if findings.problems else 0


def _rerun(args: argparse.Namespace) -> int:
    today = (args.now or runner.utcnow()).astimezone(timezone.utc).date()
    if not args.query_folder.is_dir():
        raise UsageError(f"{args.query_folder}: query folder does not exist")
    request = reruns.request_rerun(args.query_folder, args.start, args.end, args.report,
                                   today=today, config_path=args.config_path)
    print(f"{', '.join(request.reports)}: marked to be recomputed for "
          f"{args.start}..{args.end} (exclusive) on the next run ({request.path})")
    if not args.diff:
        return 0
    # Recompute now, so the analyst sees what the fix did.
    summary = runner.run(runner.RunOptions(
        query_folder=args.query_folder, output_folder=args.output_folder,
        config_path=args.config_path, now=args.now, only_reports=tuple(request.reports),
        hive_url=os.environ.get("REPORTUPDATER_HIVE_URL"), diff=_print_diff))
    return summary.exit_code


def _print_diff(text: str) -> None:
    print(text, flush=True)


def _graphite_backfill(args: argparse.Namespace) -> int:
    if not args.query_folder.is_dir():
        raise UsageError(f"{args.query_folder}: query folder does not exist")
    try:
        with FolderLock(args.output_folder):  # runs send the same queue
            folder = config_stage.load(args.query_folder, args.config_path)
            since = args.since.isoformat() if args.since else None
            summary = publish.backfill(folder, args.output_folder, args.report, since)
    except FolderBusy as exc:
        log.error("%s; try again when it is done", exc)
        return 1
    except LockError as exc:
        raise UsageError(str(exc)) from None
    for problem in summary.problems or []:
        log.error("%s", problem)
    print(f"{summary.queued} points queued; "
          f"{'all sent' if summary.sent else 'Graphite unreachable, kept for the next run'}")
    return 0 if summary.sent and not summary.problems else 1


def _grafana(args: argparse.Namespace) -> int:
    folder = config_stage.load(args.query_folder, args.config_path)
    for error in folder.errors:
        log.warning("%s", error)
    board = dashboard.build(folder, args.title)
    if not board["panels"]:
        log.warning("%s: no report has a 'graphite' section: the dashboard is empty",
                    folder.config_path)
    print(json.dumps(board, indent=2))
    return 0
