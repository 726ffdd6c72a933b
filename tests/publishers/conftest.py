# Publisher tests against live stores (tests/live_publish_servers.py) and
# SQLite: all marked `live`, so `-m "not live"` leaves them out. (A
# `pytestmark` in a conftest.py marks nothing: pytest reads it only in test
# modules; hence the hook.)

from __future__ import annotations

from pathlib import Path

import pytest

from live_publish_servers import postgres, prometheus, victoria_metrics  # noqa: F401 (fixtures)

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.live)
