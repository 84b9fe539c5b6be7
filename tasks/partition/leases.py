"""Locks on an object store, where there is no flock: leases taken with a conditional PUT, kept alive by
a heartbeat, and expiring by the store's clock so that a dead holder does not block anyone for long.

    {root}/.locks/{date}/{task}.lease-{n}   n counts up; the highest n says who holds the task now:
                                            a non-empty object is a holder (its host and pid), an empty
                                            one says the last holder let go
    {root}/.locks/{date}/build-{token}      a build of the date is under way (`building`)

To take a task's lease a process LISTs the date's locks and creates key n+1 with `If-None-Match: *`,
n being the highest key there, when that one is free (empty) or expired: of any number of processes, on
any number of hosts, exactly one creates each key, so exactly one holds the lease. A holder rewrites its
key every third of the lease time (the store stamps it anew), lets go by creating n+1 empty, and, before it
seals its outputs, checks that its key is still the highest, so a holder that stalled past its lease while
another took over fails rather than both writing a date's outputs unnoticed.
"""

import contextlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

from . import objects
from .layout import LOCKS, DateLike, parse_date
from .objects import ObjectPath

DEFAULT_LEASE_SECONDS = 120.0
POLL_SECONDS = 0.2  # how often a process waiting for a lease looks again
_LEASE_RE = re.compile(r"(?P<task>.+)\.lease-(?P<n>\d{8})")


class LeaseLost(RuntimeError):
    """The lease ran out while its holder worked, and another process took it over."""


def _holder() -> bytes:
    return f"{socket.gethostname()} pid {os.getpid()}".encode()


class Heartbeat:
    """Keeps objects alive: writes each at start and again every third of `seconds`, until stopped."""

    def __init__(self, paths: Iterable[ObjectPath], seconds: float):
        self.paths, self.interval = list(paths), seconds / 3
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="irisflow-lease-heartbeat", daemon=True)

    def start(self, write_first: bool = True) -> "Heartbeat":
        if write_first:
            self.write()
        self._thread.start()
        return self

    def write(self) -> None:
        for path in self.paths:
            objects.write_bytes(path, _holder())

    def _beat(self):
        while not self._stopped.wait(self.interval):
            with contextlib.suppress(OSError):  # a missed beat shortens the lease; the seal's check decides
                self.write()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()


def _folder(root: ObjectPath, date: DateLike) -> ObjectPath:
    return root / LOCKS / parse_date(date).isoformat()


def _newest(found: dict[str, tuple[int, float]], task: str) -> str | None:
    """The name of the task's highest lease among the folder's objects, or None."""
    numbered = [(int(m["n"]), name) for name in found if (m := _LEASE_RE.fullmatch(name)) and m["task"] == task]
    return max(numbered)[1] if numbered else None


def _live(entry: tuple[int, float], seconds: float) -> bool:
    """A holder's lease (non-empty) not yet expired."""
    size, age = entry
    return size > 0 and age < seconds


def _lease_key(folder: ObjectPath, task: str, number: int) -> ObjectPath:
    return folder / f"{task}.lease-{number:08d}"


class TaskLease:
    """The lease of one task of one date, held from `acquire` to `release`."""

    def __init__(self, root: ObjectPath, date: DateLike, task: str, seconds: float = DEFAULT_LEASE_SECONDS):
        self.folder, self.task, self.seconds = _folder(root, date), task, seconds
        self.number = 0
        self._heartbeat: Heartbeat | None = None

    def acquire(self) -> None:
        while True:
            top, held = self._look()
            if not held and objects.create(_lease_key(self.folder, self.task, top + 1), _holder()):
                self.number = top + 1
                self._heartbeat = Heartbeat([_lease_key(self.folder, self.task, self.number)], self.seconds)
                self._heartbeat.start(write_first=False)
                return
            time.sleep(POLL_SECONDS)

    def _look(self) -> tuple[int, bool]:
        """(the task's highest lease number, or 0; whether that lease is held now)."""
        found = objects.sizes_and_ages(self.folder)
        newest = _newest(found, self.task)
        if newest is None:
            return 0, False
        return int(_LEASE_RE.fullmatch(newest)["n"]), _live(found[newest], self.seconds)  # type: ignore[index]

    def check(self) -> None:
        """Raise LeaseLost unless this lease is still the task's newest: call it before sealing outputs."""
        top, _ = self._look()
        if top != self.number:
            raise LeaseLost(
                f"{self.folder}/{self.task}: the lease ran out ([iris] lease_seconds = {self.seconds:g}) and "
                "another process took the task over; this run's outputs are not sealed"
            )

    def release(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self.number and objects.create(_lease_key(self.folder, self.task, self.number + 1), b""):
            objects.remove(
                _lease_key(self.folder, self.task, n) for n in range(max(1, self.number - 1), self.number + 1)
            )


@contextlib.contextmanager
def task_lease(root: ObjectPath, date: DateLike, task: str, seconds: float) -> Iterator[TaskLease]:
    lease = TaskLease(root, date, task, seconds)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()


@contextlib.contextmanager
def building(root: ObjectPath, dates: Iterable[DateLike], seconds: float) -> Iterator[None]:
    """A marker per date, kept alive while the build lasts, so the dates read as running on every host."""
    token = uuid.uuid4().hex[:12]
    markers = [_folder(root, date) / f"build-{token}" for date in dates]
    heartbeat = Heartbeat(markers, seconds).start()
    try:
        yield
    finally:
        heartbeat.stop()
        objects.remove(markers)


def in_progress(root: ObjectPath, date: DateLike, seconds: float) -> bool:
    """True when a live build marker or a held task lease of the date is there: one LIST."""
    found = objects.sizes_and_ages(_folder(root, date))
    tasks = {m["task"] for name in found if (m := _LEASE_RE.fullmatch(name))}
    markers = [name for name in found if name.startswith("build-")]
    newest = [_newest(found, task) for task in tasks]
    return any(_live(found[name], seconds) for name in markers + [n for n in newest if n is not None])
