"""The partition contract: where a date's files live, how they are written, and when a date is whole.

Everything that touches the file-system layout of the output root is here, with no heavy imports, so the
runner, `status` and a no-op backfill decide what to do without loading pandas or scikit-learn.

    {root}/{YYYY-MM-DD}/                one partition per date
        input.csv, validated.csv, …     the tasks' outputs
        .receipts/{Task}-{id}.json      one per task: size and sha256 of each output it wrote, and the
                                        sha256 of each input file it read
        summary.json                    written last: the result, the [iris] settings it was built with,
                                        and the manifest (size and sha256 of every other file)
    {root}/failed/{YYYY-MM-DD}/         failure.json, and for rejected input validation.json plus the
                                        quarantined input, so a corrected source is read again
    {root}/.locks/{YYYY-MM-DD}/         flock files: one per task, one for the partition as a whole, and
                                        build.lock, held by a build of the date from start to end
    {root}/.staging/{date}-{token}/     a forced rebuild in progress (and its .lock)

The rules:
- A task's outputs are written to temporary files, fsynced, renamed into place, and then sealed by its
  receipt; a task is done only when its receipt matches its files and the inputs it was built from, so
  outputs that did not all land, or an upstream file rebuilt with other content, make it run again.
- A date is complete when summary.json is a well-formed summary and every file its manifest lists exists
  with the recorded size (and, when verifying, the recorded sha256).
- A forced rebuild is built under .staging/ and swapped in with one atomic exchange of directories, so the
  date has its old or its new complete partition at every instant; a rebuild that died is cleaned up (or,
  where the exchange had to be two renames, finished) by the next run.
"""

import contextlib
import ctypes
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

SUMMARY = "summary.json"
FAILURE = "failure.json"
RECEIPTS = ".receipts"
STAGING = ".staging"
LOCKS = ".locks"
PARTITION_LOCK = "partition.lock"  # shared by every task of the date; exclusive for a forced rebuild's swap
BUILD_LOCK = "build.lock"  # shared by a build for all of its dates
TEMPORARY = ".tmp-"  # infix of a file being written: {name}.tmp-{random}
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_STAGED_RE = re.compile(r"(\d{4}-\d{2}-\d{2})-([0-9a-f]+)")
_RENAME_EXCHANGE = 2

StrPath = str | os.PathLike[str]
DateLike = dt.date | str  # a date, or its YYYY-MM-DD text


class FileRecord(TypedDict):
    size: int
    sha256: str


# -- dates and paths -------------------------------------------------------------------------------------
def parse_date(text: DateLike) -> dt.date:
    """Parse a strict YYYY-MM-DD date; anything else raises ValueError (so no path can escape the root)."""
    if isinstance(text, dt.date) and not isinstance(text, dt.datetime):
        return text
    if not isinstance(text, str) or not _DATE_RE.fullmatch(text):
        raise ValueError(f"invalid date {text!r}: expected YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid date {text!r}: no such day") from None


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every date from start to end inclusive."""
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def partition_dir(root: StrPath, date: DateLike) -> Path:
    return Path(root) / parse_date(date).isoformat()


def failed_dir(root: StrPath, date: DateLike) -> Path:
    return Path(root) / "failed" / parse_date(date).isoformat()


def staging_root(root: StrPath, date: DateLike, token: str) -> Path:
    """The output root a forced rebuild of `date` (identified by `token`, hex digits) builds into."""
    if not re.fullmatch(r"[0-9a-f]+", token or ""):
        raise ValueError(f"invalid rebuild token {token!r}: expected hex digits")
    return Path(root) / STAGING / f"{parse_date(date).isoformat()}-{token}"


def dates_present(root: StrPath) -> list[dt.date]:
    """Every date that has a partition or a failure record under root, sorted."""
    root = Path(root)
    names: set[str] = set()
    for parent in (root, root / "failed"):
        if parent.is_dir():
            names.update(p.name for p in parent.iterdir() if _DATE_RE.fullmatch(p.name))
    dates = []
    for name in sorted(names):
        try:
            dates.append(parse_date(name))
        except ValueError:
            continue
    return dates


# -- durable files ---------------------------------------------------------------------------------------
def file_record(path: StrPath) -> FileRecord:
    """{"size": bytes, "sha256": hex} of a file."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return {"size": os.fstat(handle.fileno()).st_size, "sha256": digest}


