# Support module: the one way this tool writes a file, and reads back its own.
#
# write() replaces a file atomically and durably, by one rule: the bytes go
# to a fresh temp file beside the target (a random name, created with
# O_CREAT|O_EXCL|O_NOFOLLOW, so a link planted at a temp name is never
# followed), the temp file is fsync'ed, renamed over the target, and the
# folder is fsync'ed. A reader or a crash sees the old file or the new one.
# No symbolic link is written through: not at the temp name, not at the
# target (refused: SymlinkRefused), not in the folders between the caller's
# trusted folder (`inside`) and the target. read() reads a regular file
# without following a link (and without blocking on a FIFO). May touch: only
# the files its callers name, and the temp files beside them.

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

TEMP_SUFFIX = ".tmp"
_RANDOM_HEX = 16  # characters of randomness in a temp name
_NAME_KEPT = 200  # characters of the target's name in its temp name (names are <= 255 bytes)
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class SymlinkRefused(OSError):
    """A symbolic link where this tool would write (or read back) a file of its own."""

    def __init__(self, link: Path, target: Path | None = None):
        what = "it is" if target is None or link == target else f"{link} is"
        super().__init__(errno.ELOOP, f"{what} a symbolic link, which reportupdater does not "
                                      "follow (replace it with a real file or folder)", str(link))
        self.link = link


class NotRegularFile(OSError):
    """A FIFO, device, socket or folder where a file of this tool should be."""

    def __init__(self, path: Path):
        super().__init__(errno.EINVAL, "not a regular file", str(path))


class TargetExists(FileExistsError):
    """write(..., replace=False) found the target there: nothing was written."""


def temp_name(target: str) -> str:
    """A fresh, unpredictable temp name for `target`: .TARGET.<16 hex>.tmp."""
    return f".{target[:_NAME_KEPT]}.{secrets.token_hex(_RANDOM_HEX // 2)}{TEMP_SUFFIX}"


_TEMP_TARGET = re.compile(rf"(.+)\.[0-9a-f]{{{_RANDOM_HEX}}}")


def temp_target(name: str) -> str | None:
    """The target whose temp file `name` is (as temp_name() names them; the
    target's first 200 characters), or None when it is no temp file. Also
    the fixed `.TARGET.tmp` of older versions of this tool, so that their
    leftovers are cleaned too."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)) or len(name) <= 1 + len(TEMP_SUFFIX):
        return None
    inner = name[1:-len(TEMP_SUFFIX)]
    match = _TEMP_TARGET.fullmatch(inner)
    return match.group(1) if match else inner


def _parts_below(folder: Path, inside: Path) -> tuple[str, ...]:
    try:
        parts = folder.relative_to(inside).parts
    except ValueError:
        raise ValueError(f"{folder} is not inside {inside}") from None
    if ".." in parts:
        raise ValueError(f"{folder} leaves {inside}")
    return parts


@contextmanager
def open_folder(folder: Path, inside: Path | None = None, create: bool = False,
                target: Path | None = None) -> Iterator[int]:
    """A descriptor of `folder`, reached from `inside` (default: the folder
    itself) without following a link below it; created when missing with
    `create`. `inside` is the caller's trusted folder (the output folder an
    operator named): it and its parents may be links. target: the file
    the caller is after, for the error naming a link on the way."""
    inside = folder if inside is None else inside
    parts = _parts_below(folder, inside)
    if create:
        inside.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(inside, _FOLDER_FLAGS)
    try:
        reached = inside
        for part in parts:
            reached = reached / part
            try:
                child = os.open(part, _FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=descriptor)
            except FileNotFoundError:
                if not create:
                    raise
                # (made meanwhile, or a link put there: the open below refuses it)
                with suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=descriptor)
                child = _open_child_folder(part, descriptor, reached, target)
            except OSError as exc:
                raise _explain(exc, part, descriptor, reached, target) from None
            os.close(descriptor)
            descriptor = child
        yield descriptor
    finally:
        os.close(descriptor)


def _open_child_folder(part: str, descriptor: int, reached: Path, target: Path | None) -> int:
    try:
        return os.open(part, _FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=descriptor)
    except OSError as exc:
        raise _explain(exc, part, descriptor, reached, target) from None


def _explain(exc: OSError, name: str, folder_descriptor: int, path: Path,
             target: Path | None = None) -> OSError:
    """ELOOP/ENOTDIR from an O_NOFOLLOW open: say it is a link when it is one."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        try:
            if stat.S_ISLNK(os.stat(name, dir_fd=folder_descriptor, follow_symlinks=False).st_mode):
                return SymlinkRefused(path, target if target is not None else path)
        except OSError:
            pass
    if exc.filename is None:
        exc.filename = str(path)
    return exc


def _resolve_group(group: str) -> int:
    import grp  # only folders with `group:` need it
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise LookupError(f"no such group: {group!r}") from None


