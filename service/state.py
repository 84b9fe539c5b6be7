"""One state per date, worked out in one place: every surface asks here.

`status` (text and JSON), the backfill plan, the partition view and `report`, the metrics and the
daemon's choice of what is due all read a date's state through `DateStates`, which reads the partition
contract (`tasks.partition`: files, receipts, summary, locks), the failure records and the `Schedule`,
and nothing else. A date is in exactly one state, tried in this order:

    running     a process holds the date's build or partition lock now
    complete    sealed by its summary, every file as recorded, built with today's settings
    stale       complete, but built with other `[iris]` settings than today's (which ones differ)
    damaged     files that differ from what the summary or a receipt recorded (which files)
    waiting     its input was not there, and the schedule still waits for it (until the data deadline)
    failed      its last run failed (reason, step, error)
    incomplete  a partition without all of its files: an interrupted run (which files)
    not_due     nothing yet, and its scheduled time has not come
    missing     nothing yet, though its scheduled time has passed

"Today" is `today()`: the date in `[service] timezone`, wherever it is asked.
"""

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

from tasks import partition

from .schedule import UTC, Schedule


class State(enum.StrEnum):
    """A date's state; listed in the order pages and counts show them (the order they are decided in is
    `DateStates.of`'s)."""

    MISSING = "missing"
    NOT_DUE = "not_due"
    WAITING = "waiting"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    DAMAGED = "damaged"
    RUNNING = "running"
    STALE = "stale"
    COMPLETE = "complete"


class Reason(enum.StrEnum):
    """Why a date failed: what an alert groups by and an operator acts on."""

    VALIDATION = "validation"  # the input was refused: fix the file
    MISSING_INPUT = "missing_input"  # the input never arrived
    STORAGE = "storage"  # the disk is full or read-only: free space, fix permissions
    SCHEDULER = "scheduler"  # luigid could not be reached
    ERROR = "error"  # anything else: the log has the traceback


# Settled states: a run has nothing to do for them. The others a run builds (see service.reporting.plan).
SETTLED = (State.COMPLETE, State.STALE)


@dataclass(frozen=True)
class DateState:
    """A date's state and what explains it."""

    date: dt.date
    state: State
    detail: str = ""  # why, in a few words
    problems: list[str] = field(default_factory=list)  # the files that are wrong, or the settings that differ
    failure: dict[str, Any] | None = None  # the failure record of a failed or waiting date
    summary: dict[str, Any] | None = None  # the summary of a complete or stale date
    until: dt.datetime | None = None  # waiting: the data deadline; not_due: the scheduled time (UTC)

    @property
    def history_changed(self) -> dict[str, Any] | None:
        """A complete date whose input differs from its first snapshot: where, and the old hash."""
        return (self.summary or {}).get("history_changed") or None

    def as_dict(self) -> dict[str, Any]:
        """The date as `status --json` prints it."""
        row: dict[str, Any] = {"date": self.date.isoformat(), "state": str(self.state), "detail": self.detail}
        if self.failure is not None:
            row.update({key: self.failure.get(key) for key in ("reason", "step", "error", "time")})
        if self.problems:
            row["problems"] = list(self.problems)
        if self.until is not None:
            row["until"] = self.until.isoformat()
        if self.history_changed:
            row["history_changed"] = self.history_changed
        return row