def _fsync_file(path):
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path):
    """Make the directory's entries (files renamed into it, folders made in it) survive a power loss."""
    handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _make_dirs(folder):
    """mkdir -p, fsyncing the parent of every folder it creates."""
    folder = Path(folder)
    if folder.is_dir():
        return
    _make_dirs(folder.parent)
    try:
        folder.mkdir()
    except FileExistsError:
        if not folder.is_dir():  # a file where a folder belongs: damage, replaced
            folder.unlink()
            folder.mkdir()
    _fsync_dir(folder.parent)


def write_durably(path: StrPath, text: str) -> None:
    """Write a small text file atomically and durably (temporary file, fsync, rename, fsync the folder)."""
    path = Path(path)
    _make_dirs(path.parent)
    temporary = path.with_name(f"{path.name}{TEMPORARY}{uuid.uuid4().hex[:8]}")
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        _replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _remove(path):
    """Remove a file, or a folder standing where a file belongs."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _replace(source, destination):
    """os.replace that also replaces a folder standing where the file belongs."""
    if destination.is_dir() and not destination.is_symlink():
        shutil.rmtree(destination)
    os.replace(source, destination)


def remove_leftovers(part: StrPath) -> None:
    """Delete temporaries that killed writers left anywhere in the partition. Only for the summary's writer:
    it runs once every task of the date is done, when no honest writer has a temporary open."""
    for leftover in Path(part).rglob(f"*{TEMPORARY}*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def _remove_temporaries(path):
    """Temporaries of `path` that a killed writer left (call it holding the writer's lock)."""
    for leftover in path.parent.glob(f"{path.name}{TEMPORARY}*"):
        leftover.unlink(missing_ok=True)


# -- receipts: what each task wrote ----------------------------------------------------------------------
def receipt_name(task_family: str, relative_outputs: Iterable[str]) -> str:
    """The receipt file name of a task: its family and a digest of where its outputs go, so it is the same
    for the task whatever builds it, and in a staging root as in the real one."""
    digest = hashlib.sha256("\n".join(sorted(relative_outputs)).encode()).hexdigest()[:10]
    return f"{task_family}-{digest}.json"


def _valid_relative(name):
    path = PurePosixPath(name)
    return isinstance(name, str) and name and not path.is_absolute() and ".." not in path.parts


def _valid_records(records):
    return (
        isinstance(records, dict)
        and records
        and all(
            _valid_relative(name)
            and isinstance(record, dict)
            and isinstance(record.get("size"), int)
            and isinstance(record.get("sha256"), str)
            and _SHA256_RE.fullmatch(record["sha256"])
            for name, record in records.items()
        )
    )


def _read_json(path: StrPath) -> Any:
    """A JSON file's content, or None when it is absent or unreadable (any damage reads as absence)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_receipt(part: StrPath, name: str) -> dict[str, Any] | None:
    """The task's receipt as written, or None when it is absent, unreadable or of the wrong shape."""
    receipt = _read_json(Path(part) / RECEIPTS / name)
    if not (
        isinstance(receipt, dict) and _valid_records(receipt.get("outputs")) and isinstance(receipt.get("inputs"), dict)
    ):
        return None
    return receipt


def files_match(part: StrPath, records: Mapping[str, FileRecord], verify: bool = False) -> list[str]:
    """Problems of the files against their records ("name: what is wrong"); [] when they all match."""
    problems = []
    for name, record in records.items():
        path = Path(part) / name
        try:
            info = os.stat(path)
        except OSError:
            problems.append(f"{name}: absent")
            continue
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"{name}: not a regular file")
        elif info.st_size != record["size"]:
            problems.append(f"{name}: {info.st_size} bytes, recorded {record['size']}")
        elif verify and file_record(path)["sha256"] != record["sha256"]:
            problems.append(f"{name}: content differs from its recorded sha256")
    return problems


