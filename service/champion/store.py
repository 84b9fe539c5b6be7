"""Where the champion lives on disk, and how a decision is written so that a kill never leaves a champion
the history does not explain.

    {output_root}/champion-history.jsonl   one JSON line per decision, appended: the truth
    {output_root}/champion.json            the champion after the last decision: a copy for readers
    {output_root}/.locks/champion.lock     held (flock) by whoever decides, so no two decisions interleave

On object storage (an s3:// output root) the same two objects sit under the root, the lock is a lease
(`tasks.partition.leases`), and an append rewrites the history object whole: one PUT, never torn.

A decision is written history first: its line is appended with one write and fsynced, then champion.json is
replaced atomically (`tasks.partition.write_durably`) when the champion changed. So at any instant the files
either agree, or the history's last line is a promotion whose champion.json had not been replaced yet; and
a kill during the append leaves at most a last line without its line end. Readers take the history's word
(`read`), skipping a torn last line; the next writer (`locked`) cuts that torn tail and writes champion.json
again from the history, so the two agree again.
"""

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks import partition

CHAMPION = "champion.json"
HISTORY = "champion-history.jsonl"
LOCK = "champion.lock"
DECISIONS = ("promoted", "kept", "blocked", "overridden")
MAX_HISTORY_BYTES = 64 * 1024 * 1024  # about 100 000 decisions: far more than a lifetime of dates
MAX_CHAMPION_BYTES = 64 * 1024


class HistoryUnreadable(OSError):
    """The history cannot be read as irisflow writes it (too large, or not a file)."""


@dataclass
class Ledger:
    """What the history says: every decision in order, and the champion after the last one (or None)."""

    entries: list[dict[str, Any]]

    @property
    def champion(self) -> dict[str, Any] | None:
        return self.entries[-1]["champion"] if self.entries else None

    @property
    def last_decided(self) -> str | None:
        """The newest date an automatic decision (not an override) was made for: dates after it are next."""
        dates = [e["date"] for e in self.entries if e["decision"] != "overridden"]
        return max(dates, default=None)


def _valid_champion(record: Any) -> bool:
    return record is None or (
        isinstance(record, dict)
        and all(isinstance(record.get(key), str) for key in ("date", "model", "digest", "model_file", "sha256"))
        and isinstance(record.get("accuracy"), (int, float))
    )


def _valid_entry(entry: Any) -> bool:
    if not (isinstance(entry, dict) and entry.get("decision") in DECISIONS and _valid_champion(entry.get("champion"))):
        return False
    try:
        partition.parse_date(entry["date"])
    except (KeyError, ValueError):
        return False
    return "champion" in entry


def _history_bytes(root: Any) -> bytes:
    path = root / HISTORY
    if partition.is_object(path):
        try:
            data = partition.durable.read_bytes(path, MAX_HISTORY_BYTES)
        except FileNotFoundError:
            return b""
        if len(data) > MAX_HISTORY_BYTES:
            raise HistoryUnreadable(f"{path}: larger than {MAX_HISTORY_BYTES} bytes; not a history irisflow wrote")
        return data
    try:
        with open(path, "rb") as handle:
            if not os.path.isfile(path):
                raise HistoryUnreadable(f"{path}: not a regular file")
            data = handle.read(MAX_HISTORY_BYTES + 1)
    except FileNotFoundError:
        return b""
    if len(data) > MAX_HISTORY_BYTES:
        raise HistoryUnreadable(f"{path}: larger than {MAX_HISTORY_BYTES} bytes; not a history irisflow wrote")
    return data


def read(root: partition.StrPath) -> Ledger:
    """The decisions of the history under `root`; a torn last line (a writer killed mid-append) and lines
    of another shape are left out."""
    return _parse(_history_bytes(partition.location(root)))


def _parse(data: bytes) -> Ledger:
    complete = data[: data.rfind(b"\n") + 1]
    entries = []
    for line in complete.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if _valid_entry(entry):
            entries.append(entry)
    return Ledger(entries)


def read_champion_file(root: partition.StrPath) -> dict[str, Any] | None:
    """champion.json as it is on disk (None when absent or unreadable)."""
    path = partition.location(root) / CHAMPION
    if partition.is_object(path):
        found = partition.durable.read_json(path)
        return found if isinstance(found, dict) else None
    try:
        with open(path, "rb") as handle:
            found = json.loads(handle.read(MAX_CHAMPION_BYTES))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


