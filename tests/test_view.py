# `reportupdater view` and `run --view`: the HTML page of a folder's coverage,
# series and next run.
#
# The fast tests check the page's data (escaping, run-length coverage, the
# series split) without a browser. The browser tests load the page in
# Debian's headless Chromium (./run-tests installs it; without it they are
# skipped with the reason) and read the rendered DOM (--dump-dom) and a
# screenshot: every demo report has its strips and charts, the cell counts
# equal `status --json`, and hostile folder text runs no script.

from __future__ import annotations

import html.parser
import json
import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from testkit import make_folder, run_cli, tsv, write_script

from reportupdater import config, view

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="chromium is not installed (./run-tests installs Debian's chromium as root; "
           "or: apt-get install chromium)")

# Marks that a planted script would leave: an attribute on <html>.
XSS = "document.documentElement.setAttribute('data-xss','{}')"
PAYLOADS = (
    "<script>" + XSS.format(1) + "</script>",
    "<img src=x onerror=\"" + XSS.format(2) + "\">",
    "\" onload=\"" + XSS.format(3) + "\" x=\"",
    "</script><script>" + XSS.format(4) + "</script>",
)


# ------------------------------------------------------------- helpers


def decode_runs(flat: list[int]) -> list[tuple[int, int]]:
    """[state, reason, count, ...] back into one (state, reason) per cell."""
    cells = []
    for index in range(0, len(flat), 3):
        cells += [(flat[index], flat[index + 1])] * flat[index + 2]
    return cells


def undelta(flat: list[int]) -> list[int]:
    if not flat:
        return []
    out = [flat[0]]
    for index in range(1, len(flat), 2):
        for _ in range(flat[index + 1]):
            out.append(out[-1] + flat[index])
    return out


def page_json(page: str) -> dict:
    start = page.index('<script type="application/json" id="data">') + len(
        '<script type="application/json" id="data">')
    return json.loads(page[start:page.index("</script>", start)])


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.text: list[str] = []

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and (
                    cls is None or cls in (child.attrs.get("class") or "").split()):
                found.append(child)
            found += child.all(tag, cls)
        return found

    def text_content(self) -> str:
        return "".join(self.text) + "".join(child.text_content() for child in self.children)