@contextlib.contextmanager
def publishing(
    part: StrPath,
    relative_outputs: Iterable[str],
    name: str,
    inputs: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Path]]:
    """Temporary paths for a task's outputs ({relative: Path}); when the block ends without error they are
    fsynced, renamed into place together and sealed by the task's receipt `name`, which records each
    output's size and sha256, the `inputs` ({relative: sha256}) and `extra`.

    The old receipt goes first, so between the first rename and the new receipt the task reads as not
    done, and a rerun replaces whatever had landed. Call it holding the task's lock.
    """
    part = Path(part)
    temporaries = {}
    for relative in relative_outputs:
        final = part / relative
        _make_dirs(final.parent)
        _remove_temporaries(final)
        temporaries[relative] = final.with_name(f"{final.name}{TEMPORARY}{uuid.uuid4().hex[:8]}")
    try:
        yield temporaries
    except BaseException:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)
        _remove_empty_folders(part, [part / relative for relative in temporaries])
        raise
    try:
        records = {}
        for relative, temporary in temporaries.items():
            _fsync_file(temporary)
            records[relative] = file_record(temporary)
        receipt = part / RECEIPTS / name
        if os.path.lexists(receipt):
            _remove(receipt)
            _fsync_dir(receipt.parent)
        for relative, temporary in temporaries.items():
            _replace(temporary, part / relative)
        for folder in {(part / relative).parent for relative in temporaries}:
            _fsync_dir(folder)
        write_durably(
            receipt, json.dumps({"outputs": records, "inputs": dict(inputs), **(extra or {})}, indent=1, sort_keys=True)
        )
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)


def _remove_empty_folders(part, paths):
    """Remove the folders between each path and the partition (and the partition) that are empty, so a
    task that failed before writing anything leaves no trace."""
    folders = {folder for path in paths for folder in path.parents if folder == part or part in folder.parents}
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


# -- summary and completeness ----------------------------------------------------------------------------
def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def valid_summary(summary: Any, date: DateLike) -> bool:
    """True when `summary` has the shape IrisPipeline writes for `date`."""
    if not isinstance(summary, dict) or summary.get("date") != parse_date(date).isoformat():
        return False
    models = summary.get("models")
    return bool(
        isinstance(models, dict)
        and models
        and all(
            isinstance(m, dict) and _is_number(m.get("accuracy")) and _is_number(m.get("macro_f1"))
            for m in models.values()
        )
        and summary.get("best_model") in models
        and _is_number(summary.get("best_accuracy"))
        and isinstance(summary.get("settings"), dict)
        and _valid_records(summary.get("manifest"))
    )


def read_summary(root: StrPath, date: DateLike) -> dict[str, Any] | None:
    """The date's summary.json, or None when it is absent, unreadable or not a well-formed summary."""
    summary = _read_json(partition_dir(root, date) / SUMMARY)
    return summary if valid_summary(summary, date) else None


@dataclass
class Inspection:
    """What a date's partition holds: its state, and what is wrong with it ("file: problem")."""

    state: str  # complete | incomplete (a killed or failed run) | damaged | missing
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None


def inspect(root: StrPath, date: DateLike, verify: bool = False) -> Inspection:
    """The date's state from its files alone; `verify` also compares every file's sha256."""
    part = partition_dir(root, date)
    if not part.exists():
        return Inspection("missing")
    if not part.is_dir():
        return Inspection("damaged", [f"{part.name}: not a directory"])
    path = part / SUMMARY
    if not path.exists():
        return Inspection("incomplete", [f"{SUMMARY}: absent"])
    summary = read_summary(root, date)
    if summary is None:
        return Inspection("damaged", [f"{SUMMARY}: unreadable or not an irisflow summary"])
    problems = files_match(part, summary["manifest"], verify)
    if not problems:
        return Inspection("complete", [], summary)
    damaged = any(not problem.endswith(": absent") for problem in problems)
    return Inspection("damaged" if damaged else "incomplete", problems, summary)


def is_complete(root: StrPath, date: DateLike, verify: bool = False) -> bool:
    return inspect(root, date, verify).state == "complete"


def remove_damaged(root: StrPath, date: DateLike) -> None:
    """Delete every file whose content no longer matches the date's manifest, so the tasks that wrote
    them (and everything built from them) run again; the summary goes too, as it vouched for them."""
    found = inspect(root, date, verify=True)
    if found.state != "damaged" or found.summary is None:
        return
    part = partition_dir(root, date)
    for problem in found.problems:
        name = problem.partition(": ")[0]
        if name in found.summary["manifest"]:
            _remove(part / name)
    _remove(part / SUMMARY)


