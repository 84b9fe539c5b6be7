"""What state each date is in, read from the output tree alone (no pandas, no scikit-learn)."""
from pathlib import Path

from tasks import partition


def date_status(root, date):
    """One date: complete, failed (with why), incomplete (naming what is missing) or missing."""
    entry = {"date": date.isoformat()}
    missing = partition.missing_outputs(root, date)
    if missing == []:
        return {**entry, "state": "complete"}
    failure = partition.read_failure(root, date)
    if failure is not None:
        return {**entry, "state": "failed", "reason": failure.get("reason"), "step": failure.get("step"),
                "error": failure.get("error"), "time": failure.get("time")}
    if missing:
        return {**entry, "state": "incomplete", "missing": missing}
    if partition.partition_dir(root, date).exists():
        return {**entry, "state": "incomplete", "missing": [partition.SUMMARY]}
    return {**entry, "state": "missing"}


def statuses(root, dates):
    return [date_status(Path(root), d) for d in dates]
