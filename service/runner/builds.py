"""Every run of any date goes through here: dates → builds of IrisPipeline tasks → one outcome per date.

The CLI's `run` and `backfill` and the daemon's passes all call `run_dates`. It skips complete dates
without touching Luigi, hands the rest to `luigi.build` in chunks (Luigi's scheduler slows with the square
of the tasks it holds) that `service.runner.sharing` spreads over processes and hosts, and turns Luigi's
task events into one outcome per date (`service.runner.outcomes`), recording why a failed date failed
under `{output_root}/failed/{date}/failure.json` (removed once the date succeeds).

What a date's files must be, and the locks that keep two builders of one task apart (whichever entry
point or host they run on), are the partition contract's (`tasks.partition`); the runner only decides what
to build and reports. A helper process that dies fails only its chunk, which is retried once in a fresh
process; through a central scheduler, a date another worker is building is taken last and then waited
for, not failed.
"""

import ctypes
import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack, closing

import luigi
import luigi.interface
import luigi.scheduler
import luigi.task_register

from tasks import config as task_config, partition
from tasks.iris import IrisPipeline

from ..central.client import ReportingWorker, remote_scheduler, unreachable_scheduler
from ..config import central_scheduler, checked_settings
from ..reporting import mail
from ..secrets import mask
from ..state import Reason
from .outcomes import DateOutcome, RunReport, never_built, outcome_of, recording, storage_error
from .sharing import Chunks, dates_in_progress, from_random_chunk, run_chunks

OTHERS_POLL_SECONDS = 0.5  # how often a date another worker is building is looked at again
PATIENT_WAIT_SECONDS = 0.05  # ... and how often, within one build, luigid is asked for the next task
PATIENT_IDLE_SECONDS = 2  # how long one build waits with nothing to run before it returns
DECIDE_AFTER_GROWTH = 4  # a run's champion pass once dates finished since the last are a 1/4 of all finished
LOG = logging.getLogger(__name__)


def run_dates(
    dates: Iterable[dt.date],
    *,
    workers: int = 1,
    force: bool = False,
    verify: bool = False,
    progress: Callable[[DateOutcome, int, int], None] | None = None,
    log_level: str = "WARNING",
    stop: threading.Event | None = None,
) -> RunReport:
    """Run the pipeline for every date; complete dates are skipped unless `force`. Returns a RunReport.

    `verify` also compares every file with its recorded sha256, so same-size damage is found and rebuilt.
    `progress(outcome, done, total)` is called as each date finishes. Once `stop` (a threading.Event) is
    set no further chunk is handed out: chunks in progress finish, and dates never started come back
    "cancelled" (in a run not stopped, such a date is a failure). Raises ConfigError before any work when
    the configuration is bad.
    """
    settings, runtime = checked_settings()
    started = time.monotonic()
    root = partition.location(settings.output_root)
    _recover_staging(root)
    dates = sorted(set(dates))
    todo = dates if force else partition.incomplete_dates(root, dates, verify)
    pending = set(todo)
    outcomes = {d.isoformat(): DateOutcome(d.isoformat(), "skipped") for d in dates if d not in pending}
    done = len(outcomes)
    for outcome in outcomes.values():
        _report_progress(progress, outcome, 0, len(dates))
    emails = {"sent": 0, "failed": 0}
    build = functools.partial(
        _build_counting_mails,
        force=force,
        verify=verify,
        log_level=log_level,
        wait_for_others=runtime.wait_for_others.total_seconds(),
    )
    central = central_scheduler()
    order = from_random_chunk(todo, runtime.chunk_size) if central else todo
    chunks = Chunks(order, runtime.chunk_size, workers, stop, busy=dates_in_progress if central else None)
    decisions: list[dict] = []
    undecided = 0  # dates finished since the last champion pass
    with closing(run_chunks(chunks, workers, build)) as built:  # closed at once if interrupted
        for chunk_outcomes, chunk_emails in built:
            emails = {key: emails[key] + chunk_emails[key] for key in emails}
            for outcome in chunk_outcomes:
                done, undecided = done + 1, undecided + 1
                outcomes[outcome.date] = outcome
                pending.discard(partition.parse_date(outcome.date))
                _report_progress(progress, outcome, done, len(dates))
            if pending and DECIDE_AFTER_GROWTH * undecided >= len(todo) - len(pending):
                decisions += decide_champion(root, before=min(pending))
                undecided = 0
    stopped = stop is not None and stop.is_set()
    return RunReport(
        [outcomes.get(d.isoformat()) or never_built(d, stopped) for d in dates],
        time.monotonic() - started,
        emails["sent"],
        emails["failed"],
        decisions + decide_champion(root),
    )


