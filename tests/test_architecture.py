"""The package's import graph, read from the source with ast (module-level
and function-level imports, relative and absolute): no import cycle, the
shared data types depend on nothing, and each stage imports only what its
header comment allows. Imports under `if TYPE_CHECKING:` never run and are
left out of the cycle check (datatypes names ReportConfig that way)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "reportupdater"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, runtime: bool = True):
    """Every Import/ImportFrom node, at any depth; with runtime, not those
    under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if runtime and isinstance(node, ast.If) and _type_checking_only(node):
            children = node.orelse
        stack.extend(children)


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _with_parents(name: str) -> set[str]:
    """A module and the packages above it: importing a.b.c runs a/__init__
    and a/b/__init__ first."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)


def dependencies(name: str, runtime: bool = True) -> set[str]:
    """The package's modules that importing `name` (and calling its functions) runs."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in _imports(tree, runtime):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = _package_of(name).split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from . import x` and `from .pkg import mod` import submodules.
            targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
        for target in targets:
            if target in MODULES:
                found |= _with_parents(target)
    found.discard(name)
    return found


GRAPH = {name: dependencies(name) for name in MODULES}


def test_the_graph_is_read():
    """Guards the test itself: a parser that found nothing would pass every check."""
    assert "reportupdater.processes" in GRAPH["reportupdater.engines.script"]
    assert "reportupdater.datatypes" in GRAPH["reportupdater.store"]
    assert "reportupdater.engines" in GRAPH["reportupdater.engines.script"]  # its package runs first
    assert "reportupdater.config" in dependencies("reportupdater.datatypes", runtime=False)


def _cycle() -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        path.append(name)
        for dependency in sorted(GRAPH[name]):
            found = visit(dependency)
            if found:
                return found
        path.pop()
        done.add(name)
        return None

    for name in sorted(GRAPH):
        found = visit(name)
        if found:
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_datatypes_imports_nothing_from_the_package():
    assert GRAPH["reportupdater.datatypes"] == set()
    # For type checkers only: the report a Job belongs to.
    assert dependencies("reportupdater.datatypes", runtime=False) - {PACKAGE} == {"reportupdater.config"}


