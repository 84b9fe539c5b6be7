"""Failure records under failed/{date}/, and the quarantine of rejected input."""

import contextlib
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

from . import durable
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
    shutil.rmtree(failed_dir(root, date), ignore_errors=True)