def decide_champion(root, before=None):
    """The champion decisions of the dates completed since the last one (`service.champion`), those before
    `before` if given, each sent as lineage; one that cannot be made is logged and left to the next run.
    A run decides as its helpers build on, up to the first date it has still to build (one an earlier run
    left half-built is not passed over), in passes ever further apart: each reads the whole history."""
    from tasks.lineage import send_champion_decision

    from ..champion import decide_pending

    try:
        decisions = decide_pending(root, before)
    except Exception as exc:  # a damaged model file, a full disk: the dates stay built, the next run decides
        LOG.error("champion not decided under %s: %s: %s", root, type(exc).__name__, exc)
        return []
    for decision in decisions:
        send_champion_decision(partition.parse_date(decision["date"]), decision)
    return decisions


def _recover_staging(root):
    try:
        partition.recover_staging(root, task_config.settings().lease_seconds)
    except OSError as exc:  # an unreadable or full output root: each date's build reports it
        LOG.warning("could not clean up forced rebuilds under %s: %s", root, storage_error(exc))


def _report_progress(progress, outcome, done, total):
    if progress is not None:
        progress(outcome, done, total)


def _build_counting_mails(dates, force, verify, log_level, wait_for_others):
    """build_chunk and the failure mails Luigi sent meanwhile, so counts made in a worker process travel back."""
    mail.install()
    before = mail.tally()
    outcomes = build_chunk(dates, force, verify, log_level, wait_for_others)
    return outcomes, mail.since(before)


def build_chunk(
    dates: Sequence[dt.date],
    force: bool = False,
    verify: bool = False,
    log_level: str = "WARNING",
    wait_for_others: float | None = None,
) -> list[DateOutcome]:
    """Build IrisPipeline for the dates in one luigi.build call; one DateOutcome per date.

    Runs in a helper process or in the caller's. A forced date is built under its own staging root and
    swapped in once complete. Through a central scheduler, a date that another worker is still building
    (so nothing here failed, yet it is not complete) is built again after a pause, until it is complete,
    fails here, or `wait_for_others` seconds have passed (`[service] wait_for_others` when None; a run
    passes the value it checked, so its chunks do not check the configuration again).
    """
    if wait_for_others is None:
        wait_for_others = checked_settings()[1].wait_for_others.total_seconds()
    task_config.settings.cache_clear()  # this build reads the configuration as it is now
    root = partition.location(task_config.settings().output_root)
    todo = list(dates) if force else partition.incomplete_dates(root, list(dates), verify)
    if verify:
        for date in todo:
            partition.remove_damaged(root, date)
    outcomes = {}
    with ExitStack() as rebuilds:
        _hold_build_locks(rebuilds, root, todo)
        lease = task_config.settings().lease_seconds
        tokens = {d: rebuilds.enter_context(partition.forced_rebuild(root, d, lease)) for d in todo} if force else {}
        deadline = time.monotonic() + wait_for_others
        events: dict[str, list] = {}
        crash, pending = None, todo
        while pending:
            batch, crash = _build([IrisPipeline(date=d, rebuild=tokens.get(d, "")) for d in pending], log_level)
            for date, happened in batch.items():
                events.setdefault(date, []).extend(happened)
            pending = [d for d in pending if _built_elsewhere(root, d, events.get(d.isoformat(), []), crash)]
            if pending and time.monotonic() < deadline:
                time.sleep(OTHERS_POLL_SECONDS)
            else:
                break
        for date in todo:
            outcomes[date] = _finish(
                root, date, tokens.get(date), events.get(date.isoformat(), []), crash, still_elsewhere=date in pending
            )
    _release_memory()
    return [outcomes.get(d) or DateOutcome(d.isoformat(), "skipped") for d in dates]


def _hold_build_locks(stack, root, dates):
    """Hold the dates' build locks for the build (they show the dates as running): where they cannot be
    taken (an unwritable output root) the build goes on, and its tasks report the storage error.

    None on object storage through a central scheduler. There a date's lease keeps every other process's
    task leases out of the date until this build ends, while luigid may hand a task of the date to another
    host's worker: that task would wait for this build, and this build (through luigid) for that task,
    until `[service] wait_for_others`. luigid already keeps each task on one worker, and each task still
    takes its own lease, which keeps out any process not on luigid."""
    if central_scheduler() and partition.is_object(root):
        return
    try:
        stack.enter_context(partition.building(root, dates, task_config.settings().lease_seconds))
    except OSError as exc:
        LOG.debug("could not take the build locks under %s: %s", root, storage_error(exc))


