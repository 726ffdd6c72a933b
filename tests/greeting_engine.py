"""A report type for tests only, made the way an engine is added: one file
(its declarations and its Engine subclass), registered with
report_types.register. A `greeting` report prints its `greeting:` key."""

from __future__ import annotations

from reportupdater.config_keys import Key
from reportupdater.datatypes import Job, Result
from reportupdater.engines import Engine, build_result
from reportupdater.report_types import EngineKeys

KEYS = EngineKeys(
    type="greeting", template_suffix=None, ready_when=("script",),
    report_keys={"greeting": Key("greeting", "text", "What the report says, each interval")},
)


class GreetingEngine(Engine):
    type = "greeting"

    def run(self, job: Job) -> Result:
        return build_result(["date", "greeting"], [[job.interval.label, job.report.options["greeting"]]],
                            job.interval)
