# The docs against the code: the generated CLI reference is current, every
# command and every config key is in docs/reference.md, config.example.yaml
# loads cleanly, and every relative link in README.md and docs/*.md lands
# on a file (and heading). In-process; reads the repository, writes only
# under tmp_path.

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path

import pytest

from reportupdater import cli
from reportupdater import config as config_stage

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "reference.md"

sys.path.insert(0, str(REPO / "docs"))
import generate  # noqa: E402  (docs/generate.py, not a package)

sys.path.remove(str(REPO / "docs"))


def _without_code_blocks(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def _section(text: str, heading: str) -> str:
    """The text under the heading (`## config.yaml`) up to the next heading of
    the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = _without_code_blocks(text).splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines))
                if re.match(rf"#{{1,{level}}} ", lines[i])), len(lines))
    return "\n".join(lines[start:end])


def _table_keys(section: str) -> set[str]:
    """The `names` in the first cell of every table row of a section."""
    keys = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            keys |= set(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


# --------------------------------------------------------------- generated CLI


def test_the_generated_cli_reference_is_up_to_date():
    assert [page.name for page in generate.stale_pages()] == [], \
        "run 'python docs/generate.py' and commit the result"


def test_the_generator_check_mode_fails_on_a_stale_section(tmp_path, monkeypatch, capsys):
    page = tmp_path / "page.md"
    page.write_text("<!-- BEGIN generated: cli -->\nold text\n<!-- END generated: cli -->\n")
    monkeypatch.setattr(generate, "pages", lambda: [page])
    monkeypatch.setattr(generate, "REPO", tmp_path)
    assert generate.main(["--check"]) == 1
    assert "page.md: a generated section is out of date" in capsys.readouterr().err
    assert generate.main([]) == 0
    assert "### reportupdater run\n" in page.read_text()
    assert generate.main(["--check"]) == 0


def test_every_subcommand_is_in_the_reference():
    parser = cli.build_parser()
    text = REFERENCE.read_text()
    missing = [name for name in parser.command_parsers
               if f"### reportupdater {name}\n" not in text or f"`{name}`" not in _without_code_blocks(text)]
    assert missing == []
    assert set(parser.command_parsers) == set(cli.COMMANDS)


# ----------------------------------------------------------------- config keys


def declared_keys() -> dict[str, set[str]]:
    """Every config key the loader accepts, by the reference heading whose
    tables document it: the sections from the declarations config builds its
    parser and schema from (`key_reference()`), the sub-keys of the shaped
    keys (pivot, ready_when, a report's graphite) written out below."""
    heading = {"top level": "## config.yaml", "reports": "### Report keys",
               "databases": "### databases", "graphite": "### graphite keys",
               "tables": "### tables keys", "prometheus": "### prometheus keys"}
    keys: dict[str, set[str]] = {name: set() for name in heading.values()}
    for row in config_stage.key_reference():
        keys[heading[row.section]].add(row.key)
    keys["### graphite keys"] |= {"path", "metrics"}  # a report's graphite section
    keys["### prometheus keys"] |= {"metrics", "labels"}  # a report's prometheus section
    keys["## Pivot: one column per category"] = {"index", "columns", "values", "fill"}
    keys["## Late data: ready_when, ready_timeout, lookback"] = {"query", "partition", "script"}
    return keys


def test_declared_keys_cover_the_sub_keys_config_checks():
    """The sub-key sets above are written out by hand; config.py names them
    in its checks, so a key added there without a line here fails."""
    source = (REPO / "reportupdater" / "config.py").read_text()
    for keys in ({"index", "columns", "values", "fill"}, {"query", "partition", "script"}):
        assert all(f'"{key}"' in source for key in keys)
    assert '"path"' in source and '"metrics"' in source


@pytest.mark.parametrize("heading", list(declared_keys()))
def test_every_config_key_is_in_a_reference_table(heading):
    section = _section(REFERENCE.read_text(), heading)
    assert sorted(declared_keys()[heading] - _table_keys(section)) == []


# ------------------------------------------------------------ config.example


def test_config_example_loads_without_errors_or_warnings(tmp_path, caplog):
    folder = tmp_path / "q"
    folder.mkdir()
    shutil.copy(REPO / "config.example.yaml", folder / "config.yaml")
    # The files it names (see its header): empty templates, a script, values.
    for name in ("daily_edits.sql", "sessions.hql", "pageviews_hourly.sql", "demo-seed.sql"):
        (folder / name).write_text("SELECT '{from_date}' AS date\n")
    (folder / "wikis.txt").write_text("enwiki\ndewiki\n")
    (folder / "sitematrix.yaml").write_text("enwiki: en_wikipedia\n")
    script = folder / "browser_share"
    script.write_text("#!/bin/sh\necho date\n")
    script.chmod(0o755)
    with caplog.at_level(logging.DEBUG):
        loaded = config_stage.load(folder)
    assert [str(error) for error in loaded.errors] == []
    assert loaded.warnings == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert loaded.reports


# ----------------------------------------------------------------------- links

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(_without_code_blocks(path.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, mailto:, ...


def test_every_relative_link_in_readme_and_docs_is_a_file_in_the_repository():
    broken = []
    for path in _markdown_files():
        for target in _relative_links(path):
            file_part = target.split("#", 1)[0]
            if not file_part:
                continue  # an anchor in the same page
            resolved = (path.parent / file_part).resolve()
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert broken == []


def _anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation but - and _ dropped, spaces to -."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", _without_code_blocks(path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        anchor, n = slug, 1
        while anchor in anchors:
            anchor, n = f"{slug}-{n}", n + 1
        anchors.add(anchor)
    return anchors


def test_every_anchor_of_a_relative_link_names_a_heading():
    broken = []
    for path in _markdown_files():
        for target in _relative_links(path):
            file_part, _, anchor = target.partition("#")
            page = (path.parent / file_part).resolve() if file_part else path
            if anchor and page.suffix == ".md" and page.exists() and anchor not in _anchors(page):
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert broken == []
