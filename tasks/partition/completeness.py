"""When a date is whole: its summary seals a manifest of every file; `inspect` names what is wrong."""

from dataclasses import dataclass, field
from typing import Any

from . import durable
from .layout import SUMMARY, DateLike, StrPath, parse_date, partition_dir
from .receipts import files_match, valid_records


def is_number(value):
    """A JSON number: int or float, and not a bool (which Python counts as an int)."""
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
            isinstance(m, dict) and is_number(m.get("accuracy")) and is_number(m.get("macro_f1"))
            for m in models.values()
        )
        and summary.get("best_model") in models
        and is_number(summary.get("best_accuracy"))
        and isinstance(summary.get("settings"), dict)
        and valid_records(summary.get("manifest"))
    )


def read_summary(root: StrPath, date: DateLike) -> dict[str, Any] | None:
    """The date's summary.json, or None when it is absent, unreadable or not a well-formed summary."""
    summary = durable.read_json(partition_dir(root, date) / SUMMARY)
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
            durable.remove(part / name)
    durable.remove(part / SUMMARY)
