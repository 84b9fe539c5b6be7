"""Locks on an object store, where there is no flock: leases taken with a conditional PUT, kept alive by
a heartbeat, and expiring by the store's clock so that a dead holder does not block anyone for long.

    {root}/.locks/{date}/{task}.lease-{n}   n counts up; the highest n says who holds the task now:
                                            a non-empty object is a holder (its host and pid), an empty
                                            one says the last holder let go
    {root}/.locks/{date}/build.lease-{n}    the same for a whole date, taken by a build (`building`)
    {root}/.locks/{date}/promotion.lease-{n}  the same for a forced rebuild's promotion (`rebuilds`)

To take a task's lease a process creates key n+1 with `If-None-Match: *`, n being the highest key there,
when that one is free (empty) or expired: of any number of processes, on any number of hosts, exactly one
creates each key, so exactly one holds the lease. A holder rewrites its key every third of the lease time
(the store stamps it anew), lets go by writing it empty, and, before it seals its outputs, makes sure its
key is still the highest, so a holder that stalled past its lease while another took over fails rather
than both writing a date's outputs unnoticed.
"""

import concurrent.futures
import contextlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from . import objects
from .layout import LOCKS, DateLike, parse_date
from .objects import ObjectPath

DEFAULT_LEASE_SECONDS = 120.0
POLL_SECONDS = 0.2  # how often a process waiting for a lease looks again
_LEASE_RE = re.compile(r"(?P<task>.+)\.lease-(?P<n>\d{8})")


class LeaseLost(RuntimeError):
    """The lease ran out while its holder worked, and another process took it over."""


def _holder() -> bytes:
    """What a lease says while held: who holds it, and a token of this taking (see `objects.create`)."""
    return f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex}".encode()


class Heartbeat:
    """Keeps leases alive: renews each every third of `seconds`, until stopped."""

    def __init__(self, held: "Iterable[TaskLease | Marker]", seconds: float):
        self.held, self.interval = list(held), seconds / 3
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="irisflow-lease-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        if self.held:
            self._thread.start()
        return self

    def _beat(self):
        while not self._stopped.wait(self.interval):
            for lease in self.held:
                with contextlib.suppress(OSError):  # a missed beat shortens the lease; `check` decides
                    lease.renew()

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


def _leased(found: dict[str, tuple[int, float]]) -> set[str]:
    """The names of every lease (tasks', DATE, PROMOTION) with a key among the folder's objects."""
    return {m["task"] for name in found if (m := _LEASE_RE.fullmatch(name))}


def _any_held(found: dict[str, tuple[int, float]], tasks: Iterable[str], seconds: float) -> bool:
    """Whether the newest lease of any of `tasks` is held now."""
    return any((name := _newest(found, task)) is not None and _live(found[name], seconds) for task in tasks)


def _lease_key(folder: ObjectPath, task: str, number: int) -> ObjectPath:
    return folder / f"{task}.lease-{number:08d}"


DATE = "build"  # the lease a build takes for a whole date (`building`), in place of one per task
# The lease a forced rebuild's promotion takes (`rebuilds`): promotions of a date take turns on it, and it
# neither waits for nor holds off the other leases (a build holds its date's lease until it ends, and may
# wait for other leases meanwhile: a promotion waiting for it could wait forever).
PROMOTION = "promotion"


class TaskLease:
    """The lease of one task of one date (or, named DATE, of the whole date), held from `acquire` (or a
    successful `try_acquire`) to `release`.

    Lease numbers are never reused and never deleted (a process that LISTed a moment ago must not be able
    to create a number someone already passed), so the first lease of a task is one conditional PUT of
    number 1, and later ones a LIST and a PUT. Letting go writes the holder's own key empty.

    A date's lease and its tasks' leases exclude each other: whoever creates one then LISTs the date's
    leases and lets go again when the other kind is held by someone else. Of two processes that race, at
    least one sees the other (the store orders their writes), so they never both go on.
    """

    def __init__(
        self,
        root: ObjectPath,
        date: DateLike | None,
        task: str,
        seconds: float = DEFAULT_LEASE_SECONDS,
    ):
        """The lease `task` of `date` under `root`; with no date, a lease of the root's own (.locks/)."""
        self.folder = _folder(root, date) if date is not None else root / LOCKS
        self.task, self.seconds = task, seconds
        self.number = 0
        self.first = False  # no lease of the date had ever been taken before this one
        self.renewed = 0.0  # when (time.monotonic) the last write of the lease began

    def try_acquire(self) -> bool:
        """One attempt: True when this process now holds the lease."""
        number = 1  # first try: a lease never taken before
        while True:
            started = time.monotonic()
            if objects.create(_lease_key(self.folder, self.task, number), _holder()):
                found = objects.sizes_and_ages(self.folder)
                if self._conflict(found):
                    objects.write_bytes(_lease_key(self.folder, self.task, number), b"")
                    return False
                self.number, self.renewed = number, started
                self.first = number == 1 and all(
                    not _LEASE_RE.fullmatch(name) for name in found if name != self.key.name
                )
                return True
            found = objects.sizes_and_ages(self.folder)
            newest = _newest(found, self.task)
            if newest is None or _live(found[newest], self.seconds) or self._conflict(found):
                return False
            number = _number(newest) + 1

    def _conflict(self, found) -> bool:
        """Whether a lease of the other kind (a task's against the date's, or the other way) is held."""
        if self.task == PROMOTION:
            return False
        others = {DATE} if self.task != DATE else _leased(found) - {DATE, PROMOTION}
        return _any_held(found, others, self.seconds)

    @property
    def key(self) -> ObjectPath:
        return _lease_key(self.folder, self.task, self.number)

    def acquire(self) -> "TaskLease":
        """Wait for the lease (polling while another process holds it), then keep it alive."""
        while not self.try_acquire():
            time.sleep(POLL_SECONDS)
        return self.keep_alive()

    def keep_alive(self) -> "TaskLease":
        """Renew the lease (taken by `try_acquire`) until `release`."""
        self._heartbeat = Heartbeat([self], self.seconds).start()
        return self

    def check(self) -> None:
        """Raise LeaseLost unless this lease is still the task's newest: call it before sealing outputs.

        Nobody can have taken over a lease renewed less than half its time ago (its age on the store is
        counted from a stamp made after the renewal began), so only a holder that stalled asks the store."""
        if time.monotonic() - self.renewed < self.seconds / 2:
            return
        if _newest(objects.sizes_and_ages(self.folder), self.task) != self.key.name:
            raise LeaseLost(
                f"{self.folder}/{self.task}: the lease ran out ([iris] lease_seconds = {self.seconds:g}) and "
                "another process took the task over; this run's outputs are not sealed"
            )

    def renew(self) -> None:
        started = time.monotonic()
        objects.write_bytes(self.key, _holder())
        self.renewed = started

    def release(self) -> None:
        heartbeat = getattr(self, "_heartbeat", None)
        if heartbeat is not None:
            heartbeat.stop()
        if self.number:
            objects.write_bytes(self.key, b"")


