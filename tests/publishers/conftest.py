# Publisher tests against live stores (tests/live_publish_servers.py) and
# SQLite. Those using a live store's fixture are marked `live` by
# tests/conftest.py; the SQLite ones stay in the fast suite.

from __future__ import annotations

from live_publish_servers import (postgres, prometheus, prometheus_alone,  # noqa: F401 (fixtures)
                                  victoria_metrics)
