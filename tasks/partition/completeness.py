"""When a date is whole: its summary seals a manifest of every file; `inspect` names what is wrong.

On a store a summary may name a generation (`generation`: the staging folder of a forced rebuild being
promoted, see `rebuilds`): the files it lists are then there, not beside it.
"""

import datetime as dt
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from . import durable, objects
from .layout import STAGING, SUMMARY, DateLike, StrPath, parse_date, partition_dir
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
        and ("generation" not in summary or _valid_generation(summary["generation"], date))
    )


def _valid_generation(generation: Any, date: DateLike) -> bool:
    day = parse_date(date).isoformat()
    return isinstance(generation, str) and bool(re.fullmatch(rf"{STAGING}/{day}-[0-9a-f]+", generation))


def sealed_folder(root: StrPath, date: DateLike, summary: dict[str, Any] | None) -> Any:
    """The folder holding the files a (valid) summary lists: the date's partition, or on a store the
    generation it names while a forced rebuild is being promoted."""
    generation = (summary or {}).get("generation")
    base = objects.location(root)
    return partition_dir(base / generation if generation else base, date)


def read_summary(root: StrPath, date: DateLike) -> dict[str, Any] | None:
    """The date's summary.json, or None when it is absent, unreadable or not a well-formed summary."""
    summary = durable.read_json(partition_dir(root, date) / SUMMARY)
    return summary if valid_summary(summary, date) else None


# From how many dates `inspect_many` lists a store's partitions together: fewer are asked one LIST each.
LISTED_TOGETHER_FROM = 4


@dataclass
class Inspection:
    """What a date's partition holds: its state, and what is wrong with it ("file: problem")."""

    state: str  # complete | incomplete (a killed or failed run) | damaged | missing
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None


def inspect(root: StrPath, date: DateLike, verify: bool = False) -> Inspection:
    """The date's state from its files alone; `verify` also compares every file's sha256."""
    if objects.is_object(objects.location(root)):
        return _inspect_objects(objects.location(root), date, verify)
    part = partition_dir(root, date)
    try:
        folder = os.stat(part)
    except (FileNotFoundError, NotADirectoryError):
        return Inspection("missing")
    if not stat.S_ISDIR(folder.st_mode):
        return Inspection("damaged", [f"{part.name}: not a directory"])
    if not os.path.exists(os.path.join(part, SUMMARY)):
        return Inspection("incomplete", [f"{SUMMARY}: absent"])
    summary = read_summary(root, date)
    if summary is None:
        return Inspection("damaged", [f"{SUMMARY}: unreadable or not an irisflow summary"])
    problems = files_match(part, summary["manifest"], verify)
    if not problems:
        return Inspection("complete", [], summary)
    damaged = any(not problem.endswith(": absent") for problem in problems)
    return Inspection("damaged" if damaged else "incomplete", problems, summary)


def inspect_many(root: StrPath, dates: list[Any], verify: bool = False) -> list[Inspection]:
    """inspect() of each date, in order. On a store the dates are asked side by side, and a run of dates
    (a backfill's range, a window) is listed together first, a LIST a thousand keys instead of one a date."""
    base = objects.location(root)
    if not objects.is_object(base):
        return [inspect(root, date, verify) for date in dates]
    days = sorted(parse_date(date) for date in dates)
    listed: dict[str, dict[str, int]] | None = None
    if len(days) >= LISTED_TOGETHER_FROM and (days[-1] - days[0]).days < 2 * len(days):  # not sparse
        before = days[0] - dt.timedelta(days=1)
        listed = objects.sizes_by_child(base, before.isoformat(), days[-1].isoformat())
    return objects.in_parallel(
        lambda date: _inspect_objects(
            base, date, verify, None if listed is None else listed.get(parse_date(date).isoformat(), {})
        ),
        dates,
    )


def _inspect_objects(root, date, verify, present=None):
    """`inspect` on a store: one LIST of the date's prefix and one GET of its summary (a second LIST when
    the summary names a generation).

    The LIST and the GET are two moments, and a forced rebuild's promotion (`rebuilds`) may take a step
    between them: a listing made while it copied the new files in, then the new summary it wrote next; or
    the summary naming its generation, then a listing of the generation made once it was gone. A complete
    partition would then read as incomplete, so files that do not match their summary are looked at once
    more, with a LIST made after that GET. (Missing, no summary or a broken one is never such a tear: a
    promotion replaces the live summary, and never removes it.)

    `present` is the first LIST's answer when the caller listed many dates at once (`inspect_many`)."""
    part = partition_dir(root, date)
    for look in range(2):
        if look or present is None:
            present = objects.sizes(part)
        if not present:
            return Inspection("missing")
        if SUMMARY not in present:
            return Inspection("incomplete", [f"{SUMMARY}: absent"])
        summary = read_summary(root, date)
        if summary is None:
            return Inspection("damaged", [f"{SUMMARY}: unreadable or not an irisflow summary"])
        folder = sealed_folder(root, date, summary)
        listed = present if folder == part else objects.sizes(folder)
        problems = files_match(folder, summary["manifest"], verify, listed)
        if not problems:
            return Inspection("complete", [], summary)
    damaged = any(not problem.endswith(": absent") for problem in problems)
    return Inspection("damaged" if damaged else "incomplete", problems, summary)


def is_complete(root: StrPath, date: DateLike, verify: bool = False) -> bool:
    return inspect(root, date, verify).state == "complete"


def incomplete_dates(root: StrPath, dates: list[Any], verify: bool = False) -> list[Any]:
    """The dates that are not complete, in order (`inspect_many`)."""
    found = inspect_many(root, dates, verify)
    return [date for date, seen in zip(dates, found, strict=True) if seen.state != "complete"]


def remove_damaged(root: StrPath, date: DateLike) -> None:
    """Delete every file whose content no longer matches the date's manifest, so the tasks that wrote
    them (and everything built from them) run again; the summary goes too, as it vouched for them."""
    found = inspect(root, date, verify=True)
    if found.state != "damaged" or found.summary is None:
        return
    part, folder = partition_dir(root, date), sealed_folder(root, date, found.summary)
    for problem in found.problems:
        name = problem.partition(": ")[0]
        if name in found.summary["manifest"]:
            durable.remove(folder / name)
    durable.remove(part / SUMMARY)
