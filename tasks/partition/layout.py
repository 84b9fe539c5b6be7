"""Where a date's files live: the names of the output tree, dates and the paths they give."""

import datetime as dt
import os
import re
from pathlib import Path
from typing import TypedDict

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