def _number(name: str) -> int:
    return int(_LEASE_RE.fullmatch(name)["n"])  # type: ignore[index]


# The date leases this process holds ({(root, date): lease}), taken by `building`: its tasks run under them.
_DATES_HELD: dict[tuple[str, str], TaskLease] = {}


def never_written(root: Any, date: DateLike) -> bool:
    """True when this process holds the date's lease and it was the first lease the date ever had: no
    leased writer wrote a receipt of the date before it, and none can while it is held."""
    held = _DATES_HELD.get((str(root), parse_date(date).isoformat()))
    return held is not None and held.first


@contextlib.contextmanager
def task_lease(root: ObjectPath, date: DateLike, task: str, seconds: float) -> Iterator[TaskLease]:
    """The task's lease, or the date's when this process holds it (`building`)."""
    held = _DATES_HELD.get((str(root), parse_date(date).isoformat()))
    if held is not None:
        yield held
        return
    lease = TaskLease(root, date, task, seconds).acquire()
    try:
        yield lease
    finally:
        lease.release()


@contextlib.contextmanager
def building(root: ObjectPath, dates: Iterable[DateLike], seconds: float) -> Iterator[None]:
    """The dates' leases, for as long as the build lasts: the dates read as running on every host, and the
    tasks of a date run under its lease, with no request of their own.

    All or none: when one date's lease is held elsewhere (or one of its tasks' is), every lease taken is
    let go and the whole build runs on task leases. A process holding date leases then never waits for
    another's, so two builds whose dates overlap cannot each hold a date the other's tasks wait for; a task
    lease is held only while its task runs, never while it waits."""
    taken: list[TaskLease] = []
    for date in dates:
        lease = TaskLease(root, date, DATE, seconds)
        if not lease.try_acquire():
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(TaskLease.release, taken))
            taken = []
            break
        taken.append(lease)
    for lease in taken:
        _DATES_HELD[str(root), lease.folder.name] = lease
    heartbeat = Heartbeat(taken, seconds).start()
    try:
        yield
    finally:
        heartbeat.stop()
        for lease in taken:
            _DATES_HELD.pop((str(root), lease.folder.name), None)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(TaskLease.release, taken))


class Marker:
    """An object that says "alive" while its heartbeat renews it (a forced rebuild's staging folder)."""

    def __init__(self, path: ObjectPath):
        self.path = path

    def renew(self) -> None:
        objects.write_bytes(self.path, _holder())


def in_progress(root: ObjectPath, date: DateLike, seconds: float) -> bool:
    """True when the date's lease or one of its tasks' is held now: one LIST."""
    return _held(objects.sizes_and_ages(_folder(root, date)), seconds)


def _held(found: dict[str, tuple[int, float]], seconds: float) -> bool:
    return _any_held(found, _leased(found), seconds)


def dates_in_progress(root: ObjectPath, seconds: float) -> set[str]:
    """The dates (YYYY-MM-DD) one of whose leases is held now, from one LIST of every date's locks (a
    thousand keys a request) rather than one LIST a date."""
    by_date: dict[str, dict[str, tuple[int, float]]] = {}
    for name, entry in objects.sizes_and_ages(root / LOCKS).items():
        day, _, rest = name.partition("/")
        if rest:
            by_date.setdefault(day, {})[rest] = entry
    return {day for day, found in by_date.items() if _held(found, seconds)}
