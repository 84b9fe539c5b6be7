"""What happened to each date of a run, told from Luigi's task events and the date's partition.

A build records the events Luigi's workers fire for its tasks (`recording`); `outcome_of` turns one
date's events, and what its partition holds afterwards, into a DateOutcome: success; skipped (another
process did the date's work); or failure, with the step that failed, a reason an alert can group by
(validation, missing_input, storage, scheduler, error) and a one-line error naming the file or check.
"""

import contextlib
import errno
import re
from dataclasses import dataclass, field

import luigi
import luigi.rpc
from luigi.task import flatten

from tasks import partition
from tasks.base import FOUND_DONE
from tasks.config import source_path
from tasks.files import read_json
from tasks.schema import InputRejected

from ..secrets import mask
from ..state import Reason

# Errors of the disk rather than of the pipeline: the operator frees space or fixes permissions.
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


@dataclass
class DateOutcome:
    """What happened to one date in a run."""

    date: str
    status: str  # success | failure | skipped (already complete) | cancelled (never started: the run was stopped)
    step: str | None = None  # the task family that failed
    reason: str | None = None  # validation | missing_input | storage | scheduler | error
    error: str | None = None
    tasks: list = field(default_factory=list)  # [task_family, seconds, succeeded] per task run
    validation: dict | None = None  # the validation report, when Validate ran in this run
    accuracy: dict | None = None  # model -> accuracy, when the date completed in this run


@dataclass
class RunReport:
    outcomes: list[DateOutcome]
    seconds: float
    emails_sent: int = 0  # failure mails Luigi's workers sent during the run, in whichever process
    email_failures: int = 0  # ... and could not send
    decisions: list = field(default_factory=list)  # the champion decisions the run made (service.champion)

    @property
    def failed(self) -> list[DateOutcome]:
        return [o for o in self.outcomes if o.status == "failure"]


class _TaskEvents:
    """Luigi's task events of the build in progress in this process, grouped by date."""

    by_date = None

    def record(self, kind, task, value=None):
        if self.by_date is not None and hasattr(task, "date"):
            self.by_date.setdefault(task.date.isoformat(), []).append((kind, task, value))


_EVENTS = _TaskEvents()
for _event, _kind in (
    (luigi.Event.PROCESSING_TIME, "time"),
    (luigi.Event.FAILURE, "failure"),
    (luigi.Event.SUCCESS, "success"),
    (luigi.Event.DEPENDENCY_MISSING, "missing"),
    (FOUND_DONE, "found_done"),
):
    luigi.Task.event_handler(_event)(lambda task, value=None, _kind=_kind: _EVENTS.record(_kind, task, value))


@contextlib.contextmanager
def recording():
    """Record the task events of the build made inside the block, in this process: yields
    {date: [(kind, task, value)]}, filled as Luigi's workers fire them."""
    _EVENTS.by_date = events = {}
    try:
        yield events
    finally:
        _EVENTS.by_date = None


def never_built(date, stopped):
    """The outcome of a date no build reported on: cancelled when the run was stopped; otherwise a
    failure, so that a date lost on the way (a bug) is reported and retried, never passed over in silence."""
    if stopped:
        return DateOutcome(date.isoformat(), "cancelled")
    return DateOutcome(
        date.isoformat(), "failure", reason=Reason.ERROR, error="the run ended without building the date"
    )


def outcome_of(root, date, events, crash):
    """The date's outcome from its events in one build (`crash`: the exception that ended the build, or None)."""
    found = partition.inspect(root, date)
    outcome = DateOutcome(date.isoformat(), "success" if found.state == "complete" else "failure")
    found_done = [task for kind, task, _ in events if kind == "found_done"]
    events = [(kind, task, value) for kind, task, value in events if not any(task is t for t in found_done)]
    outcome.tasks = [
        [task.task_family, seconds, not any(k == "failure" and t is task for k, t, _ in events)]
        for kind, task, seconds in events
        if kind == "time"
    ]
    if outcome.status == "success" and not outcome.tasks:  # another process did all of the date's work
        outcome.status = "skipped"
        return outcome
    validated = [
        (kind, task, value)
        for kind, task, value in events
        if task.task_family == "Validate" and kind in ("success", "failure")
    ]
    if validated:
        outcome.validation = _validation_report(root, date, validated[-1][0] == "success")
    if outcome.status == "success":
        assert found.summary is not None  # a complete date is one with a well-formed summary
        outcome.accuracy = {name: m["accuracy"] for name, m in found.summary["models"].items()}
        return outcome
    failures = [(task, exc) for kind, task, exc in events if kind == "failure"]
    missing = [task for kind, task, _ in events if kind == "missing"]
    if failures:
        task, exc = failures[0]
        outcome.step, outcome.error = task.task_family, str(exc)
        if isinstance(exc, InputRejected):
            outcome.reason = Reason.VALIDATION
        elif isinstance(exc, OSError) and exc.errno in STORAGE_ERRORS:
            outcome.reason, outcome.error = Reason.STORAGE, storage_error(exc, flatten(task.output()))
        else:
            outcome.reason = Reason.ERROR
    elif missing:
        outcome.step, outcome.reason = missing[0].task_family, Reason.MISSING_INPUT
        outcome.error = f"input not found: {source_path(date)}"
    elif crash is not None:
        outcome.reason = Reason.SCHEDULER if isinstance(crash, luigi.rpc.RPCError) else Reason.ERROR
        outcome.error = f"{type(crash).__name__}: {crash}"
    else:
        outcome.reason, outcome.error = Reason.ERROR, "not completed; see the Luigi log"
    outcome.error = mask(outcome.error)  # an exception's text may hold a URL with its password
    return outcome


def storage_error(exc, targets=()):
    """'no space left on device: /out/2026-11-24/input.csv': the file, or else the targets being written."""
    if exc.filename:
        path = re.sub(r"\.tmp-[0-9a-f]+$", "", str(exc.filename))  # the target, not its temporary
    else:
        path = ", ".join(target.path for target in targets) or None
    what = (exc.strerror or str(exc)).lower()
    return f"{what}: {path}" if path else what


def _validation_report(root, date, passed):
    folder = partition.partition_dir(root, date) if passed else partition.failed_dir(root, date)
    try:
        return read_json(luigi.LocalTarget(str(folder / "validation.json")))
    except (OSError, ValueError):
        return None
