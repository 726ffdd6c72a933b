# Runner support: one run per query folder.
#
# A POSIX lock (lockf) on QUERY_FOLDER/.reportupdater.lock. The OS drops it
# when the process dies, and children never inherit it, so a killed run
# never blocks the next one. May touch: that one lock file.

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = ".reportupdater.lock"


class FolderBusy(Exception):
    """Another process holds the folder's lock."""


class LockError(Exception):
    """The lock file cannot be created or locked (permissions, not a file)."""


class FolderLock:
    def __init__(self, query_folder: Path):
        self.path = query_folder / LOCK_NAME
        self._descriptor: int | None = None

    def __enter__(self) -> "FolderLock":
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        except OSError as exc:
            raise LockError(f"{self.path}: cannot create the lock file: {exc.strerror} (the user "
                            "running reportupdater needs write access to the query folder)") from None
        try:
            # lockf (POSIX record lock), not flock: a script forked by the
            # run but not yet exec'd must not keep holding it after a kill.
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            os.close(descriptor)
            raise FolderBusy(f"{self.path}: another run holds this query folder") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc_info) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing releases the flock
            self._descriptor = None
