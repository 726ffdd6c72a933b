# Runner support: one run per output folder.
#
# A POSIX lock (lockf) on OUTPUT_FOLDER/.reportupdater.lock: what two runs
# must not share is the output folder (its files, the state file, the
# Graphite queue), and the query folder may be a read-only checkout. Two
# runs of one query folder into two output folders may run at once. The OS
# drops the lock when the process dies, and children never inherit it, so a
# killed run never blocks the next one. The lock file is opened without
# following a link. May touch: the output folder (created when missing) and
# that one lock file.

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

LOCK_NAME = ".reportupdater.lock"


class FolderBusy(Exception):
    """Another process holds the folder's lock."""


class LockError(Exception):
    """The lock file cannot be created or locked (permissions, not a file)."""


class FolderLock:
    def __init__(self, output_folder: Path):
        self.folder = output_folder
        self.path = output_folder / LOCK_NAME
        self._descriptor: int | None = None

    def __enter__(self) -> FolderLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LockError(f"{self.folder}: cannot create the output folder: "
                            f"{exc.strerror}") from None
        try:
            # O_NOFOLLOW: a link planted at the lock's name is never followed
            # (O_CREAT would create, or O_RDWR truncate, its target).
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                                 | os.O_CLOEXEC, 0o664)
        except OSError as exc:
            if os.path.islink(self.path):
                raise LockError(f"{self.path}: cannot open the lock file: it is a symbolic link, "
                                "which reportupdater does not follow (remove it)") from None
            raise LockError(f"{self.path}: cannot create the lock file: {exc.strerror} (the user "
                            "running reportupdater needs write access to the output folder)") from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise LockError(f"{self.path}: the lock file is not a regular file; remove it")
        try:
            # lockf (POSIX record lock), not flock: a script forked by the
            # run but not yet exec'd must not keep holding it after a kill.
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            os.close(descriptor)
            raise FolderBusy(f"{self.path}: another run holds this output folder") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor
        return self

    @property
    def held(self) -> bool:
        """This object holds the lock now (between __enter__ and __exit__)."""
        return self._descriptor is not None

    def __exit__(self, *exc_info) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing releases the lock
            self._descriptor = None
