"""The daemon's one-line status, as `systemctl status irisflow` shows it (systemd's STATUS=)."""

import datetime as dt
from collections import Counter
from typing import NamedTuple

from ..state import SETTLED


class PassRecord(NamedTuple):
    """The latest pass, for the status line: when it ended, its dates, and their counted outcomes (None when
    the pass itself failed)."""

    finished: dt.datetime
    dates: list
    outcomes: list | None


def span(dates, shown=3):
    """Dates for a status line: a few of them, then how many more."""
    names = [d.isoformat() for d in sorted(dates)]
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def status_line(record, window_states, upcoming, zone):
    """'last pass 2026-12-07 02:00 UTC: 1 built; next run 2026-12-08 02:00 UTC; 0 of 7 dates missing'."""
    missing = [s.date for s in window_states if s.state not in SETTLED]
    return "; ".join(
        (
            pass_summary(record, zone),
            f"next run {upcoming.astimezone(zone):%Y-%m-%d %H:%M %Z}" if upcoming else "no next run",
            f"{len(missing)} of {len(window_states)} dates missing" + (f" ({span(missing)})" if missing else ""),
        )
    )


def pass_summary(record, zone):
    if record is None:
        return "no pass yet"
    ended = f"last pass {record.finished.astimezone(zone):%Y-%m-%d %H:%M %Z}"
    if record.outcomes is None:
        return f"{ended}: FAILED outside any task"
    counts = Counter(o.status for o in record.outcomes)
    failed = [f"{o.date} {o.reason}" for o in record.outcomes if o.status == "failure"]
    told = [f"{counts['success']} built"] if counts["success"] else []
    told += [f"{counts['skipped']} already complete"] if counts["skipped"] else []
    told += [f"{len(failed)} FAILED ({', '.join(failed)})"] if failed else []
    waiting = len(record.dates) - len(record.outcomes)
    told += [f"{waiting} awaiting input"] if waiting > 0 else []
    return f"{ended}: " + (", ".join(told) or "nothing to run")