# -- failure records -------------------------------------------------------------------------------------
def read_failure(root: StrPath, date: DateLike) -> dict[str, Any] | None:
    """The failure record the runner left for the date, or None."""
    record = _read_json(failed_dir(root, date) / FAILURE)
    return record if isinstance(record, dict) else None


def quarantine(root: StrPath, date: DateLike, snapshot: str, snapshot_receipt: str, report: Mapping[str, Any]) -> None:
    """Move a rejected snapshot (and its validation report) out of the partition into failed/{date}/, so
    the date's source is read again next time; its receipt goes, and the partition if nothing else is in it."""
    where, part = failed_dir(root, date), partition_dir(root, date)
    write_durably(where / "validation.json", json.dumps(report, indent=2, sort_keys=True))
    os.replace(part / snapshot, where / snapshot)
    (part / RECEIPTS / snapshot_receipt).unlink(missing_ok=True)
    for folder in (part / RECEIPTS, part):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    _fsync_dir(where)
    _fsync_dir(part.parent)


def record_failure(root: StrPath, date: DateLike, record: Mapping[str, Any]) -> None:
    write_durably(failed_dir(root, date) / FAILURE, json.dumps(record, indent=2, sort_keys=True))


def clear_failure(root: StrPath, date: DateLike) -> None:
    shutil.rmtree(failed_dir(root, date), ignore_errors=True)


# -- locks -----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _flock(path, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:  # readable and writable: flock over NFS becomes a POSIX lock
        fcntl.flock(handle, mode)
        yield


@contextlib.contextmanager
def task_lock(root: StrPath, date: DateLike, name: str) -> Iterator[None]:
    """Held while a task of the date runs, by whichever process runs it (runner, stock luigi, a worker on
    another host sharing the root): the same task never runs twice at once, and a forced rebuild's swap
    (which takes the partition lock exclusively) never happens under a running task."""
    folder = Path(root) / LOCKS / parse_date(date).isoformat()
    with _flock(folder / PARTITION_LOCK, fcntl.LOCK_SH), _flock(folder / f"{name}.lock", fcntl.LOCK_EX):
        yield


@contextlib.contextmanager
def building(root: StrPath, dates: Iterable[DateLike]) -> Iterator[None]:
    """Held (shared) by a build for each of its dates from start to end, so the date reads as running
    between its tasks too, and during a forced rebuild, whose tasks lock their staging root instead."""
    with contextlib.ExitStack() as held:
        for date in dates:
            folder = Path(root) / LOCKS / parse_date(date).isoformat()
            held.enter_context(_flock(folder / BUILD_LOCK, fcntl.LOCK_SH))
        yield


def in_progress(root: StrPath, date: DateLike) -> bool:
    """True when some process holds the date's build or partition lock now: a build or a task is at work
    on it. Asked without waiting (and without creating anything); a lock found free is released at once."""
    folder = Path(root) / LOCKS / parse_date(date).isoformat()
    for name in (BUILD_LOCK, PARTITION_LOCK):
        try:
            handle = open(folder / name, "rb")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    return False


# -- forced rebuilds -------------------------------------------------------------------------------------
@contextlib.contextmanager
def forced_rebuild(root: StrPath, date: DateLike) -> Iterator[str]:
    """A fresh token for a forced rebuild of the date, locked for as long as the rebuild runs, so a run
    that finds the staging folder unlocked knows its builder is gone; the folder is removed at the end."""
    token = uuid.uuid4().hex[:12]
    where = staging_root(root, date, token)
    lock = where.with_name(where.name + ".lock")
    where.mkdir(parents=True)
    try:
        with _flock(lock, fcntl.LOCK_EX):
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
    with _flock(folder / PARTITION_LOCK, fcntl.LOCK_EX):
        if not old.exists():
            os.replace(new, old)
        elif not _exchange(new, old):  # e.g. NFS: two renames; the next run finishes a swap cut between them
            retired = staged / "retired"
            retired.mkdir()
            os.replace(old, partition_dir(retired, date))
            os.replace(new, old)
        _fsync_dir(root)
        _fsync_dir(staged)
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
                        _fsync_dir(root)
                        break
            shutil.rmtree(entry, ignore_errors=True)
        lock.unlink(missing_ok=True)