def _build(tasks, log_level):
    """One luigi.build of the tasks: ({date: events}, the exception that ended it or None)."""
    crash = unreachable_scheduler() if central_scheduler() and tasks else None
    with recording() as events:
        try:
            if crash is None:
                luigi.build(
                    tasks,
                    worker_scheduler_factory=_WorkersWithoutTaskMail(),
                    local_scheduler=not central_scheduler(),
                    workers=1,
                    log_level=log_level,
                )
        except Exception as exc:  # scheduler gone mid-build, or Luigi itself failed
            crash = exc
    return events, crash


def _built_elsewhere(root, date, events, crash):
    """True when the date is incomplete only because another worker of the central scheduler has it."""
    return (
        central_scheduler()
        and crash is None
        and not partition.is_complete(root, date)
        and not any(kind in ("failure", "missing") for kind, _, _ in events)
    )


class _WorkersWithoutTaskMail(luigi.interface._WorkerSchedulerFactory):  # noqa: SLF001 - build's hook
    """Luigi's workers without their mail per failed task: a run mails once for all its dates
    (`service.reporting.mail.mail_run`). Only irisflow's builds: a stock `luigi` command mails as Luigi does.
    Their RPCs to a central scheduler go over one kept-alive connection, task states sent with the next
    question (`scheduler_client`).

    Through a central scheduler, a worker whose tasks wait for tasks another worker runs also stays and
    asks luigid again every PATIENT_WAIT_SECONDS, for up to PATIENT_IDLE_SECONDS idle, instead of
    returning at once (Luigi's `keep_alive = False`) and the whole build being made again, its completeness
    checks and RPCs paid twice, after the date's next task was free to run. A failed task keeps it idle
    too, so a date that fails through luigid is told PATIENT_IDLE_SECONDS later.
    """

    def create_local_scheduler(self):
        """Luigi's in-process scheduler without its pruning on every request for work (a pass over every
        task for timed-out workers): it lives for one build of one worker."""
        return luigi.scheduler.Scheduler(prune_on_get_work=False, record_task_history=False)

    def create_remote_scheduler(self, url):
        return remote_scheduler(url)

    def create_worker(self, scheduler, worker_processes, assistant=False):
        patient = dict(
            keep_alive=True,
            wait_interval=PATIENT_WAIT_SECONDS,
            wait_jitter=0.0,
            max_keep_alive_idle_duration=dt.timedelta(seconds=PATIENT_IDLE_SECONDS),
        )
        return ReportingWorker(
            scheduler=scheduler,
            worker_processes=worker_processes,
            assistant=assistant,
            send_failure_email=False,
            **(patient if central_scheduler() else {}),
        )


def _release_memory():
    """Let a long-lived process (a big backfill, the daemon) stay at its size after each build.

    Luigi keeps every task instance it ever made in a class-level cache (about 1 MB per 40 dates), and
    glibc keeps freed heap pages (about 8 MB after the first builds) unless asked to hand them back.
    """
    luigi.task_register.Register.clear_instance_cache()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def _finish(root, date, token, events, crash, still_elsewhere=False):
    """Turn the date's events into an outcome, promote a forced rebuild, and record or clear failure."""
    built_in = partition.staging_root(root, date, token) if token else root
    outcome = outcome_of(built_in, date, events, crash)
    if still_elsewhere and outcome.status == "failure":
        outcome.reason, outcome.step = Reason.SCHEDULER, None
        outcome.error = (
            "another worker of the central scheduler was still building the date after [service] wait_for_others"
        )
    try:
        if token:
            _settle_rebuild(root, date, token, outcome.status == "success")
        if outcome.status == "success":
            partition.clear_failure(root, date)
        else:
            partition.record_failure(
                root,
                date,
                {
                    "date": outcome.date,
                    "step": outcome.step,
                    "reason": outcome.reason,
                    "error": mask(outcome.error) if outcome.error else None,
                    "time": dt.datetime.now(dt.UTC).isoformat(),
                },
            )
    except OSError as exc:  # the same full or read-only disk that failed the run
        LOG.warning("%s: could not record the outcome under %s: %s", outcome.date, root, storage_error(exc))
    return outcome


def _settle_rebuild(root, date, token, succeeded):
    """Swap a complete forced rebuild in; a failed one leaves the old partition, and its rejected input's
    records (if any) replace the date's failure records. The staging folder goes when its
    `partition.forced_rebuild` ends."""
    if succeeded:
        partition.promote(root, date, token, task_config.settings().lease_seconds)
        return
    partition.adopt_failure(partition.staging_root(root, date, token), root, date)
