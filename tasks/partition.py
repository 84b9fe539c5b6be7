"""Where a date's outputs live, and whether a date is complete, from the file system alone.

This module imports nothing heavy: the runner, `status` and a no-op backfill use it to decide what to
do without loading pandas or scikit-learn.

    {output_root}/{YYYY-MM-DD}/        one partition per date; complete iff summary.json and every
                                       file its manifest lists exist
    {output_root}/failed/{YYYY-MM-DD}/ why the date's last run failed (failure.json) and, for rejected
                                       input, the validation report and the quarantined input
"""
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SUMMARY = "summary.json"
FAILURE = "failure.json"
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(text):
    """Parse a strict YYYY-MM-DD date; anything else raises ValueError (so no path can escape the root)."""
    if isinstance(text, dt.date) and not isinstance(text, dt.datetime):
        return text
    if not isinstance(text, str) or not _DATE_RE.fullmatch(text):
        raise ValueError(f"invalid date {text!r}: expected YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid date {text!r}: no such day") from None


def date_range(start, end):
    """Every date from start to end inclusive."""
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def partition_dir(root, date):
    return Path(root) / parse_date(date).isoformat()


def failed_dir(root, date):
    return Path(root) / "failed" / parse_date(date).isoformat()


def missing_outputs(root, date):
    """Files the date's manifest lists that are absent; None when the date has no summary at all."""
    part = partition_dir(root, date)
    try:
        summary = json.loads((part / SUMMARY).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return [SUMMARY]
    return [name for name in summary.get("manifest", []) if not (part / name).is_file()]


def is_complete(root, date):
    return missing_outputs(root, date) == []


# Stand-in for the lead's partition contract v2 (PARTITION_V2.md), only as far as issue 14 needs it:
# the lead's `read_summary`/`inspect` replace these at merge (no size checks, no verify here).
@dataclass
class Inspection:
    state: str  # complete | incomplete | damaged | missing
    problems: list = field(default_factory=list)  # "relative/path: what is wrong"
    summary: dict | None = None


def read_summary(root, date):
    """The date's summary.json, or None when missing, unparsable or of the wrong shape."""
    try:
        summary = json.loads((partition_dir(root, date) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and isinstance(summary.get("models"), dict) else None


def inspect(root, date, verify=False):
    """What state the date's partition is in, and what is wrong with it."""
    part = partition_dir(root, date)
    if not (part / SUMMARY).exists():
        return Inspection("incomplete", [f"{SUMMARY}: absent"]) if part.is_dir() else Inspection("missing")
    summary = read_summary(root, date)
    if summary is None:
        return Inspection("damaged", [f"{SUMMARY}: unparsable or not a summary"])
    absent = [f"{name}: absent" for name in summary.get("manifest", []) if not (part / name).is_file()]
    return Inspection("incomplete" if absent else "complete", absent, summary)


def read_failure(root, date):
    """The failure record the runner left for the date, or None."""
    try:
        return json.loads((failed_dir(root, date) / FAILURE).read_text())
    except (OSError, ValueError):
        return None


def dates_present(root):
    """Every date that has a partition or a failure record under root, sorted."""
    root = Path(root)
    names = set()
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
