"""Forced rebuilds: built under .staging/, swapped in with one atomic exchange, cleaned up after a crash."""

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from . import durable, leases, objects
from .completeness import is_complete, read_summary
from .layout import (
    _RENAME_EXCHANGE,
    _STAGED_RE,
    LOCKS,
    PARTITION_LOCK,
    STAGING,
    SUMMARY,
    DateLike,
    StrPath,
    parse_date,
    partition_dir,
    staging_root,
)
from .locks import flock


@contextlib.contextmanager
def forced_rebuild(root: StrPath, date: DateLike, lease_seconds: float = leases.DEFAULT_LEASE_SECONDS) -> Iterator[str]:
    """A fresh token for a forced rebuild of the date, locked for as long as the rebuild runs, so a run
    that finds the staging folder unlocked knows its builder is gone; the folder is removed at the end."""
    token = uuid.uuid4().hex[:12]
    where = staging_root(root, date, token)
    if objects.is_object(where):
        marker = where.with_name(where.name + ".lock")
        alive = leases.Marker(marker)
        alive.renew()
        heartbeat = leases.Heartbeat([alive], lease_seconds).start()
        try:
            yield token
        finally:
            heartbeat.stop()
            objects.remove_tree(where)
            objects.remove([marker])
        return
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


def promote(root: StrPath, date: DateLike, token: str, lease_seconds: float = leases.DEFAULT_LEASE_SECONDS) -> None:
    """Swap the complete forced rebuild `token` in for the date's partition, then drop the old one."""
    staged = staging_root(root, date, token)
    new, old = partition_dir(staged, date), partition_dir(root, date)
    if objects.is_object(staged):
        with _promoting(objects.location(root), date, lease_seconds):
            _promote_objects(new, old, f"{STAGING}/{staged.name}")
            objects.remove_tree(staged)
        return
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


@contextlib.contextmanager
def _promoting(root, date, lease_seconds):
    """The date's promotion lease, for one promotion on a store: two of a date (forced rebuilds ending
    together, a run finishing one cut short) take turns, as two swaps do under the exclusive partition
    lock on a disk. Interleaved, one's summary would seal files the other had just deleted."""
    lease = leases.TaskLease(root, date, leases.PROMOTION, lease_seconds).acquire()
    try:
        yield
    finally:
        lease.release()


def _promote_objects(new, old, generation):
    """Promote on a store (see the module's docstring): each step may be repeated after a crash."""
    summary = read_summary(new.parent, new.name)
    if summary is None:
        raise objects.StoreError(f"{new}: the forced rebuild has no valid summary to promote")
    text = json.dumps(summary, indent=2, sort_keys=True)
    objects.write_bytes(
        old / SUMMARY, json.dumps({**summary, "generation": generation}, indent=2, sort_keys=True).encode()
    )
    objects.remove(old / name for name in objects.sizes(old) if name != SUMMARY)
    for name in objects.sizes(new):
        if name != SUMMARY:
            objects.copy(new / name, old / name)
    objects.write_bytes(old / SUMMARY, text.encode())


def _recover_objects(root, staging, lease_seconds):
    """recover_staging on a store: a staged rebuild whose marker stopped beating is finished when the live
    summary names it (its promotion was cut short), and removed."""
    found = objects.sizes_and_ages(staging)
    entries = {name.split("/", 1)[0].removesuffix(".lock") for name in found}  # a marker may be alone
    for entry in sorted(entries):
        match = _STAGED_RE.fullmatch(entry)
        marker = found.get(f"{entry}.lock")
        if match is None or (marker is not None and marker[1] < lease_seconds):
            continue  # not a rebuild, or its builder is still at work
        date = parse_date(match.group(1))
        with _promoting(root, date, lease_seconds):  # the summary as it is once no other promotion runs
            summary = read_summary(root, date)
            generation = f"{STAGING}/{entry}"
            if summary is not None and summary.get("generation") == generation:
                _promote_objects(partition_dir(staging / entry, date), partition_dir(root, date), generation)
            objects.remove_tree(staging / entry)
            objects.remove([staging / f"{entry}.lock"])


def recover_staging(root: StrPath, lease_seconds: float = leases.DEFAULT_LEASE_SECONDS) -> None:
    """Clean up after forced rebuilds whose builder died: where the date's partition is gone (a swap cut
    between its two renames) put the complete staged one back, then remove the staging folder."""
    if objects.is_object(objects.location(root)):
        _recover_objects(objects.location(root), objects.location(root) / STAGING, lease_seconds)
        return
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