class Writer:
    """The history and champion.json of `root`, for the holder of the champion lock (`locked`).

    The history is read once, when the lock is taken, and then kept in memory with each decision appended
    to it as it is written: nobody else writes while the lock is held, and a decision over N dates reads
    the history once instead of N times (which a long backfill paid as the square of its dates)."""

    def __init__(self, root: Any, lease=None):
        self.root, self._lease = root, lease
        self._ledger: Ledger | None = None
        self._repair()

    def ledger(self) -> Ledger:
        """The history as this writer knows it (read again only after an append that failed)."""
        if self._ledger is None:
            self._ledger = read(self.root)
        return self._ledger

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append the decision (fsynced), then make champion.json say what the history now says."""
        if not _valid_entry(entry):
            raise ValueError(f"not a champion decision: {entry!r}")
        ledger = self.ledger()
        entry = {"seq": len(ledger.entries) + 1, **entry}
        path = self.root / HISTORY
        if partition.is_object(path):
            return self._put_history(path, ledger, entry)
        created = not path.exists()
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        self._ledger = None  # until the line is known to be written whole
        handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.write(handle, line) != len(line):  # a full disk: the next writer cuts the torn line
                raise OSError(f"{path}: short write")
            os.fsync(handle)
        finally:
            os.close(handle)
        ledger.entries.append(json.loads(line))  # exactly what a reader of the file gets
        self._ledger = ledger
        if created:
            _fsync_dir(self.root)
        self._match_champion_file(entry["champion"])
        return entry

    def _put_history(self, path, ledger: Ledger, entry: dict[str, Any]) -> dict[str, Any]:
        """append on a store: the whole history again in one PUT, made while this writer's lease holds."""
        self._lease.check()
        entries = [*ledger.entries, json.loads(json.dumps(entry, sort_keys=True))]
        self._ledger = None
        partition.objects.write_bytes(path, b"".join((json.dumps(e, sort_keys=True) + "\n").encode() for e in entries))
        self._ledger = Ledger(entries)
        self._match_champion_file(entry["champion"])
        return entry

    def _repair(self) -> None:
        """Cut a torn last line, drop a killed writer's temporary, and make champion.json agree with the history."""
        if partition.is_object(self.root):
            self._ledger = read(self.root)
            self._match_champion_file(self._ledger.champion)
            return
        for leftover in self.root.glob(f"{CHAMPION}{partition.TEMPORARY}*"):
            leftover.unlink(missing_ok=True)
        path = self.root / HISTORY
        data = _history_bytes(self.root)
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
                os.fsync(handle.fileno())
        self._ledger = _parse(data)
        self._match_champion_file(self._ledger.champion)

    def _match_champion_file(self, champion: dict[str, Any] | None) -> None:
        path = self.root / CHAMPION
        if read_champion_file(self.root) == champion and (champion is not None or not _exists(path)):
            return
        if champion is None:
            if partition.is_object(path):
                partition.objects.remove([path])
                return
            path.unlink(missing_ok=True)
            _fsync_dir(self.root)
        else:
            partition.write_durably(path, json.dumps(champion, indent=2, sort_keys=True))


def _exists(path) -> bool:
    return bool(partition.durable.read_json(path)) if partition.is_object(path) else path.exists()


def _fsync_dir(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def locked(root: partition.StrPath, wait: bool = True) -> Iterator[Writer | None]:
    """The champion lock of `root`, held for the block: yields a Writer (after repairing what a killed
    writer left), or None without `wait` when another process holds it."""
    root = partition.location(root)
    if partition.is_object(root):
        from tasks.config import settings

        lease = partition.leases.TaskLease(root, None, "champion", settings().lease_seconds)
        if not wait and not lease.try_acquire():
            yield None
            return
        lease.acquire() if wait else lease.keep_alive()
        try:
            yield Writer(root, lease)
        finally:
            lease.release()
        return
    lock = root / partition.LOCKS / LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield Writer(root)


def decisions_by_date(root: partition.StrPath) -> dict[str, dict[str, Any]]:
    """{date: the last decision made for it}, as `status --json` and the date pages tell it: the decision,
    the gate that blocked it, why, the scores, and which model was champion after it."""
    decided = {}
    for entry in read(root).entries:
        champion = entry["champion"]
        decided[entry["date"]] = {
            "decision": entry["decision"],
            "gate": entry.get("gate"),
            "reason": entry.get("reason"),
            "scores": entry.get("scores"),
            "time": entry.get("time"),
            "champion": None if champion is None else {"date": champion["date"], "model": champion["model"]},
        }
    return decided


def current(root: partition.StrPath) -> Ledger:
    """The history, with champion.json brought into agreement with it when nobody is deciding now."""
    ledger = read(root)
    where = partition.location(root)
    if read_champion_file(root) != ledger.champion and (partition.is_object(where) or where.is_dir()):
        with locked(root, wait=False) as writer:
            if writer is not None:
                return writer.ledger()
    return ledger
