"""Files written so that they survive a crash whole or not at all: temporary file, fsync, rename, fsync the folder."""

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from .layout import TEMPORARY, FileRecord, StrPath


def file_record(path: StrPath) -> FileRecord:
    """{"size": bytes, "sha256": hex} of a file."""
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
    it runs once every task of the date is done, when no honest writer has a temporary open."""
    for leftover in Path(part).rglob(f"*{TEMPORARY}*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def remove_temporaries(path):
    """Temporaries of `path` that a killed writer left (call it holding the writer's lock)."""
    for leftover in path.parent.glob(f"{path.name}{TEMPORARY}*"):
        leftover.unlink(missing_ok=True)


def read_json(path: StrPath) -> Any:
    """A JSON file's content, or None when it is absent or unreadable (any damage reads as absence)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