class _TreeBuilder(html.parser.HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "source", "wbr", "area", "base"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.text.append(data)


def parse_dom(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def chromium(tmp_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Headless Chromium with a new empty profile; its stdout as text."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout, check=True)


def dump_dom(tmp_path: Path, page: Path, *extra: str) -> Node:
    done = chromium(tmp_path, "--virtual-time-budget=20000", "--window-size=1200,900", *extra,
                    "--dump-dom", page.as_uri())
    assert "data-ready" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    return parse_dom(done.stdout)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit truecolour PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    idat = b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IDAT":
            idat += body
        chunks.setdefault(kind, body)
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    step = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * step
    rows, previous = [], bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(step, stride):
                line[i] = (line[i] + line[i - step]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - step] if i >= step else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 255
        elif kind == 4:
            for i in range(stride):
                a = line[i - step] if i >= step else 0
                b, c = previous[i], previous[i - step] if i >= step else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        previous = bytes(line)
        rows.append(bytes(line) if step == 3 else bytes(
            value for i, value in enumerate(line) if i % 4 != 3))
    return width, height, rows


def demo_folder(tmp_path: Path) -> Path:
    """A copy of queries/demo (its database is built from seed.sql on first use)."""
    folder = tmp_path / "demo"
    shutil.copytree(REPO / "queries" / "demo", folder,
                    ignore=shutil.ignore_patterns("demo.db", ".reruns"))
    return folder


# --------------------------------------------------- data, no browser


def test_embedded_json_cannot_end_its_script_element():
    nasty = {"a": "</script><script>x()</script>", "b": "<!-- & -->", "c": "line\u2028sep\u2029",
             "d": "</SCRIPT >"}
    text = view.embed_json(nasty)
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    assert json.loads(text) == nasty


def test_run_lengths_and_delta_runs_round_trip():
    cells = [(0, 0)] * 5 + [(1, 2)] * 3 + [(0, 0)] + [(2, 1)]
    assert view.run_lengths(cells) == [0, 0, 5, 1, 2, 3, 0, 0, 1, 2, 1, 1]
    assert decode_runs(view.run_lengths(cells)) == cells
    days = [20000, 20001, 20002, 20003, 20010, 20017, 20017, 19990]
    assert view.delta_runs(days)[:3] == [20000, 1, 3]
    assert undelta(view.delta_runs(days)) == days
    assert view.delta_runs([]) == [] and undelta([]) == []
    assert view.delta_runs(list(range(0, 730))) == [0, 1, 729]  # a regular calendar stays tiny


DAILY = """\
    reports:
      edits:
        type: script
        granularity: days
        starts: 2026-01-01
        explode_by:
          wiki: "enwiki, dewiki"
    """


def _daily_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = make_folder(tmp_path, DAILY, scripts={"edits": "#!/bin/sh\nexit 3\n"})
    out = tmp_path / "out"
    (out / "edits").mkdir(parents=True)
    (out / "edits" / "enwiki.tsv").write_text(tsv("date\tedits", "2026-01-01\t5", "2026-01-02\t7",
                                                  "2026-01-04\t9"))
    (out / "edits" / "dewiki.tsv").write_text(tsv("date\tedits", "2026-01-01\t1", "2026-01-02\t2",
                                                  "2026-01-03\t3", "2026-01-04\t4"))
    return folder, out


def test_coverage_cells_come_from_the_plan_that_status_prints(tmp_path):
    folder, out = _daily_folder(tmp_path)
    now = datetime(2026, 1, 5, 5, tzinfo=UTC)
    # A failure and a waiting interval in the run state, a rerun request.
    (out / ".reportupdater-state.json").write_text(json.dumps({"reports": {"edits": {
        "last_started": None,
        "failures": {"wiki=enwiki 2026-01-03": {
            "error": "boom <b>", "attempts": 2, "first_failed": "2026-01-04T05:00:00Z",
            "last_failed": "2026-01-05T04:00:00Z", "retry_after": "2026-01-05T06:00:00Z"}},
        "waiting": {"wiki=dewiki 2026-01-04": "2026-01-05T03:00:00Z"}}}}))
    (out / "edits" / "dewiki.tsv").write_text(tsv("date\tedits", "2026-01-01\t1", "2026-01-02\t2",
                                                  "2026-01-03\t3"))
    assert run_cli("rerun", folder, "2026-01-01", "2026-01-02", "--now", "2026-01-05T05:00")[0] == 0
    code, stdout, _ = run_cli("status", folder, out, "--json", "--now", "2026-01-05T05:00")
    status = json.loads(stdout)["reports"][0]

    data = view.page_data(config.load(folder), out, now)
    report = data["reports"][0]
    assert report["summary"] == status
    labels = [datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
              for day in undelta(report["labels"])]
    assert labels == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    states = {file["name"]: [(view.STATE_NAMES[state], report["reasons"][reason])
                             for state, reason in decode_runs(file["runs"])]
              for file in report["files"]}
    assert [state for state, _ in states["wiki=enwiki"]] == [
        "rerun requested", "computed", "failing", "computed"]
    assert [state for state, _ in states["wiki=dewiki"]] == [
        "rerun requested", "computed", "computed", "waiting for data"]
    assert states["wiki=enwiki"][2][1].startswith("failed: boom <b> (2 attempts, next try after")
    assert states["wiki=enwiki"][0][1] == "rerun requested (the next run recomputes it)"
    counted = [state for file in states.values() for state, _ in file]
    assert len(counted) - counted.count("computed") == status["missing"] == 4
    assert counted.count("failing") == status["failing"]
    assert counted.count("waiting for data") == status["waiting"]
    assert report["failures"][0]["error"] == "boom <b>"
    assert {item["name"] for item in report["next_run"]} == {"wiki=enwiki", "wiki=dewiki"}


def test_series_split_by_dimension_columns_as_graphite_paths(tmp_path):
    folder = make_folder(tmp_path, """\
        graphite:
          host: localhost
        reports:
          buckets:
            type: script
            granularity: days
            starts: 2026-01-01
            explode_by:
              wiki: "enwiki, dewiki"
            graphite:
              path: "edits.{wiki}.{bucket}.{_metric}"
              metrics: {edits: edits}
          plain:
            type: script
            granularity: days
            starts: 2026-01-01
        """, scripts={"buckets": "#!/bin/sh\nexit 3\n", "plain": "#!/bin/sh\nexit 3\n"})
    out = tmp_path / "out"
    (out / "buckets").mkdir(parents=True)
    # `bucket` holds numbers, but the path names it: it is a dimension.
    (out / "buckets" / "enwiki.tsv").write_text(tsv(
        "date\tbucket\tedits\tshare", "2026-01-01\t1\t10\t0.5", "2026-01-01\t2\t20\t",
        "2026-01-02\t1\t11\t0.25"))
    (out / "buckets" / "dewiki.tsv").write_text(tsv("date\tbucket\tedits\tshare", "2026-01-02\t1\t3\t1"))
    # No graphite: the text column `kind` is the dimension; a repeated date keeps the last.
    (out / "plain.tsv").write_text(tsv("date\tkind\tviews\tnote", "2026-01-01\tbot\t1\tx",
                                       "2026-01-01\thuman\t5\t", "2026-01-02\thuman\t6\t",
                                       "2026-01-02\thuman\t7\t"))
    data = view.page_data(config.load(folder), out, datetime(2026, 1, 3, 5, tzinfo=UTC))
    buckets, plain = data["reports"]
    series = buckets["series"]
    assert series["dimensions"] == ["bucket"]
    assert sorted(series["names"]) == ["wiki=dewiki bucket=1", "wiki=enwiki bucket=1",
                                       "wiki=enwiki bucket=2"]
    x = undelta(series["x"])
    assert [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d") for t in x] == ["2026-01-01", "2026-01-02"]
    charts = {chart["column"]: chart for chart in series["charts"]}
    assert set(charts) == {"edits", "share"}
    line = series["names"].index("wiki=enwiki bucket=1")
    assert charts["edits"]["values"][line] == [10, 11]
    assert charts["share"]["values"][series["names"].index("wiki=enwiki bucket=2")] is None
    assert charts["edits"]["order"][0] == line  # the largest sum first (top N)
    assert series["notes"] == []

    assert plain["series"]["dimensions"] == ["kind", "note"]
    charts = {chart["column"]: chart for chart in plain["series"]["charts"]}
    assert set(charts) == {"views"}
    human = [name for name in plain["series"]["names"] if "kind=human" in name]
    assert charts["views"]["values"][plain["series"]["names"].index(human[0])] == [5, 7]
    assert "1 rows share their line and date" in plain["series"]["notes"][0]


def test_page_holds_folder_text_only_as_escaped_json(tmp_path):
    folder, out = _daily_folder(tmp_path)
    (out / "edits" / "enwiki.tsv").write_text(tsv(f"date\tedits\t{PAYLOADS[0]}",
                                                  f"2026-01-01\t5\t{PAYLOADS[3]}"))
    page = view.build_page(config.load(folder), out, datetime(2026, 1, 5, 5, tzinfo=UTC))
    assert page.count("<script") == 3 and page.count("</script>") == 3
    assert "data-xss" in page and "<img" not in page
    data = page_json(page)
    assert data["reports"][0]["series"]["dimensions"] == [PAYLOADS[0]]
    assert PAYLOADS[3] in data["reports"][0]["series"]["names"][0]


def test_view_command_writes_the_page(tmp_path):
    folder, out = _daily_folder(tmp_path)
    target = tmp_path / "pages" / "report.html"
    code, stdout, stderr = run_cli("view", folder, out, "-o", target, "--now", "2026-01-05T05:00")
    assert code == 0, stderr
    assert stdout == f"wrote {target}\n"
    assert page_json(target.read_text())["reports"][0]["key"] == "edits"
    # A page that cannot be written: one line, exit 1.
    code, _, stderr = run_cli("view", folder, out, "-o", tmp_path, "--now", "2026-01-05T05:00")
    assert code == 1
    assert len(stderr.strip().splitlines()) == 1 and "cannot write the page" in stderr
    code, _, stderr = run_cli("view", folder, out, "-r", "nope", "--now", "2026-01-05T05:00")
    assert code == 2 and "'nope' is not in 'reports'" in stderr


def test_run_view_writes_the_page_after_the_run(tmp_path):
    folder = make_folder(tmp_path, DAILY, scripts={"edits": """\
        #!/bin/sh
        printf 'date\\tedits\\n%s\\t1\\n' "$1"
        """})
    out, target = tmp_path / "out", tmp_path / "out" / "report.html"
    code, _, stderr = run_cli("run", folder, out, "--view", target, "--now", "2026-01-03T05:00")
    assert code == 0, stderr
    report = page_json(target.read_text())["reports"][0]
    assert report["summary"]["missing"] == 0 and report["summary"]["due"] == 4
    assert [decode_runs(file["runs"]) for file in report["files"]] == [[(0, 0)] * 2] * 2
    # A page that cannot be written fails the run (exit 1, one line); what it computed stays.
    code, _, stderr = run_cli("run", folder, out, "--view", tmp_path, "--now", "2026-01-04T05:00")
    assert code == 1
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"{tmp_path}: cannot write the page" in errors[0], stderr
    assert "2026-01-03\t1" in (out / "edits" / "enwiki.tsv").read_text()


# ------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory):
    """The demo, computed to 2026-10-20 and viewed at 2026-10-27: missing
    days and weeks, a rerun request, and failing frwiki script intervals."""
    tmp_path = tmp_path_factory.mktemp("demo")
    folder, out = demo_folder(tmp_path), tmp_path / "out"
    assert run_cli("run", folder, out, "--now", "2026-10-20T05:00", timeout=180)[0] == 0
    assert run_cli("rerun", folder, "2026-10-01", "2026-10-03", "-r", "daily_edits",
                   "--now", "2026-10-20T05:00")[0] == 0
    script = folder / "edit_size_buckets"
    script.rename(folder / "edit_size_buckets.real")
    write_script(script, """\
        #!/bin/sh
        if [ "$3" = frwiki ]; then echo "frwiki source is down" >&2; exit 1; fi
        exec "$(dirname "$0")/edit_size_buckets.real" "$@"
        """)
    run_cli("run", folder, out, "-r", "edit_size_buckets", "--now", "2026-10-27T05:00", timeout=180)
    page = tmp_path / "report.html"
    code, _, stderr = run_cli("view", folder, out, "-o", page, "--now", "2026-10-27T05:00")
    assert code == 0, stderr
    code, stdout, _ = run_cli("status", folder, out, "--json", "--now", "2026-10-27T05:00")
    return tmp_path, page, json.loads(stdout)


@needs_chromium
def test_demo_page_in_a_browser_matches_status(demo_page):
    tmp_path, page, status = demo_page
    dom = dump_dom(tmp_path, page)
    sections = {node.attrs["data-report"]: node for node in dom.all("section", "report")}
    assert list(sections) == [entry["report"] for entry in status["reports"]]
    expected_charts = {"daily_edits": {"edits", "editors", "bytes_added", "bytes_removed"},
                       "pageviews_weekly": {"views", "share"},
                       "active_editors_monthly": {"editors", "active_editors"},
                       "edit_size_buckets": {"edits", "share"}}
    files = {"daily_edits": 4, "pageviews_weekly": 1, "active_editors_monthly": 1, "edit_size_buckets": 4}
    for entry in status["reports"]:
        section = sections[entry["report"]]
        strips = section.all("div", "strip")
        assert len(strips) == files[entry["report"]]
        charts = section.all("div", "chart")
        assert {chart.attrs["data-column"] for chart in charts} == expected_charts[entry["report"]]
        assert all(chart.all("div", "uplot") and chart.all("canvas") for chart in charts)
        count = {key: int(section.attrs[f"data-{key}"])
                 for key in ("computed", "missing", "failing", "waiting", "rerun", "unreadable")}
        assert count["computed"] == entry["due"] - entry["missing"]
        assert count["missing"] + count["failing"] + count["waiting"] + count["rerun"] == entry["missing"]
        assert count["failing"] == entry["failing"] and count["waiting"] == entry["waiting"]
        # The drawn cells (one per interval here) add up to the same counts.
        drawn = dict.fromkeys(count, 0)
        for segment in section.all("span", "seg"):
            drawn[segment.attrs["data-state"]] += int(segment.attrs["data-count"])
        assert drawn == count
    assert int(sections["daily_edits"].attrs["data-rerun"]) == 8   # 2 days x 4 wikis
    assert int(sections["daily_edits"].attrs["data-missing"]) > 0
    assert int(sections["edit_size_buckets"].attrs["data-failing"]) == 1
    text = sections["edit_size_buckets"].text_content()
    assert "frwiki source is down" in text and "wiki=frwiki" in text
    assert "What the next run does" in text
    assert dom.all("table", "summary")


@needs_chromium
def test_hovering_a_cell_names_the_interval_and_the_reason(demo_page, tmp_path):
    _, page, _ = demo_page
    # The test's own script, after the page's: hover the last cell of the
    # first daily_edits strip and keep what the tooltip says.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
      const strip = document.querySelector('section[data-report="daily_edits"] .strip');
      const rect = strip.getBoundingClientRect();
      strip.dispatchEvent(new MouseEvent("mousemove", {clientX: rect.right - 1, clientY: rect.top + 2}));
      document.documentElement.setAttribute("data-tip", document.getElementById("tip").textContent);
      </script></body>"""))
    dom = dump_dom(tmp_path, probe)
    tip = dom.all("html")[0].attrs["data-tip"]
    assert tip == ("wiki=enwiki\n2026-10-26: missing: not computed yet (the next run computes it)")


@needs_chromium
def test_demo_screenshot_is_not_blank(demo_page, tmp_path):
    _, page, _ = demo_page
    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--virtual-time-budget=20000", "--window-size=900,700", "--hide-scrollbars",
             f"--screenshot={shot}", page.as_uri())
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (900, 700)
    colours = {row[i:i + 3] for row in rows[::4] for i in range(0, len(row), 12)}
    assert len(colours) > 20, len(colours)
    assert bytes.fromhex("43a047") in {row[i:i + 3] for row in rows for i in range(0, len(row), 3)}, \
        "no coverage cell (computed green) in the screenshot"


@needs_chromium
def test_hostile_folder_text_runs_no_script(tmp_path):
    wikis = "\n".join(["enwiki", PAYLOADS[2], PAYLOADS[0]]) + "\n"
    header = "\t".join(["date", "kind", PAYLOADS[1], "value"])
    rows = "\n".join(f"$1\t{payload}\t{number}\t{number * 2}"
                     for number, payload in enumerate(PAYLOADS, start=1))
    folder = make_folder(tmp_path, f"""\
        reports:
          hostile:
            type: script
            granularity: days
            starts: 2026-01-01
            explode_value_pattern: ".+"
            explode_by:
              wiki: wikis.txt
          failing:
            type: script
            granularity: days
            starts: 2026-01-03
          {json.dumps(PAYLOADS[3])}:
            type: script
            granularity: days
            starts: 2026-01-01
        """, files={"wikis.txt": wikis}, scripts={
        "hostile": f"#!/bin/sh\ncat <<EOF\n{header}\n{rows}\nEOF\n",  # $1: the interval's date
        "failing": f"#!/bin/sh\ncat >&2 <<'EOF'\n{PAYLOADS[0]} {PAYLOADS[2]}\nEOF\nexit 1\n"})
    out, page = tmp_path / "out", tmp_path / "report.html"
    code, _, stderr = run_cli("run", folder, out, "--view", page, "--now", "2026-01-05T05:00")
    assert code == 2 and page.exists(), stderr  # the bad report name is a config error
    dom = dump_dom(tmp_path, page)
    document = dom.all("html")[0]
    assert "data-xss" not in document.attrs
    assert not dom.all("img")
    assert len(dom.all("script")) == 3    # the data and the two inlined scripts
    assert not any(name.startswith("on") for node in dom.all() for name in node.attrs)
    for node in dom.all("script") + dom.all("style"):
        node.text, node.children = [], []
    text = dom.text_content()   # what the page shows
    for payload in PAYLOADS:
        assert payload in text, payload   # shown as text
    sections = {node.attrs["data-report"]: node for node in dom.all("section", "report")}
    assert set(sections) == {"hostile", "failing"}
    strips = [strip.attrs["data-file"] for strip in sections["hostile"].all("div", "strip")]
    assert strips == ["wiki=enwiki", f"wiki={PAYLOADS[2]}", f"wiki={PAYLOADS[0]}"]
    assert int(sections["hostile"].attrs["data-unreadable"]) == 4   # the value holding '/'
    assert int(sections["failing"].attrs["data-failing"]) == 2