def write(path: Path, data: bytes, *, inside: Path | None = None, group: str | None = None,
          replace: bool = True) -> None:
    """Put `data` at `path` atomically and durably (see the header).

    inside: the trusted folder `path` lies in (default: its own folder);
    the folders from there to the file are created when missing and must
    not be links. The file keeps the target's permissions (a new one gets
    0666 minus the umask) and, with `group`, that group. replace=False:
    TargetExists when the target exists (nothing is overwritten).
    Raises OSError (SymlinkRefused for a link at the target or on the way),
    LookupError (unknown group) or ValueError (`path` not inside `inside`);
    no temp file is left behind."""
    gid = _resolve_group(group) if group else -1
    with open_folder(path.parent, inside if inside is not None else path.parent,
                     create=True, target=path) as folder:
        name = path.name
        try:
            existing = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if stat.S_ISLNK(existing.st_mode):
                raise SymlinkRefused(path)
            if not replace:
                raise TargetExists(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
        temp, descriptor = _create_temp(folder, name, path)
        try:
            try:
                view = memoryview(data)
                while view:  # a short write (disk nearly full) must not cut the file
                    view = view[os.write(descriptor, view):]
                if existing is not None:
                    os.fchmod(descriptor, stat.S_IMODE(existing.st_mode))
                if gid != -1:
                    os.fchown(descriptor, -1, gid)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            if replace:
                # rename() replaces a link put at the target meanwhile; never writes through it.
                os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            else:
                _link_new(temp, name, folder, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(temp, dir_fd=folder)
            raise
        os.fsync(folder)


_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}


def _link_new(temp: str, name: str, folder: int, path: Path) -> None:
    """Give the temp file the target's name only if that name is free."""
    try:
        os.link(temp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        raise TargetExists(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # A file system without hard links: check, then rename (a writer that
        # takes the name in between loses its file; names here are fresh).
        try:
            os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            return
        raise TargetExists(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
    os.unlink(temp, dir_fd=folder)


def _create_temp(folder: int, name: str, path: Path) -> tuple[str, int]:
    for _ in range(100):
        temp = temp_name(name)
        try:
            # 0666: the kernel applies the umask (or the folder's default ACL).
            return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o666, dir_fd=folder)
        except FileExistsError:
            continue  # taken (by chance, or planted): another random name
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(path.with_name(temp))
            raise
    raise FileExistsError(errno.EEXIST, "no free temp name", str(path))


def open_append(path: Path, inside: Path | None = None) -> int:
    """A descriptor to append to a NEW regular file at `path` (O_EXCL: an
    existing file or a link there is refused, never followed), reached as
    open_folder does. The caller fsyncs the file, and the folder once
    (fsync_folder) so that its name is durable too."""
    with open_folder(path.parent, inside if inside is not None else path.parent,
                     target=path) as folder:
        try:
            return os.open(path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                           | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=folder)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(path)
            raise


def fsync_folder(folder: Path) -> None:
    """Make the names in `folder` durable (after a create, rename or unlink)."""
    descriptor = os.open(folder, _FOLDER_FLAGS)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read(path: Path, inside: Path | None = None) -> bytes:
    """The bytes of a regular file, reached without following a link (below
    `inside`, default the file's folder). FileNotFoundError when it is
    missing; SymlinkRefused for a link; NotRegularFile for a FIFO, device
    or folder (a FIFO is never waited on)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if inside is None or inside == path.parent:
        # The common case, and planning reads thousands of files: no walk.
        try:
            descriptor = os.open(path, flags)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
                raise SymlinkRefused(path) from None
            raise
    else:
        with open_folder(path.parent, inside, target=path) as folder:
            try:
                descriptor = os.open(path.name, flags, dir_fd=folder)
            except OSError as exc:
                raise _explain(exc, path.name, folder, path) from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise NotRegularFile(path)
        size = status.st_size
        chunks = []
        while chunk := os.read(descriptor, max(size + 1, 1 << 16)):  # +1: sees the end at once
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(descriptor)


def regular_files(folder: Path, inside: Path | None = None) -> list[str]:
    """Names of the regular files in `folder` (links and others left out),
    reached as open_folder does; [] when it does not exist."""
    try:
        with open_folder(folder, inside) as descriptor, os.scandir(descriptor) as entries:
            return sorted(entry.name for entry in entries if entry.is_file(follow_symlinks=False))
    except FileNotFoundError:
        return []


# Folder (device, inode) -> (its mtime, target -> its temp files): planning
# cleans the temp files of every output file, and a folder holds thousands
# of them; it is listed again only when it changed.
_temp_files: dict[tuple[int, int], tuple[int, dict[str, list[str]]]] = {}
_TEMP_FOLDERS_KEPT = 10_000


def remove_stale_temps(folder: Path, target: str | None = None, inside: Path | None = None) -> None:
    """Delete the temp files a killed writer left in `folder` (of `target`, or
    of any target). Only regular files named as write() names them; a link
    is never followed, nor deleted. Call it only while holding the lock that
    keeps other writers of the folder away."""
    try:
        with open_folder(folder, inside) as descriptor:
            status = os.fstat(descriptor)
            key = (status.st_dev, status.st_ino)
            cached = _temp_files.get(key)
            if cached is None or cached[0] != status.st_mtime_ns:
                found: dict[str, list[str]] = {}
                with os.scandir(descriptor) as entries:
                    for entry in entries:
                        owner = temp_target(entry.name)
                        if owner is not None and entry.is_file(follow_symlinks=False):
                            found.setdefault(owner, []).append(entry.name)
                cached = (status.st_mtime_ns, found)
            found = cached[1]
            if target is None:
                stale = [name for names in found.values() for name in names]
                found.clear()
            else:
                stale = found.pop(target[:_NAME_KEPT], []) + (
                    found.pop(target, []) if len(target) > _NAME_KEPT else [])
            for name in stale:
                with suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=descriptor)
            if len(_temp_files) >= _TEMP_FOLDERS_KEPT:
                _temp_files.clear()
            _temp_files[key] = (os.fstat(descriptor).st_mtime_ns if stale else cached[0], found)
    except (OSError, ValueError):
        pass  # nothing to clean, or no way to: a leftover temp file harms nobody