def _closure(name: str) -> set[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        for dependency in GRAPH[stack.pop()]:
            if dependency not in seen:
                seen.add(dependency)
                stack.append(dependency)
    return seen


def _matching(prefix: str) -> set[str]:
    return {name for name in MODULES if name == prefix or name.startswith(prefix + ".")}


EXECUTION = (_matching("reportupdater.engines") | {"reportupdater.processes", "reportupdater.deadlines",
                                                    "reportupdater.credentials"})
WRITERS = {"reportupdater.atomic", "reportupdater.store", "reportupdater.publish",
           "reportupdater.runner", "reportupdater.lock"}
LATER_THAN_CONFIG = ({"reportupdater.plan", "reportupdater.intervals", "reportupdater.store",
                      "reportupdater.publish", "reportupdater.runner", "reportupdater.pivot",
                      "reportupdater.state", "reportupdater.reruns", "reportupdater.overview",
                      "reportupdater.processes"} | EXECUTION)

# (module, what it must not import, even indirectly, and why: its header comment)
RULES = [
    ("reportupdater.plan", (WRITERS - {"reportupdater.atomic"}) | EXECUTION,
     "planning is pure: no I/O, no execution"),
    ("reportupdater.intervals", WRITERS | EXECUTION, "calendar arithmetic touches nothing"),
    ("reportupdater.store", {"reportupdater.publish", "reportupdater.runner"} | EXECUTION,
     "store comes before publish and knows no engine"),
    ("reportupdater.publish", {"reportupdater.runner"} | EXECUTION, "publish is the last stage"),
    ("reportupdater.config", LATER_THAN_CONFIG, "config comes first and imports no stage after it"),
    ("reportupdater.templates", LATER_THAN_CONFIG | {"reportupdater.config"}, "templates are plain text"),
    ("reportupdater.processes", {"reportupdater.config", "reportupdater.runner"} | _matching(
        "reportupdater.engines"), "process supervision serves engines and the runner, knows neither"),
    ("reportupdater.deadlines", set(MODULES) - {"reportupdater", "reportupdater.deadlines"},
     "the watchdog depends on nothing of the package"),
    ("reportupdater.credentials", {"reportupdater.config", "reportupdater.runner"} | _matching(
        "reportupdater.engines"), "credentials serve every engine, know none"),
    ("reportupdater.report_types", set(MODULES) - {"reportupdater", "reportupdater.report_types"},
     "the registry names the engines' modules as text and imports one only when asked"),
]


@pytest.mark.parametrize(("module", "forbidden", "why"), RULES, ids=[rule[0] for rule in RULES])
def test_layering(module, forbidden, why):
    assert module in MODULES
    wrong = _closure(module) & (forbidden - {module})
    assert not wrong, f"{module} imports {sorted(wrong)}: {why}"


def test_plan_writes_nothing():
    """plan takes the run state and rerun requests as values: it uses their
    modules' types, never the writer itself (state and reruns do, to save)."""
    assert "reportupdater.atomic" not in GRAPH["reportupdater.plan"]
    assert "reportupdater.atomic" not in GRAPH["reportupdater.intervals"]


def test_a_cycle_is_found(monkeypatch):
    """The check fails on a cycle (here one made up in the graph)."""
    monkeypatch.setitem(GRAPH, "reportupdater.datatypes", {"reportupdater.store"})
    assert _cycle() is not None


# Drivers a run pays for only when it computes something (0.1 s and more each).
HEAVY_DRIVERS = ("sqlalchemy", "pyhive", "thrift")


def test_loading_a_config_imports_no_driver():
    """Loading a config reads every engine's declarations (through the
    report types' registry), yet imports no database driver: a no-op run must
    start fast. In a subprocess, so that this test process's imports do not
    count."""
    import subprocess
    import sys

    demo = ROOT.parent / "queries" / "demo"
    code = ("import sys\n"
            "from reportupdater import config\n"
            f"folder = config.load({str(demo)!r})\n"
            "assert not folder.errors, folder.errors\n"
            "import reportupdater.engines.sql, reportupdater.engines.hive, reportupdater.engines.script\n"
            f"print(sorted(name for name in sys.modules if name.split('.')[0] in {HEAVY_DRIVERS!r}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=ROOT.parent, env={"PYTHONPATH": str(ROOT.parent), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_config_stage_names_no_report_type():
    """Engines own their keys: the report types, their rules and their keys
    are in the engines' modules (found through report_types.py), so config.py
    and config_keys.py hold no report type or database engine as a value (docs
    and messages aside: those are the key's doc strings, in words)."""
    names = {"sql", "hive", "hive-cli"}
    for module in ("reportupdater.config", "reportupdater.config_keys"):
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        found = sorted({node.value for node in ast.walk(tree)
                        if isinstance(node, ast.Constant) and node.value in names})
        assert found == [], f"{module} names {found}"


# The sql engine's MediaWiki shard keys, declared and parsed in engines/sql.py.
SQL_ONLY_DATABASE_KEYS = {"auto_find_db_shard", "wiki_db_placeholder", "use_x1", "mw_config_path", "shards",
                          "shard_host_template", "srv_template"}


def test_the_config_stage_names_no_engine_only_database_key():
    """The keys only one engine reads are its module's: config.py and
    config_keys.py name none of them, as a value or as a name (a field, a
    variable, an attribute, a keyword)."""
    from reportupdater.engines import sql
    assert set(sql.DATABASE_KEYS) == SQL_ONLY_DATABASE_KEYS
    for module in ("reportupdater.config", "reportupdater.config_keys"):
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        words = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words.add(node.value)
            elif isinstance(node, ast.Name):
                words.add(node.id)
            elif isinstance(node, ast.Attribute):
                words.add(node.attr)
            elif isinstance(node, ast.keyword) and node.arg:
                words.add(node.arg)
        found = sorted(words & SQL_ONLY_DATABASE_KEYS)
        assert found == [], f"{module} names {found}"
