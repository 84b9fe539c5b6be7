"""The locks that keep two builders of one task apart, and tell whether a date is being built now.

On a local (or shared POSIX) root they are flock locks; on a store, leases (`leases`), which expire after
`lease_seconds` when their holder stops renewing them.
"""

import contextlib
import fcntl
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import leases
from .layout import (
    BUILD_LOCK,
    LOCKS,
    PARTITION_LOCK,
    TASK_LOCK_STRIPES,
    TASK_LOCKS,
    DateLike,
    StrPath,
    is_object,
    location,
    parse_date,
)
from .leases import DEFAULT_LEASE_SECONDS


@contextlib.contextmanager
def flock(path, mode):
    """Hold the flock `mode` on `path`, made (with its folder) when missing."""
    try:
        handle = open(path, "a+")  # readable and writable: flock over NFS becomes a POSIX lock
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    with handle:
        fcntl.flock(handle, mode)
        yield


@contextlib.contextmanager
def task_lock(
    root: StrPath, date: DateLike, name: str, lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> Iterator["leases.TaskLease | None"]:
    """Held while a task of the date runs, by whichever process runs it (runner, stock luigi, a worker on
    another host sharing the root): the same task never runs twice at once, and a forced rebuild's swap
    (which takes the partition lock exclusively) never happens under a running task. Yields the lease on
    a store (check it before sealing), None on a file system."""
    base = location(root)
    if is_object(base):
        with leases.task_lease(base, date, name, lease_seconds) as lease:
            yield lease
        return
    day = parse_date(date).isoformat()
    with (
        flock(Path(root) / LOCKS / day / PARTITION_LOCK, fcntl.LOCK_SH),
        flock(_stripe(root, day, name), fcntl.LOCK_EX),
    ):
        yield None


def _stripe(root: StrPath, day: str, name: str) -> Path:
    """The lock file of the date's task `name`: one of a fixed set shared by every date's tasks, so a cold
    date's tasks create no lock files of their own (creating a file costs ten times opening one). Two
    tasks that draw the same stripe only take turns; a task holds no other task's lock, so none waits in a
    circle."""
    stripe = zlib.crc32(f"{day}/{name}".encode()) % TASK_LOCK_STRIPES
    return Path(root) / LOCKS / TASK_LOCKS / f"{stripe:03d}.lock"


@contextlib.contextmanager
def building(root: StrPath, dates: Iterable[DateLike], lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Iterator[None]:
    """Held (shared) by a build for each of its dates from start to end, so the date reads as running
    between its tasks too, and during a forced rebuild, whose tasks lock their staging root instead."""
    base = location(root)
    if is_object(base):
        with leases.building(base, dates, lease_seconds):
            yield
        return
    with contextlib.ExitStack() as held:
        for date in dates:
            folder = Path(root) / LOCKS / parse_date(date).isoformat()
            held.enter_context(flock(folder / BUILD_LOCK, fcntl.LOCK_SH))
        yield


def dates_in_progress(
    root: StrPath, dates: Iterable[DateLike], lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> set[DateLike]:
    """Those of the dates `in_progress` now; on a store from one listing of every date's leases."""
    base = location(root)
    if is_object(base):
        held = leases.dates_in_progress(base, lease_seconds)
        return {date for date in dates if parse_date(date).isoformat() in held}
    return {date for date in dates if in_progress(root, date, lease_seconds)}


def in_progress(root: StrPath, date: DateLike, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> bool:
    """True when some process holds the date's build or partition lock now: a build or a task is at work
    on it. Asked without waiting (and without creating anything); a lock found free is released at once."""
    base = location(root)
    if is_object(base):
        return leases.in_progress(base, date, lease_seconds)
    folder = os.path.join(root, LOCKS, parse_date(date).isoformat())  # a str: asked of every date a view shows
    for name in (BUILD_LOCK, PARTITION_LOCK):
        try:
            handle = open(os.path.join(folder, name), "rb")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    return False