class DateStates:
    """The states of the dates under `root`: `wanted` is today's pipeline settings
    (`tasks.config.pipeline_settings()`), `schedule` the daemon's `Schedule`, `now` the clock."""

    def __init__(self, root, wanted: dict[str, Any], schedule: Schedule, now=None, lease_seconds=None) -> None:
        self.root, self.wanted, self.schedule = partition.location(root), wanted, schedule
        self.now = now or (lambda: dt.datetime.now(UTC))
        self.lease_seconds = lease_seconds or partition.DEFAULT_LEASE_SECONDS

    def of(self, date: dt.date, verify: bool = False, running: bool | None = None, found: Any = None) -> DateState:
        """The date's state; `verify` also compares every file with its recorded sha256. `running` says
        whether a process builds it now, and `found` what its files are (`partition.Inspection`), when the
        caller asked already (`of_dates`)."""
        if running is None:
            running = partition.in_progress(self.root, date, self.lease_seconds)
        if running:
            return DateState(date, State.RUNNING, "a process is building it now")
        if found is None:
            found = partition.inspect(self.root, date, verify)
        if found.state == "complete" and found.summary is not None:
            changes = setting_changes(found.summary["settings"], self.wanted)
            if changes:
                return DateState(
                    date, State.STALE, "built with other settings: " + "; ".join(changes), changes, None, found.summary
                )
            changed = found.summary.get("history_changed")
            detail = f"history changed: {changed.get('source')} differs from the first snapshot" if changed else ""
            return DateState(date, State.COMPLETE, detail, summary=found.summary)
        if found.state == "damaged":
            return DateState(date, State.DAMAGED, "; ".join(found.problems), found.problems, summary=found.summary)
        failure = partition.read_failure(self.root, date)
        if failure is not None:
            deadline = self.schedule.deadline(date)
            if failure.get("reason") == Reason.MISSING_INPUT and self.now().astimezone(UTC) < deadline:
                shown = deadline.astimezone(self.schedule.zone)
                return DateState(
                    date,
                    State.WAITING,
                    f"input not there yet; looked for until {shown:%Y-%m-%d %H:%M %Z}",
                    [],
                    failure,
                    until=deadline,
                )
            return DateState(date, State.FAILED, failure_line(failure), [], failure)
        if found.state == "incomplete":
            return DateState(date, State.INCOMPLETE, "; ".join(found.problems), found.problems, summary=found.summary)
        scheduled = self.schedule.scheduled_time(date)
        if scheduled > self.now().astimezone(UTC):
            shown = scheduled.astimezone(self.schedule.zone)
            return DateState(date, State.NOT_DUE, f"scheduled for {shown:%Y-%m-%d %H:%M %Z}", until=scheduled)
        return DateState(date, State.MISSING)

    def today(self) -> dt.date:
        """Today in the schedule's time zone (`[service] timezone`)."""
        return self.schedule.today(self.now())

    def of_dates(self, dates, verify: bool = False) -> list[DateState]:
        """The states of the dates, in order; on a store, asked side by side."""
        if partition.is_object(self.root):
            dates = list(dates)
            running = partition.dates_in_progress(self.root, dates, self.lease_seconds)
            found = dict(zip(dates, partition.inspect_many(self.root, dates, verify), strict=True))
            return partition.objects.in_parallel(
                lambda date: self.of(date, verify, date in running, found[date]), dates
            )
        return [self.of(date, verify) for date in dates]


def failure_line(failure: dict[str, Any]) -> str:
    """'validation in Validate: data/2026-01-01.csv: ...': a failure record's reason, step and first line."""
    headline = str(failure.get("error") or "").partition("\n")[0]
    return f"{failure.get('reason')} in {failure.get('step') or 'the run'}: {headline}".rstrip(": ")


def count(states) -> dict[str, int]:
    """{state: number of dates} in State order, leaving out states no date is in."""
    return {str(state): n for state in State if (n := sum(s.state == state for s in states))}


def setting_changes(built: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """'models: knn, svc -> knn', 'hyperparameters of knn: {...} -> {...}': what differs between the settings
    a date was built with (summary.json's `settings`) and today's, one string each."""
    changes = []
    old_models, new_models = sorted(built.get("models") or []), sorted(wanted["models"])
    if old_models != new_models:
        changes.append(f"models: {', '.join(old_models)} -> {', '.join(new_models)}")
    for key in ("features", "test_size", "seed"):
        if built.get(key) != wanted[key]:
            old, new = built.get(key), wanted[key]
            shown = (", ".join(v) if isinstance(v, list) else v for v in (old, new))
            changes.append("{}: {} -> {}".format(key, *shown))
    old_hyper = built.get("hyperparameters") or {}
    for name in (m for m in new_models if m in old_models):
        if (old_hyper.get(name) or {}) != (wanted["hyperparameters"].get(name) or {}):
            changes.append(
                f"hyperparameters of {name}: {old_hyper.get(name) or {}} -> {wanted['hyperparameters'].get(name) or {}}"
            )
    return changes


def configured_schedule() -> Schedule:
    """The `Schedule` of luigi.cfg's `[service]` (ConfigError naming a bad key)."""
    from .config import checked_settings
    from .schedule import build_trigger

    _, runtime = checked_settings()
    return Schedule(build_trigger(runtime.schedule, runtime.timezone), runtime.catchup_days, runtime.data_deadline)


def configured(now=None) -> DateStates:
    """The states of the configured output root, against today's settings and schedule."""
    from tasks.config import pipeline_settings, settings

    schedule = configured_schedule()  # first: it checks the configuration and resolves the output root
    return DateStates(settings().output_root, pipeline_settings(), schedule, now, settings().lease_seconds)


def today(now: dt.datetime | None = None) -> dt.date:
    """Today's date in `[service] timezone`: the one answer to "which day is it" (CLI, view, daemon)."""
    from .config import service, time_zone

    return (now or dt.datetime.now(UTC)).astimezone(time_zone(service().timezone)).date()
