"""Files written so that they survive a crash whole or not at all: temporary file, fsync, rename, fsync the folder.

Each primitive also takes an object path (`objects.ObjectPath`) and then asks the store, where a PUT is
already whole or nothing, so the contract's other modules are written once for both backends.
"""

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from . import objects
from .layout import _DATE_RE, TEMPORARY, FileRecord, StrPath, parse_date

MAX_JSON_BYTES = 64 * 1024 * 1024  # far above any summary, receipt or report irisflow writes


def file_record(path: StrPath) -> FileRecord:
    """{"size": bytes, "sha256": hex} of a file."""
    if objects.is_object(path):
        return objects.file_record(path)
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return {"size": os.fstat(handle.fileno()).st_size, "sha256": digest}


def fsync_file(path):
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path):
    """Make the directory's entries (files renamed into it, folders made in it) survive a power loss."""
    handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def make_dirs(folder):
    """mkdir -p, fsyncing the parent of every folder it creates."""
    folder = Path(folder)
    if folder.is_dir():
        return
    make_dirs(folder.parent)
    try:
        folder.mkdir()
    except FileExistsError:
        if not folder.is_dir():  # a file where a folder belongs: damage, replaced
            folder.unlink()
            folder.mkdir()
    fsync_dir(folder.parent)


def write_durably(path: StrPath, text: str) -> None:
    """Write a small text file atomically and durably (temporary file, fsync, rename, fsync the folder)."""
    if objects.is_object(path):
        objects.write_bytes(path, text.encode())
        return
    path = Path(path)
    make_dirs(path.parent)
    temporary = path.with_name(f"{path.name}{TEMPORARY}{uuid.uuid4().hex[:8]}")
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(path.parent)


def remove(path):
    """Remove a file, or a folder standing where a file belongs."""
    if objects.is_object(path):
        objects.remove([path])
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def replace(source, destination):
    """os.replace that also replaces a folder standing where the file belongs."""
    if destination.is_dir() and not destination.is_symlink():
        shutil.rmtree(destination)
    os.replace(source, destination)


def remove_leftovers(part: StrPath) -> None:
    """Delete temporaries that killed writers left anywhere in the partition. Only for the summary's writer:
    it runs once every task of the date is done, when no honest writer has a temporary open. A store
    has no temporaries: its writes are whole PUTs."""
    if objects.is_object(part):
        return
    for leftover in Path(part).rglob(f"*{TEMPORARY}*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def remove_temporaries(path):
    """Temporaries of `path` that a killed writer left (call it holding the writer's lock)."""
    for leftover in path.parent.glob(f"{path.name}{TEMPORARY}*"):
        leftover.unlink(missing_ok=True)


def read_bytes(path: StrPath, limit: int | None = None) -> bytes:
    """A file's bytes (on a store at most `limit`+1 of them); FileNotFoundError when it is absent."""
    if objects.is_object(path):
        data = objects.read_bytes(path, limit)
        if data is None:
            raise FileNotFoundError(f"{path}: absent")
        return data
    return Path(path).read_bytes()


def files_in(folder: StrPath) -> dict[str, int]:
    """{path relative to the folder: size} of every regular file (or object) under it; {} when absent."""
    if objects.is_object(folder):
        return objects.sizes(folder)
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def read_json(path: StrPath) -> Any:
    """A JSON file's content, or None when it is absent or unreadable (any damage reads as absence).
    An object that cannot be read because the store fails is an error (StoreError), not an absence."""
    if objects.is_object(path):
        data = objects.read_bytes(path, MAX_JSON_BYTES)
        try:
            return json.loads(data) if data is not None and len(data) <= MAX_JSON_BYTES else None
        except ValueError:
            return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def dates_present(root: StrPath) -> list[dt.date]:
    """Every date that has a partition or a failure record under root, sorted."""
    base = objects.location(root)
    names: set[str] = set()
    for parent in (base, base / "failed"):
        if objects.is_object(parent):
            names.update(name for name in objects.children(parent) if _DATE_RE.fullmatch(name))
        elif isinstance(parent, Path) and parent.is_dir():
            names.update(p.name for p in parent.iterdir() if _DATE_RE.fullmatch(p.name))
    dates = []
    for name in sorted(names):
        try:
            dates.append(parse_date(name))
        except ValueError:
            continue
    return dates
