# The command line: a thin layer over the library.
#
# Parses arguments, sets up logging to stderr, calls runner.run,
# reruns.request_rerun, versions.changes or view.build_page, and maps
# outcomes to exit codes: 0 done, 1 something failed, 2 usage or config
# error. Bad input is one line on stderr, never a traceback (tracebacks
# only at -l debug, for bugs). Touches no file itself: the only file system
# look-up is whether a first word that is not a command names a directory
# (the original's command line had no command word).

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NoReturn

from . import __version__
from . import config as config_stage
from . import metrics, reruns, runner, versions
from . import plan as planning
from .engines import SiteDefaults
from .lock import FolderBusy, FolderLock, LockError
from .processes import inherit_child_environment

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
COMMANDS = ("run", "rerun", "status", "changes", "smoke", "validate", "publish-backfill",
            "graphite-backfill", "grafana", "schema", "view")
log = logging.getLogger("reportupdater")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (argparse prints the whole usage
    first, which in a cron mail or the journal buries the message)."""

    command_parsers: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Once(argparse.Action):
    """A single-valued option that changes what is computed or written. Given
    twice with different values it is a usage error rather than a silent pick
    of the last one (`--config-path A ... --config-path B` in a cron line
    would otherwise run B without a word)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given_options", {})
        if self.dest in given and given[self.dest][1] != values:
            first_option, first_value = given[self.dest]
            parser.error(f"{'/'.join(self.option_strings)} given twice "
                         f"({first_option} {_shown(first_value)}, {option_string} {_shown(values)}): "
                         "give it once")
        given[self.dest] = (option_string, values)
        setattr(namespace, self.dest, values)


