# The publishing commands: `publish-backfill` (every destination, or --to
# one) republishes what the TSVs hold; `grafana --datasource postgres`
# prints SQL panels whose queries, macros expanded, return the published
# rows on a live PostgreSQL; `status` counts each queue (see
# test_run_publish.py).

from __future__ import annotations

import json
import re

import sqlalchemy as sa

from test_run_publish import EXPECTED, folder, rows, run
from testkit import run_cli


def test_publish_backfill_fills_a_new_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    query = folder(tmp_path, f'tables: {{url: "{url}"}}')
    assert run(query, "--no-publish")[0] == 0
    code, out, err = run_cli("publish-backfill", query, tmp_path / "output", "--since", "2026-01-02")
    assert code == 0, err
    assert out == "tables: 4 rows queued; all delivered\n"  # en and de, 2026-01-02 and 03
    assert rows(url) == [row for row in EXPECTED if row[0] >= "2026-01-02"]
    code, out, err = run_cli("publish-backfill", query, tmp_path / "output", "--to", "tables")
    assert code == 0, err
    assert rows(url) == EXPECTED


def test_publish_backfill_to_a_destination_not_configured(tmp_path):
    query = folder(tmp_path, f'tables: {{url: "sqlite:///{tmp_path / "m.db"}"}}')
    code, _, err = run_cli("publish-backfill", query, tmp_path / "output", "--to", "prometheus")
    assert code == 2
    assert "no top-level 'prometheus' section" in err


def expand(sql: str, first: str, last: str) -> str:
    """Grafana's PostgreSQL $__timeFilter(column), as Grafana expands it."""
    return re.sub(r"\$__timeFilter\(([^)]*)\)",
                  lambda m: f"{m.group(1)} BETWEEN '{first}' AND '{last}'", sql)


def test_grafana_postgres_panels_return_the_published_rows(tmp_path, postgres):
    postgres.execute("DROP SCHEMA public CASCADE")
    postgres.execute("CREATE SCHEMA public")
    query = folder(tmp_path, f'tables: {{url: "{postgres.url}"}}')
    assert run(query)[0] == 0
    code, out, err = run_cli("grafana", query, "--datasource", "postgres",
                             "--output-folder", tmp_path / "output")
    assert code == 0, err
    board = json.loads(out)
    assert [panel["title"] for panel in board["panels"]] == ["daily_edits: edits"]  # kind is text
    engine = sa.create_engine(postgres.url)
    try:
        with engine.connect() as connection:
            for panel in board["panels"]:
                sql = expand(panel["targets"][0]["rawSql"], "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z")
                got = [(str(t)[:10], wiki, kind, edits) for t, wiki, kind, edits in connection.execute(
                    sa.text(sql))]
                assert sorted(got) == sorted((d, w, k, e) for d, w, e, k in EXPECTED)
            outside = expand(board["panels"][0]["targets"][0]["rawSql"], "2025-01-01T00:00:00Z",
                             "2025-12-31T00:00:00Z")
            assert list(connection.execute(sa.text(outside))) == []
    finally:
        engine.dispose()
