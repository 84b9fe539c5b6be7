"""Failure records under failed/{date}/, and the quarantine of rejected input."""

import contextlib
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

from . import durable, objects
from .layout import FAILURE, RECEIPTS, DateLike, StrPath, failed_dir, partition_dir


def read_failure(root: StrPath, date: DateLike) -> dict[str, Any] | None:
    """The failure record the runner left for the date, or None."""
    record = durable.read_json(failed_dir(root, date) / FAILURE)
    return record if isinstance(record, dict) else None


def quarantine(root: StrPath, date: DateLike, snapshot: str, snapshot_receipt: str, report: Mapping[str, Any]) -> None:
    """Move a rejected snapshot (and its validation report) out of the partition into failed/{date}/, so
    the date's source is read again next time; its receipt goes, and the partition if nothing else is in it."""
    where, part = failed_dir(root, date), partition_dir(root, date)
    durable.write_durably(where / "validation.json", json.dumps(report, indent=2, sort_keys=True))
    if objects.is_object(part) and objects.is_object(where):
        objects.copy(part / snapshot, where / snapshot)
        objects.remove([part / snapshot, part / RECEIPTS / snapshot_receipt])
        return
    os.replace(part / snapshot, where / snapshot)
    (part / RECEIPTS / snapshot_receipt).unlink(missing_ok=True)
    for folder in (part / RECEIPTS, part):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    durable.fsync_dir(where)
    durable.fsync_dir(part.parent)


def record_failure(root: StrPath, date: DateLike, record: Mapping[str, Any]) -> None:
    durable.write_durably(failed_dir(root, date) / FAILURE, json.dumps(record, indent=2, sort_keys=True))


def clear_failure(root: StrPath, date: DateLike) -> None:
    where = failed_dir(root, date)
    if objects.is_object(where):
        objects.remove_tree(where)
    else:
        shutil.rmtree(where, ignore_errors=True)


def adopt_failure(staged_root: StrPath, root: StrPath, date: DateLike) -> None:
    """The failure records a failed forced rebuild left under its staging root become the date's own
    (its rejected input is what a person must look at); nothing happens when it left none."""
    source, target = failed_dir(staged_root, date), failed_dir(root, date)
    if objects.is_object(source) and objects.is_object(target):
        names = objects.sizes(source)
        if names:
            clear_failure(root, date)
            for name in names:
                objects.copy(source / name, target / name)
        return
    if source.exists():
        clear_failure(root, date)
        target.parent.mkdir(parents=True, exist_ok=True)
        source.replace(target)
