#!/usr/bin/env python3
# Rewrites the generated sections of the docs from the code, so that they
# cannot drift from it.
#
#   python docs/generate.py           rewrite every generated section
#   python docs/generate.py --check   exit 1, naming the stale sections, if
#                                     a rewrite would change anything
#
# A generated section sits between two markers in a docs/*.md page:
#
#   <!-- BEGIN generated: cli -->
#   ...
#   <!-- END generated: cli -->
#
# and NAME ("cli") picks its generator in GENERATORS. Touches only docs/*.md.
# Not part of the library: a maintenance tool, run from a checkout (CI runs
# the check through tests/test_docs.py).

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the checkout's package, not an installed one

SECTION = re.compile(r"(<!-- BEGIN generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
                     r"(<!-- END generated: (?P=name) -->)",
                     re.S)
HELP_WIDTH = 80  # fixed, so that the text does not depend on the terminal


def _help(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=HELP_WIDTH)
    return parser.format_help().rstrip() + "\n"


def cli_reference() -> str:
    """`reportupdater --help` and every `reportupdater COMMAND --help`."""
    from reportupdater import cli

    parser = cli.build_parser()
    parts = ["Generated from `reportupdater --help` and `reportupdater COMMAND --help` "
             "by `python docs/generate.py`; do not edit by hand.\n",
             "### reportupdater\n", "```text\n" + _help(parser) + "```\n"]
    for name, command in parser.command_parsers.items():
        parts += [f"### reportupdater {name}\n", "```text\n" + _help(command) + "```\n"]
    return "\n".join(parts)


GENERATORS: dict[str, Callable[[], str]] = {"cli": cli_reference}


def render(text: str) -> str:
    """The page with every generated section rewritten."""
    def section(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise SystemExit(f"unknown generated section {name!r} (known: {', '.join(GENERATORS)})")
        return match.group(1) + "\n" + GENERATORS[name]().rstrip() + "\n\n" + match.group(4)
    return SECTION.sub(section, text)


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def stale_pages() -> list[Path]:
    return [page for page in pages() if render(page.read_text()) != page.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the generated sections of docs/*.md.")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a generated section is out of date")
    args = parser.parse_args(argv)
    stale = stale_pages()
    if args.check:
        for page in stale:
            print(f"{page.relative_to(REPO)}: a generated section is out of date; "
                  "run 'python docs/generate.py'", file=sys.stderr)
        return 1 if stale else 0
    for page in stale:
        page.write_text(render(page.read_text()))
        print(f"rewrote {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
