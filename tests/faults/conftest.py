# Fixtures of the fault-injection tests: real processes, real signals, real
# servers. Their helpers are in faultkit.py.
#
# The live MariaDB and carbon fixtures live in tests/mariadb/conftest.py and
# tests/graphite/conftest.py, which pytest only shows to the tests of those
# folders. Their modules are loaded here by path, under names of their own,
# and their session fixtures re-exported: in a full run each server is then
# started once more for this folder (a few seconds), and never shared with
# the tests of the other folders.

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from faultkit import mount_tmpfs, unmount

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


mariadb_kit = _load("faults_mariadb_kit", HERE.parent / "mariadb" / "conftest.py")
mariadb = mariadb_kit.mariadb  # re-exported: the session's live MariaDB for tests/faults

try:
    graphite_kit = _load("faults_graphite_kit", HERE.parent / "graphite" / "conftest.py")
    carbon = graphite_kit.carbon  # re-exported: the session's live carbon-cache
except BaseException as exc:  # pytest.importorskip raises a BaseException subclass
    if not isinstance(exc, (ImportError, pytest.skip.Exception)):
        raise
    _reason = str(exc)

    @pytest.fixture(scope="session")
    def carbon():
        pytest.skip(f"carbon is not available: {_reason}")


# ------------------------------------------------------------- mounts

@pytest.fixture
def tmpfs(tmp_path):
    """mount(folder, size) mounts a tmpfs; every mount is undone after the test."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "64k") -> Path:
        mount_tmpfs(folder, size)
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        unmount(folder)
