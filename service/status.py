"""What state each date is in, read from the output tree alone (no pandas, no scikit-learn)."""
from pathlib import Path

from tasks import partition


def date_status(root, date, verify=False):
    """One date: complete, failed (with why), incomplete or damaged (naming what is wrong), or missing.

    A complete date whose input changed since it was first built says so (`history_changed`)."""
    entry = {"date": date.isoformat()}
    found = partition.inspect(root, date, verify)
    if found.state == "complete":
        changed = found.summary.get("history_changed")
        return {**entry, "state": "complete", **({"history_changed": changed} if changed else {})}
    failure = partition.read_failure(root, date)
    if failure is not None:
        return {**entry, "state": "failed", "reason": failure.get("reason"), "step": failure.get("step"),
                "error": failure.get("error"), "time": failure.get("time")}
    if found.state == "missing":
        return {**entry, "state": "missing"}
    return {**entry, "state": found.state, "problems": found.problems}


def statuses(root, dates, verify=False):
    return [date_status(Path(root), d, verify) for d in dates]
