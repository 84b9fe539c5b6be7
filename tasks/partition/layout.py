"""Where a date's files live: the names of the output tree, dates and the paths they give."""

import datetime as dt
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

from typing_extensions import TypeIs

SUMMARY = "summary.json"
FAILURE = "failure.json"
RECEIPTS = ".receipts"
STAGING = ".staging"
LOCKS = ".locks"
PARTITION_LOCK = "partition.lock"  # shared by every task of the date; exclusive for a forced rebuild's swap
BUILD_LOCK = "build.lock"  # shared by a build for all of its dates
TASK_LOCKS = "tasks"  # the task locks of every date: a fixed set of stripes (`locks.task_lock`)
TASK_LOCK_STRIPES = 256
TEMPORARY = ".tmp-"  # infix of a file being written: {name}.tmp-{random}
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_STAGED_RE = re.compile(r"(\d{4}-\d{2}-\d{2})-([0-9a-f]+)")
_RENAME_EXCHANGE = 2
SCHEME = "s3://"  # an output root on object storage: s3://bucket/prefix (see `objects`)
_BUCKET_RE = re.compile(r"(?!xn--)(?!.*-s3alias$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

StrPath = str | os.PathLike[str]
DateLike = dt.date | str  # a date, or its YYYY-MM-DD text


class FileRecord(TypedDict):
    size: int
    sha256: str


class ObjectPath(PurePosixPath):
    """An object key as a path: `s3://bucket/a/b` is the absolute path /bucket/a/b."""

    def __str__(self) -> str:
        text = super().__str__()
        return SCHEME + text[1:] if self.is_absolute() else text

    @property
    def bucket(self) -> str:
        return self.parts[1]

    @property
    def key(self) -> str:
        return "/".join(self.parts[2:])


def is_object_url(text: Any) -> bool:
    return isinstance(text, str) and text.startswith(SCHEME)


def parse_object_url(url: str) -> ObjectPath:
    """An `s3://bucket[/prefix]` URL as an ObjectPath; ValueError (naming what is wrong) for anything else."""
    if not is_object_url(url):
        raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
    rest = url[len(SCHEME) :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3-63 lower-case letters, digits, '.', '-')")
    if any(part in ("", ".", "..") for part in prefix.strip("/").split("/") if prefix.strip("/")):
        raise ValueError(f"{url!r}: the prefix has an empty, '.' or '..' component")
    if "?" in rest or "#" in rest or "@" in bucket:
        raise ValueError(f"{url!r}: an S3 URL names a bucket and a prefix only")
    return ObjectPath("/" + bucket, *[p for p in prefix.split("/") if p])


def location(root: "str | os.PathLike[str]") -> "Path | ObjectPath":
    """The output root (or any contract path) as a path of its backend."""
    if isinstance(root, (ObjectPath, Path)):
        return root  # paths are immutable: asked for many times a task, so not rebuilt
    return parse_object_url(root) if isinstance(root, str) and is_object_url(root) else Path(root)


def is_object(path: Any) -> TypeIs[ObjectPath]:
    return isinstance(path, ObjectPath)


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
    return location(root) / parse_date(date).isoformat()  # type: ignore[return-value]


def failed_dir(root: StrPath, date: DateLike) -> Path:
    return location(root) / "failed" / parse_date(date).isoformat()  # type: ignore[return-value]


def staging_root(root: StrPath, date: DateLike, token: str) -> Path:
    """The output root a forced rebuild of `date` (identified by `token`, hex digits) builds into."""
    if not re.fullmatch(r"[0-9a-f]+", token or ""):
        raise ValueError(f"invalid rebuild token {token!r}: expected hex digits")
    return location(root) / STAGING / f"{parse_date(date).isoformat()}-{token}"  # type: ignore[return-value]
