# Stage 3 of 5: execution. The `script` engine.
#
# Runs a report's executable as `SCRIPT START END [V1 V2 ...] FOLDER` (dates
# YYYY-MM-DD, explode values ordered by placeholder name, last the folder
# holding the script), with the query folder as working directory, and parses
# the TSV it prints. The command runs through processes.run_command (as do
# readiness scripts and Hive command lines), which owns its process group.
# A non-zero exit, a timeout, output still arriving after the exit or
# unparseable output is a failure of that interval. KEYS declares what it
# reads from config.yaml.

from __future__ import annotations

import logging
from functools import cached_property

from ..config_keys import DEFAULT_TIMEOUT_SECONDS
from ..datatypes import EngineError, Job, Result
from ..processes import RunningCommand, child_environment, start_command
from ..report_types import EngineKeys
from .base import Engine, Started, build_result, script_argv

log = logging.getLogger(__name__)

# What a script report reads from config.yaml: `execute` names the script.
KEYS = EngineKeys(
    type="script", template_suffix=None, ready_when=("script",),
    ready_when_refused={"partition": "partitions are checked on Hive: use it in hive reports",
                        "query": "a script report has no database to query: use script"},
)


def parse_tsv(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of TSV text; \\n or \\r\\n line ends; blank lines ignored."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    lines = [line for line in lines if line != ""]
    if not lines:
        return [], []
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


class ScriptEngine(Engine):
    type = "script"

    def argv(self, job: Job) -> list[str]:
        assert job.report.script_path is not None  # config guarantees it for script reports
        return script_argv(job.report.script_path, job)

    @cached_property
    def _environment(self) -> dict[str, str] | None:
        """Built at the first command, kept for the run (None: the commands
        inherit this process's)."""
        return child_environment()

    def run(self, job: Job) -> Result:
        return self.start(job).result()

    def start(self, job: Job) -> Started:
        try:
            command = start_command(self.argv(job), self.query_folder,
                                    job.report.timeout or DEFAULT_TIMEOUT_SECONDS, job.describe(),
                                    "script", env=self._environment)
        except EngineError as exc:
            return Started(error=exc)
        return _StartedScript(command, job)


class _StartedScript(Started):
    """A script running: its output is parsed once it has exited."""

    def __init__(self, command: RunningCommand, job: Job):
        super().__init__()
        self._command: RunningCommand | None = command
        self._job = job
        self._stdout = ""

    def wait(self) -> None:
        if self._command is not None:
            command, self._command = self._command, None
            try:
                self._stdout = command.wait()
            except EngineError as exc:
                self._error = exc

    def result(self) -> Result:
        self.wait()
        if self._error is not None:
            raise self._error
        header, rows = parse_tsv(self._stdout)
        if not header:
            raise EngineError("script printed nothing (a header line is required)")
        return build_result(header, rows, self._job.interval)
