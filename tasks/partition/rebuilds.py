"""Forced rebuilds: built under .staging/, swapped in with one atomic exchange, cleaned up after a crash."""

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from . import durable
from .completeness import is_complete
from .layout import (
    _RENAME_EXCHANGE,
    _STAGED_RE,
    LOCKS,
    PARTITION_LOCK,
    STAGING,
    DateLike,
    StrPath,
    parse_date,
    partition_dir,
    staging_root,
)
from .locks import flock


@contextlib.contextmanager
def forced_rebuild(root: StrPath, date: DateLike) -> Iterator[str]:
    """A fresh token for a forced rebuild of the date, locked for as long as the rebuild runs, so a run
    that finds the staging folder unlocked knows its builder is gone; the folder is removed at the end."""
    token = uuid.uuid4().hex[:12]
    where = staging_root(root, date, token)
    lock = where.with_name(where.name + ".lock")
    where.mkdir(parents=True)
    try:
        with flock(lock, fcntl.LOCK_EX):
            yield token
    finally:
        shutil.rmtree(where, ignore_errors=True)
        lock.unlink(missing_ok=True)


def _exchange(first, second):
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def promote(root: StrPath, date: DateLike, token: str) -> None:
    """Swap the complete forced rebuild `token` in for the date's partition, then drop the old one."""
    staged = staging_root(root, date, token)
    new, old = partition_dir(staged, date), partition_dir(root, date)
    folder = Path(root) / LOCKS / parse_date(date).isoformat()
    with flock(folder / PARTITION_LOCK, fcntl.LOCK_EX):
        if not old.exists():
            os.replace(new, old)
        elif not _exchange(new, old):  # e.g. NFS: two renames; the next run finishes a swap cut between them
            retired = staged / "retired"
            retired.mkdir()
            os.replace(old, partition_dir(retired, date))
            os.replace(new, old)
        durable.fsync_dir(root)
        durable.fsync_dir(staged)
    shutil.rmtree(staged, ignore_errors=True)


def recover_staging(root: StrPath) -> None:
    """Clean up after forced rebuilds whose builder died: where the date's partition is gone (a swap cut
    between its two renames) put the complete staged one back, then remove the staging folder."""
    staging = Path(root) / STAGING
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        found = _STAGED_RE.fullmatch(entry.name)
        if not found or not entry.is_dir():
            continue
        lock = entry.with_name(entry.name + ".lock")
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its builder is still at work
            date = parse_date(found.group(1))
            if not partition_dir(root, date).exists():
                for candidate in (entry, entry / "retired"):
                    if is_complete(candidate, date):
                        os.replace(partition_dir(candidate, date), partition_dir(root, date))
                        durable.fsync_dir(root)
                        break
            shutil.rmtree(entry, ignore_errors=True)
        lock.unlink(missing_ok=True)