def _shown(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


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
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date-time like 2026-11-23T05:00") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    if not NOW_EARLIEST <= moment < NOW_LATEST:
        # Calendar arithmetic near the ends of Python's dates overflows.
        raise argparse.ArgumentTypeError(f"{text!r} is outside {NOW_EARLIEST:%Y}..{NOW_LATEST:%Y}")
    return moment


NOW_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
NOW_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def parse_date(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def parse_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def build_parser() -> _Parser:
    parser = _Parser(
        prog="reportupdater",
        usage="%(prog)s [OPTIONS] COMMAND [ARGS]\n"
              "       %(prog)s [RUN OPTIONS] QUERY_FOLDER [OUTPUT_FOLDER]",
        description="Compute the missing intervals of a query folder's reports into TSV files.",
        epilog="Options may come before the command word as well as after it: "
               "'reportupdater -l info status Q O' is 'reportupdater status -l info Q O'. "
               "Without a command, 'run' is assumed when the first argument is an existing "
               "directory, so the original 'update_reports.py [options] QUERY_FOLDER "
               "OUTPUT_FOLDER' line works as is. 'reportupdater COMMAND --help' describes "
               "a command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Shown in the main --help; never parsed here: main() moves options that
    # precede the command word behind it, to the command's own parser.
    _add_common_options(parser.add_argument_group("options of every command"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", prog="reportupdater")

    common = _Parser(add_help=False)
    _add_common_options(common)

    run = commands.add_parser("run", parents=[common], help="compute missing intervals (the default)",
                              description="Compute every missing interval of every report.")
    run.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    _add_output_folder(run, "go")
    run.add_argument("--no-graphite", action="store_true", help="send nothing to Graphite")
    run.add_argument("--no-publish", action="store_true",
                     help="publish nothing (Graphite, tables, prometheus): a test run")
    run.add_argument("--hive-url", metavar="URL", action=_Once,
                     default=os.environ.get("REPORTUPDATER_HIVE_URL"),
                     help="Hive server for hive reports of folders that configure none, "
                          "e.g. hive://user@host:10000/default (default: $REPORTUPDATER_HIVE_URL; "
                          "without either, such reports run 'hive -e')")
    run.add_argument("-r", "--report", action="append", default=[], metavar="REPORT",
                     help="only this report (repeatable)")
    run.add_argument("-j", "--jobs", type=_positive_int, action=_Once, default=0, metavar="N",
                     help="intervals computed at the same time (default: twice the CPUs, at most 8); "
                          "1 runs them one by one")
    run.add_argument("--max-intervals", type=_positive_int, action=_Once, metavar="N",
                     help="compute at most N intervals per report in this run (newest first by default)")
    run.add_argument("--diff", action="store_true",
                     help="print old and new rows of every stored date a recomputation changed")
    run.add_argument("--dry-run", action="store_true",
                     help="print what would be computed (intervals folded into ranges); run nothing")
    run.add_argument("--retry-failed-now", action="store_true",
                     help="retry failed intervals now, whatever their backoff says")
    run.add_argument("--metrics-file", type=Path, action=_Once, metavar="PATH",
                     help="write the run's figures in Prometheus text format (textfile collector)")
    run.add_argument("--view", type=Path, action=_Once, metavar="PATH",
                     help="at the end, write the folder's HTML page there (as the 'view' command)")

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

    changes = commands.add_parser(
        "changes", parents=[common], help="what changed in each report's query, and which dates each "
                                          "version computed",
        description="Per report with more than one version (a changed template, script, helper "
                    "file or result key), the date ranges each version computed and the unified "
                    "diff from each older version's stored texts to today's. Reads only; exit 0.")
    changes.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    _add_output_folder(changes, "are")
    changes.add_argument("-r", "--report", action="append", default=[], metavar="REPORT",
                         help="only this report (repeatable)")

    smoke = commands.add_parser(
        "smoke", parents=[common], help="compute one interval and print it; store nothing",
        description="Compute the interval of REPORT that holds DATE and print the TSV exactly as "
                    "'run' would store it. Writes no file, takes no lock, sends nothing. With "
                    "--compare, print the rows the output folder stores for that date beside the "
                    "new ones instead, marking the values that differ: exit 0 when they are the "
                    "same, 3 when something differs, 1 when a computation failed.")
    smoke.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    smoke.add_argument("report", metavar="REPORT")
    smoke.add_argument("date", type=parse_date, metavar="DATE", help="YYYY-MM-DD, inside the interval")
    smoke.add_argument("--explode", action="append", default=[], metavar="NAME=VALUE",
                       help="only this explode value (repeatable), e.g. --explode wiki=enwiki")
    smoke.add_argument("--show-query", action="store_true",
                       help="print the rendered query (or the script's command line) on stderr")
    smoke.add_argument("--show-graphite", action="store_true",
                       help="print the Graphite lines it would send on stderr")
    smoke.add_argument("--hive-url", metavar="URL", action=_Once,
                       default=os.environ.get("REPORTUPDATER_HIVE_URL"),
                       help="as for run")
    smoke.add_argument("--compare", action="store_true",
                       help="compare with the rows stored for DATE in --output-folder "
                            "(checks a changed query before it is deployed; still writes nothing)")
    smoke.add_argument("--output-folder", type=Path, action=_Once, metavar="OUTPUT_FOLDER",
                       help="with --compare: where the TSV files are (default: ./output)")

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
    rerun.add_argument("--output-folder", type=Path, action=_Once, default=Path("output"),
                       metavar="OUTPUT_FOLDER",
                       help="with --diff: where the TSV files are (default: ./output)")
    publish_backfill = commands.add_parser(
        "publish-backfill", parents=[common], help="publish again what the TSVs hold",
        description="Publish every row of the reports' TSV files again, to every destination the "
                    "config sets up or to the one --to names (a new store, a changed table or "
                    "metric, a run with --no-publish). Publishing replaces what a store holds "
                    "for those intervals.")
    publish_backfill.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    _add_output_folder(publish_backfill, "are")
    publish_backfill.add_argument("--to", choices=("graphite", "tables", "prometheus"), action=_Once,
                                  help="only this destination (default: every one configured)")
    publish_backfill.add_argument("-r", "--report", action="append", default=[], metavar="REPORT",
                                  help="only this report (repeatable)")
    publish_backfill.add_argument("--since", type=parse_date, action=_Once, metavar="DATE",
                                  help="only rows from this date on (YYYY-MM-DD)")
    backfill = commands.add_parser(
        "graphite-backfill", parents=[common], help="re-send what the TSVs hold to Graphite",
        description="Send every point of the reports' TSV files to Graphite again "
                    "(a new Graphite server, a changed metric path).")
    backfill.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    _add_output_folder(backfill, "are")
    backfill.add_argument("-r", "--report", action="append", default=[], metavar="REPORT",
                          help="only this report (repeatable)")
    backfill.add_argument("--since", type=parse_date, action=_Once, metavar="DATE",
                          help="only rows from this date on (YYYY-MM-DD)")

    grafana = commands.add_parser(
        "grafana", parents=[common], help="print a Grafana dashboard for the folder's metrics",
        description="Print a Grafana dashboard (JSON) with one panel per Graphite metric and a "
                    "template variable per path placeholder. Import it in Grafana's UI or put "
                    "it in a provisioned dashboards folder.")
    grafana.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    grafana.add_argument("--title", action=_Once, help="dashboard title (default: reportupdater: <folder>)")
    grafana.add_argument("--datasource", choices=("graphite", "postgres", "prometheus"),
                         default="graphite", action=_Once,
                         help="graphite: the reports' graphite metrics; postgres: SQL panels on the "
                              "tables of the top-level 'tables'; prometheus: PromQL panels on the "
                              "reports' prometheus metrics (default: graphite)")
    grafana.add_argument("--output-folder", type=Path, action=_Once, default=Path("output"),
                         metavar="OUTPUT_FOLDER",
                         help="with --datasource postgres: where the TSV files are, to tell text "
                              "from number columns (default: ./output)")
    commands.add_parser(
        "schema", parents=[common], help="print the JSON Schema of config.yaml",
        description="Print the JSON Schema (draft 2020-12) of config.yaml, for an editor's YAML "
                    "extension to complete keys and underline mistakes. Checks of files and of "
                    "keys that depend on each other are 'validate's.")
    view = commands.add_parser(
        "view", parents=[common], help="write one HTML page of the folder's coverage and series",
        description="Write one self-contained HTML file (no server, no network) showing, per "
                    "report, the coverage of every output file (from the plan 'status' prints), "
                    "a chart per numeric column, and what the next run would do.")
    view.add_argument("query_folder", type=Path, metavar="QUERY_FOLDER")
    _add_output_folder(view, "are")
    view.add_argument("-o", "--output", type=Path, action=_Once, default=Path("report.html"),
                      metavar="PATH", help="the HTML file to write (default: ./report.html)")
    view.add_argument("-r", "--report", action="append", default=[], metavar="REPORT",
                      help="only this report (repeatable)")
    parser.command_parsers = dict(commands.choices)
    return parser


def _add_common_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--config-path", type=Path, action=_Once, metavar="PATH",
                        help="config file (default: QUERY_FOLDER/config.yaml)")
    # The one option that may be given twice (the last wins): it changes only
    # what is printed, and `./run-demo -l debug` appends to a line that has one.
    parser.add_argument("-l", "--log-level", type=parse_level, default="warning",
                        metavar="LEVEL", help=f"one of {', '.join(LOG_LEVELS)} (default: warning)")
    parser.add_argument("--now", type=parse_now, metavar="DATETIME", action=_Once,
                        help="evaluate everything as if it were this UTC time, e.g. 2026-11-23T05:00")


def _add_output_folder(command: argparse.ArgumentParser, verb: str) -> None:
    command.add_argument("output_folder", type=Path, metavar="OUTPUT_FOLDER", nargs="?",
                         default=Path("output"), help=f"where the TSV files {verb} (default: ./output)")


class _Formatter(logging.Formatter):
    converter = staticmethod(time.gmtime)  # log times in UTC, like everything else

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("reportupdater")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _takes_value(option: str, arity: dict[str, bool]) -> bool:
    """Whether `option` (as written) is followed by its value as the next word.
    Long options may be abbreviated, as argparse allows."""
    if option.startswith("--"):
        name, attached, _ = option.partition("=")
        if attached:
            return False
        if name in arity:
            return arity[name]
        kinds = {takes for known, takes in arity.items() if known.startswith(name)}
        return kinds == {True}  # unknown or ambiguous: argparse will say so
    return arity.get(option[:2], False) and len(option) == 2  # `-linfo` holds its value


def _positionals(argv: list[str], arity: dict[str, bool]) -> list[int]:
    """Indexes of the words that are not options or option values."""
    found: list[int] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            return found + list(range(index + 1, len(argv)))
        if word.startswith("-") and word != "-":
            index += 2 if _takes_value(word, arity) else 1
            continue
        found.append(index)
        index += 1
    return found


def command_line(argv: list[str], parser: _Parser) -> list[str]:
    """argv with the command word first, the form argparse parses.

    Options written before the command word are moved behind it, so that
    `-l info status Q O` is `status -l info Q O` for every command and
    option. Without a command word (the original's `update_reports.py
    [options] QUERY_FOLDER OUTPUT_FOLDER`), 'run' is assumed when the first
    argument is an existing directory; any other first word is refused as
    an unknown command.
    """
    arity = {option: action.nargs != 0
             for command in parser.command_parsers.values() for action in command._actions
             for option in action.option_strings}
    positionals = _positionals(argv, arity)
    first = positionals[0] if positionals else len(argv)
    leading = argv[:first]
    if "--version" in leading:
        return ["--version"]
    if "-h" in leading or "--help" in leading:
        command = argv[first] if first < len(argv) and argv[first] in COMMANDS else None
        return [command, "--help"] if command else ["--help"]
    if not positionals:
        if argv:
            parser.error(f"no command and no QUERY_FOLDER given; commands: {', '.join(COMMANDS)}")
        return argv
    word = argv[first]
    if word in COMMANDS:
        before = leading[:-1] if leading[-1:] == ["--"] else leading
        return [word, *before, *argv[first + 1:]]
    if Path(word).is_dir():
        return ["run", *argv]  # the original's command line had no command word
    suggestion = difflib.get_close_matches(word, COMMANDS, n=1)
    hint = f" (did you mean '{suggestion[0]}'?)" if suggestion else ""
    if any(Path(argv[i]).is_dir() for i in positionals[1:]):
        # a misspelt command before a real query folder
        parser.error(f"unknown command '{word}'{hint}; commands: {', '.join(COMMANDS)}")
    parser.error(f"unknown command or missing query folder '{word}'{hint}: no command has this "
                 f"name ({', '.join(COMMANDS)}) and no directory {word} exists")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(command_line(argv, parser))
        if extra:  # said by the command's parser, which names the command
            parser.command_parsers[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
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
    inherit_child_environment()  # commands started from now on inherit this process's environment
    try:
        handler = {"run": _run, "rerun": _rerun, "status": _status, "changes": _changes, "smoke": _smoke,
                   "validate": _validate, "graphite-backfill": _graphite_backfill,
                   "publish-backfill": _publish_backfill,
                   "grafana": _grafana, "schema": _schema, "view": _view}[args.command]
        return handler(args)
    except (config_stage.ConfigError, reruns.RerunError, runner.RunRefused, UsageError) as exc:
        log.error("%s", exc)
        return 2
    except BrokenPipeError:
        # The reader of standard output went away (`status | head -1`): not a
        # failure of ours, and nothing left to say to it.
        _drop_stdout()
        return 128 + signal.SIGPIPE
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
        graphite=not args.no_graphite, publish=not args.no_publish, hive_url=args.hive_url,
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
    if (args.view and summary.folder is not None and not summary.busy
            and not _write_view(args.view, summary.folder, args.output_folder,
                                args.now or runner.utcnow(), tuple(args.report))):
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
    try:
        config_stage.check_known_reports(folder, getattr(args, "report", []) or [])
    except config_stage.ConfigError as exc:
        raise UsageError(str(exc)) from None
    return folder


def _dry_run(args: argparse.Namespace) -> int:
    """What `run` with the same arguments would compute: the runner's own plan."""
    from . import overview
    folder = _load(args)
    now = args.now or runner.utcnow()
    limits = planning.Limits(max_intervals=args.max_intervals, retry_failed_now=args.retry_failed_now)
    waiting = overview.journal_waiting(args.output_folder)
    if waiting is not None:  # its intervals are counted below as to compute; the run replays them first
        print(waiting.line())
    for view in overview.survey(folder, args.output_folder, now, tuple(args.report), limits,
                                forced=True):
        plan = view.plan
        report = plan.report
        if plan.verdict is planning.Verdict.NOTHING_DUE:
            print(f"{report.key}: starts {report.starts}, nothing due yet")
            continue
        if plan.verdict is planning.Verdict.NOT_SCHEDULED:
            print(f"{report.key}: not scheduled now ({report.schedule}); "
                  f"next {plan.next_schedule:%Y-%m-%dT%H:%MZ}")
            continue
        for file_plan in plan.files:
            name = file_plan.name
            if file_plan.error:
                print(f"{name}: cannot plan: {file_plan.error}")
                continue
            line = f"{name}: {len(file_plan.todo)} intervals"
            if file_plan.todo:
                line += f": {planning.compress(file_plan.todo)}"
            if file_plan.later:
                line += f" ({len(file_plan.later)} left for later runs: {planning.compress(file_plan.later)})"
            if file_plan.backing_off:
                line += f" ({len(file_plan.backing_off)} waiting to retry: " \
                        f"{planning.compress(file_plan.backing_off)})"
            stale = [interval for interval in file_plan.todo if interval in file_plan.stale]
            if stale:
                line += (f" ({len(stale)} of them computed by an older version, recomputed "
                         f"(on_query_change): {planning.compress(stale)})")
            print(line)
    return 2 if folder.errors else 0


def _status(args: argparse.Namespace) -> int:
    from . import overview
    folder = _load(args)
    now = args.now or runner.utcnow()
    views = overview.survey(folder, args.output_folder, now, tuple(args.report))
    data = overview.status_json(folder, views, args.verbose,
                                overview.journal_waiting(args.output_folder))
    from .publishers import destinations
    data["queues"] = destinations.queue_sizes(folder, args.output_folder)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_status(data, args.verbose)
    return 0 if data["ok"] else 1


def _print_status(data: dict, verbose: bool) -> None:
    from . import overview
    columns = ("REPORT", "GRAN", "FIRST", "LAST", "MISSING", "FAILING", "RERUNS", "NEXT DUE", "LAST FAILURE")
    rows = []
    for entry in data["reports"]:
        failure = entry["last_failure"]
        rows.append((entry["report"], entry["granularity"], entry["first"] or "-", entry["last"] or "-",
                     str(entry["missing"]), str(entry["failing"]), str(entry["pending_reruns"]),
                     entry["next_due"] or "-",
                     f"{failure['where']}: {failure['error']} (x{failure['attempts']})" if failure
                     else f"file error: {entry['file_errors'][0]}" if entry.get("file_errors") else "-"))
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
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for entry in data["reports"]:
        for line in overview.version_lines(entry, verbose):
            print(line)
    for entry in data["reports"] if verbose else []:
        for note in entry.get("notes", []):
            print(f"{entry['report']}: {note}")
    for name, waiting in data.get("queues", {}).items():
        from .publishers.destinations import UNITS
        print(f"{name}: {waiting} {UNITS[name]} waiting in its queue")
    for error in data["config_errors"]:
        print(f"config error: {error}")
    if data.get("journal"):
        waiting = data["journal"]
        print(overview.JournalWaiting(Path(waiting["path"]), waiting["intervals"],
                                      waiting.get("damage")).line())


def _changes(args: argparse.Namespace) -> int:
    folder = _load(args)
    found = versions.changes(folder, args.output_folder, args.report)
    if not found:
        print("no report has more than one version")
    for report in found:
        print(f"{report.report}: {len(report.versions)} versions")
        for line in report.versions:
            used = (f"used {line.first_used} .. {line.last_used}" if line.first_used
                    else "has computed nothing yet")
            print(f"  {'today ' if line.current else 'older '} {line.id} ({used})")
            for first, last, count in line.ranges:
                span = first if first == last else f"{first}..{last}"
                print(f"    {span} ({count} file{'s' if count != 1 else ''})")
        for diff in report.diffs:
            sys.stdout.write(diff)
    return 2 if folder.errors else 0


def _smoke(args: argparse.Namespace) -> int:
    from . import smoke as smoke_stage
    folder = config_stage.load(args.query_folder, args.config_path)
    wanted: dict[str, list[str]] = {}
    for item in args.explode:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--explode {item!r}: expected NAME=VALUE, e.g. wiki=enwiki")
        wanted.setdefault(name, []).append(value)
    if args.output_folder is not None and not args.compare:
        raise UsageError("--output-folder is read only with --compare")
    if args.compare:
        return _smoke_compare(args, folder, wanted)
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


# smoke --compare: the new rows differ from the stored ones (not a failure).
COMPARE_DIFFERS = 3


def _smoke_compare(args: argparse.Namespace, folder: config_stage.FolderConfig,
                   wanted: dict[str, list[str]]) -> int:
    from . import compare as compare_stage
    try:
        comparisons = compare_stage.compare(
            folder, args.report, args.date, wanted, args.output_folder or Path("output"),
            args.now or runner.utcnow(), SiteDefaults(hive_url=args.hive_url))
    except compare_stage.CompareError as exc:
        raise UsageError(str(exc)) from None
    failed = differs = False
    for comparison in comparisons:
        if args.show_query:
            sys.stderr.write(f"-- {comparison.file}\n{comparison.smoke.query.rstrip()}\n")
        if comparison.error:
            log.error("%s: %s", comparison.file, comparison.error)
            failed = True
            continue
        sys.stdout.write(compare_stage.render(comparison))
        sys.stdout.flush()
        differs = differs or comparison.differs
        if args.show_graphite:
            for line in comparison.smoke.graphite:
                sys.stderr.write(f"graphite: {line}\n")
    return 1 if failed else COMPARE_DIFFERS if differs else 0


def _validate(args: argparse.Namespace) -> int:
    from . import validate as validate_stage
    findings = validate_stage.validate(args.query_folder, args.config_path, args.output_folder)
    for warning in findings.warnings:
        print(f"warning: {warning}")
    for problem in findings.problems:
        print(problem)
    if not findings.problems:
        print(f"{args.query_folder}: OK")
    return 1 if findings.problems else 0


def _rerun(args: argparse.Namespace) -> int:
    if args.now is not None:
        runner.check_now(args.now, runner.utcnow())
    today = (args.now or runner.utcnow()).astimezone(UTC).date()
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
    """A run's --diff output. A reader that goes away must not stop the run
    half-way (what it computed is stored all the same): the rest is dropped."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _drop_stdout()
        log.warning("standard output closed: the rest of the --diff output is dropped")


def _drop_stdout() -> None:
    """Point standard output at /dev/null, so that nothing written later (nor
    the flush at exit) raises BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _graphite_backfill(args: argparse.Namespace) -> int:
    from . import publish
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


def _publish_backfill(args: argparse.Namespace) -> int:
    """`graphite-backfill` for every destination (that command stays, as `--to graphite`)."""
    from .publishers import destinations
    if not args.query_folder.is_dir():
        raise UsageError(f"{args.query_folder}: query folder does not exist")
    try:
        with FolderLock(args.output_folder):  # runs send the same queues
            folder = config_stage.load(args.query_folder, args.config_path)
            config_stage.check_known_reports(folder, args.report)
            configured = [name for name in destinations.NAMES if getattr(folder, name) is not None]
            if args.to is not None and args.to not in configured:
                raise UsageError(f"{folder.config_path}: no top-level {args.to!r} section")
            if not configured:
                raise UsageError(f"{folder.config_path}: no destination (graphite, tables, "
                                 "prometheus) is set up")
            since = args.since.isoformat() if args.since else None
            summary = destinations.backfill(folder, args.output_folder,
                                            [args.to] if args.to else configured, args.report, since)
    except FolderBusy as exc:
        log.error("%s; try again when it is done", exc)
        return 1
    except LockError as exc:
        raise UsageError(str(exc)) from None
    for problem in summary.problems:
        log.error("%s", problem)
    for name, queued in summary.queued.items():
        state = "all delivered" if summary.delivered[name] else "not all delivered, kept for the next run"
        print(f"{name}: {queued} {destinations.UNITS[name]} queued; {state}")
    return 0 if all(summary.delivered.values()) and not summary.problems else 1


def _grafana_sql(folder: config_stage.FolderConfig, args: argparse.Namespace) -> int:
    from . import dashboard
    from .publishers.tables import TEXT, column_kind
    if folder.tables is None:
        raise UsageError(f"{folder.config_path}: no top-level 'tables' section")
    columns: dict[str, tuple[list[str], list[str]]] = {}
    for report in folder.reports.values():
        if report.table_name is None:
            continue
        _, outputs = runner.read_outputs(report, args.output_folder)
        kinds: dict[str, set[str]] = {}
        for output in outputs.values():
            for index, name in enumerate(output.header[1:], start=1):
                kind = column_kind([row[index] for row in output.rows if len(row) > index])
                kinds.setdefault(name, set()).add(kind or "")
        if not kinds:
            log.warning("%s: no output yet in %s: no panel", report.key, args.output_folder)
            continue
        texts = [name for name, found in kinds.items() if TEXT in found]
        # Number columns: no text, and at least one number (an all-empty column plots nothing).
        numbers = [name for name, found in kinds.items() if name not in texts and found - {""}]
        columns[report.key] = (texts, numbers)
    print(json.dumps(dashboard.build_sql(folder, columns, args.title), indent=2))
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_stage.json_schema(), indent=2))
    return 0


def _view(args: argparse.Namespace) -> int:
    folder = _load(args)
    now = args.now or runner.utcnow()
    if not _write_view(args.output, folder, args.output_folder, now, tuple(args.report)):
        return 1
    print(f"wrote {args.output}")
    return 2 if folder.errors else 0


def _write_view(path: Path, folder: config_stage.FolderConfig, output_folder: Path, now: datetime,
                reports: tuple[str, ...]) -> bool:
    from . import view as view_page
    try:
        view_page.write_page(path, view_page.build_page(folder, output_folder, now, reports))
    except OSError as exc:
        log.error("%s: cannot write the page: %s", path, exc.strerror or exc)
        return False
    log.info("wrote %s", path)
    return True


def _grafana(args: argparse.Namespace) -> int:
    from . import dashboard
    folder = config_stage.load(args.query_folder, args.config_path)
    for error in folder.errors:
        log.warning("%s", error)
    if args.datasource == "postgres":
        return _grafana_sql(folder, args)
    if args.datasource == "prometheus":
        board = dashboard.build_prometheus(folder, args.title)
        if not board["panels"]:
            log.warning("%s: no report has a 'prometheus' section: the dashboard is empty",
                        folder.config_path)
        print(json.dumps(board, indent=2))
        return 0
    board = dashboard.build(folder, args.title)
    if not board["panels"]:
        log.warning("%s: no report has a 'graphite' section: the dashboard is empty",
                    folder.config_path)
    print(json.dumps(board, indent=2))
    return 0
