"""Every run of any date goes through here: dates → builds of IrisPipeline tasks → one outcome per date.

The CLI's `run` and `backfill` and the daemon's passes all call `run_dates`. It skips complete dates
without touching Luigi, hands the rest to `luigi.build` in chunks (Luigi's local scheduler slows down with
the square of the tasks it holds), spreads chunks over this process and helper processes, and turns
Luigi's task events into one outcome per date, recording why a failed date failed under
`{output_root}/failed/{date}/failure.json` (removed again once the date succeeds).

What a date's files must be, and the locks that keep two builders of one task apart (whichever entry
point or host they run on), are the partition contract's (`tasks.partition`); the runner only decides what
to build and reports. A helper process that dies fails only its chunk, which is retried once in a fresh
process; through a central scheduler, a date another worker is building is taken last and then waited
for, not failed.
"""

import contextlib
import ctypes
import datetime as dt
import errno
import functools
import logging
import math
import multiprocessing
import queue
import random
import re
import signal
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path

import luigi
import luigi.interface
import luigi.rpc
import luigi.task_register
from luigi.task import flatten

from tasks import config as task_config, partition
from tasks.iris import FOUND_DONE, IrisPipeline, one_thread_each, read_json, source_path
from tasks.schema import InputRejected

from . import notifications
from .config import central_scheduler, checked_settings, scheduler_url
from .defaults import use_packaged_defaults
from .scheduler_client import ReportingWorker, remote_scheduler

# Errors of the disk rather than of the pipeline: the operator frees space or fixes permissions.
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
SCHEDULER_CONNECT_TIMEOUT = 5  # seconds a central scheduler may take to accept connections (a restart)
SCHEDULER_RETRY_SECONDS = 0.25
OTHERS_POLL_SECONDS = 0.5  # how often a date another worker is building is looked at again
PATIENT_WAIT_SECONDS = 0.05  # ... and how often, within one build, luigid is asked for the next task
PATIENT_IDLE_SECONDS = 2  # how long one build waits with nothing to run before it returns
LOG = logging.getLogger(__name__)


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
    root = Path(settings.output_root)
    _recover_staging(root)
    dates = sorted(set(dates))
    todo = dates if force else [d for d in dates if not partition.is_complete(root, d, verify)]
    pending = set(todo)
    outcomes = {d.isoformat(): DateOutcome(d.isoformat(), "skipped") for d in dates if d not in pending}
    done = len(outcomes)
    for outcome in outcomes.values():
        _report_progress(progress, outcome, 0, len(dates))
    emails = {"sent": 0, "failed": 0}
    build = functools.partial(_build_counting_mails, force=force, verify=verify, log_level=log_level)
    central = central_scheduler()
    order = _from_random_chunk(todo, runtime.chunk_size) if central else todo
    chunks = _Chunks(order, runtime.chunk_size, workers, stop, busy=_dates_in_progress if central else None)
    with closing(_run_chunks(chunks, workers, build)) as built:  # closed at once if interrupted
        for chunk_outcomes, chunk_emails in built:
            emails = {key: emails[key] + chunk_emails[key] for key in emails}
            for outcome in chunk_outcomes:
                done += 1
                outcomes[outcome.date] = outcome
                _report_progress(progress, outcome, done, len(dates))
    stopped = stop is not None and stop.is_set()
    return RunReport(
        [outcomes.get(d.isoformat()) or _never_built(d, stopped) for d in dates],
        time.monotonic() - started,
        emails["sent"],
        emails["failed"],
    )


def _never_built(date, stopped):
    """The outcome of a date no build reported on: cancelled when the run was stopped; otherwise a
    failure, so that a date lost on the way (a bug) is reported and retried, never passed over in silence."""
    if stopped:
        return DateOutcome(date.isoformat(), "cancelled")
    return DateOutcome(date.isoformat(), "failure", reason="error", error="the run ended without building the date")


def _from_random_chunk(dates, chunk_size):
    """The dates from a random chunk boundary to the end, then from the start: hosts backfilling one range
    through a central scheduler then start at different places, instead of all asking luigid for the same
    tasks and waiting for each other's (a date's tasks form a chain, so two hosts on one date mostly take
    turns)."""
    offset = random.randrange(0, len(dates), chunk_size) if dates else 0
    return dates[offset:] + dates[:offset]


def _dates_in_progress():
    """The dates whose IrisPipeline the central scheduler holds as PENDING or RUNNING: some worker (another
    host, or a helper of this run) is building them now. Empty if it cannot be asked; the build says why."""
    scheduler = remote_scheduler(scheduler_url(), attempts=1)
    dates = set()
    try:
        for status in ("PENDING", "RUNNING"):
            listed = scheduler.task_list(status=status, search=f"{IrisPipeline.get_task_family()}(") or {}
            for task in listed.values() if "num_tasks" not in listed else ():
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    dates.add(partition.parse_date(task["params"]["date"]))
    except (luigi.rpc.RPCError, ValueError) as exc:  # unreachable, or an answer that is not luigid's
        LOG.debug("could not ask the central scheduler which dates are in progress: %s", exc)
    return dates


def _recover_staging(root):
    try:
        partition.recover_staging(root)
    except OSError as exc:  # an unreadable or full output root: each date's build reports it
        LOG.warning("could not clean up forced rebuilds under %s: %s", root, _storage_error(exc))


def _report_progress(progress, outcome, done, total):
    if progress is not None:
        progress(outcome, done, total)


class _Chunks:
    """The dates still to build, handed out a chunk at a time to whichever process is free (thread-safe).

    A chunk holds at most chunk_size dates, so Luigi's scheduler never holds many tasks, and chunks shrink
    as the dates run out (guided self-scheduling), so every process (and, through a central scheduler,
    every host) finishes at about the same moment.
    With `busy` (through a central scheduler: the dates some worker is building now), a date another
    host is building is put back at the end once, so hosts on one range take different dates instead of
    sharing each date's tasks and waiting for each other's; by the time it comes round again it is
    usually complete and skipped.
    """

    def __init__(self, dates, chunk_size, workers, stop=None, busy: Callable[[], set[dt.date]] | None = None):
        self._dates, self._size = deque(dates), chunk_size
        self._stop, self._busy = stop or threading.Event(), busy
        self._put_back: set[dt.date] = set()
        # Through a central scheduler other hosts may be on the same range: the chunks shrink toward its
        # end as if there were one more process, so the hosts finish together too.
        self._sharing = workers + (busy is not None)
        self.abandoned = False  # the chunks in progress are given up too: no helper builds them again
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._dates)

    def count_full(self):
        """How many full chunks the dates still to build make up."""
        return len(self._dates) // self._size

    def take(self):
        """The next chunk, or [] when every date has been handed out or the run is stopping. When every date
        left is busy, they are put back once and handed out all the same: the build waits for them."""
        busy = self._busy() if self._busy is not None and len(self) else set()
        with self._lock:
            if self._stop.is_set():
                self._dates.clear()
            share = math.ceil(len(self._dates) / (2 * self._sharing)) if self._sharing > 1 else self._size
            size, chunk = min(self._size, max(1, share)), []
            while self._dates and len(chunk) < size:  # ends: a date is put back at most once
                date = self._dates.popleft()
                if date in busy and date not in self._put_back:
                    self._put_back.add(date)
                    self._dates.append(date)
                else:
                    chunk.append(date)
            return chunk

    def close(self):
        """Hand out nothing more (the run was interrupted)."""
        with self._lock:
            self._dates.clear()

    def abandon(self):
        """Hand out nothing more, and give up the chunks in progress (a second Ctrl-C)."""
        self.abandoned = True
        self.close()


def _run_chunks(chunks, workers, build):
    """Yield each chunk's (outcomes, mails) as it finishes, building in this process and workers - 1 others.

    This process builds too rather than idling while it waits: that saves one process start-up (about
    1.5 s of imports) and one process's memory (about 180 MB). A thread per helper process keeps it fed.
    """
    one_thread_each()  # effective when this process has not loaded BLAS yet, as in a CLI run
    helpers = min(workers, chunks.count_full()) - 1  # a helper is worth its start-up for a full chunk
    if helpers < 1:
        while chunk := chunks.take():
            yield _contained(build, chunk)
        return
    finished = queue.SimpleQueue()
    feeding = helpers  # feeders that have not yet put their (None, None): "nothing more from my helper"
    feeders = [
        threading.Thread(target=_feed_helper, args=(chunks, finished, build), daemon=True) for _ in range(helpers)
    ]
    for feeder in feeders:
        feeder.start()
    try:
        while feeding or len(chunks):
            chunk = chunks.take()
            done = [(chunk, _contained(build, chunk))] if chunk else [finished.get()]
            while not finished.empty():
                done.append(finished.get())
            for chunk, result in done:
                if chunk is None:
                    feeding -= 1
                else:
                    yield result
    except BaseException:  # abandoned (a second Ctrl-C): the helpers end now, their chunks unfinished
        chunks.abandon()
        for helper in multiprocessing.active_children():
            helper.kill()
        raise
    finally:
        chunks.close()
        for feeder in feeders:
            feeder.join()


def _contained(build, chunk):
    """Build a chunk in this process; an exception fails that chunk's dates, never the whole run."""
    try:
        return build(chunk)
    except Exception as exc:
        LOG.debug("building %s failed", chunk, exc_info=True)
        return _chunk_failed(chunk, f"{type(exc).__name__}: {exc}")


def _chunk_failed(chunk, error):
    return [DateOutcome(d.isoformat(), "failure", reason="error", error=error) for d in chunk], {"sent": 0, "failed": 0}


def _feed_helper(chunks, finished, build):
    """Keep one helper process building chunks until none are left (or the run stops); put each
    (chunk, result) in finished, then (None, None).

    Each helper has its own one-process pool, so a helper that dies (killed, out of memory) breaks only
    its own chunk: the pool is rebuilt and the chunk tried once more in the fresh process, where dates
    the dead helper finished are found complete and skipped.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    pool = None
    try:
        while chunk := chunks.take():
            result = None
            for attempt in (1, 2):
                pool = pool or ProcessPoolExecutor(1, mp_context=context, initializer=_helper_started)
                try:
                    result = pool.submit(build, chunk).result()
                    break
                except BrokenProcessPool:
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = None
                    if chunks.abandoned:
                        break
                    LOG.warning(
                        "a helper process died while building %s..%s (attempt %d of 2)", chunk[0], chunk[-1], attempt
                    )
                except Exception as exc:  # the build itself raised in the helper
                    result = _chunk_failed(chunk, f"{type(exc).__name__}: {exc}")
                    break
            finished.put(
                (
                    chunk,
                    result
                    or _chunk_failed(
                        chunk, "the helper process building the date died twice (killed, or out of memory?)"
                    ),
                )
            )
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        finished.put((None, None))


def _build_counting_mails(dates, force, verify, log_level):
    """build_chunk and the failure mails Luigi sent meanwhile, so counts made in a worker process travel back."""
    notifications.install()
    before = notifications.tally()
    outcomes = build_chunk(dates, force, verify, log_level)
    return outcomes, notifications.since(before)


def _helper_started():
    """A helper process: one BLAS thread, the configuration its parent read, and killed by the kernel when
    the process that started it dies. The run decides when it stops: a terminal's Ctrl-C reaches the whole
    process group, systemd's SIGTERM the whole unit, and the helper finishes its chunk unless the run
    abandons it."""
    one_thread_each()
    use_packaged_defaults()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def build_chunk(
    dates: Sequence[dt.date], force: bool = False, verify: bool = False, log_level: str = "WARNING"
) -> list[DateOutcome]:
    """Build IrisPipeline for the dates in one luigi.build call; one DateOutcome per date.

    Runs in a helper process or in the caller's. A forced date is built under its own staging root and
    swapped in once complete. Through a central scheduler, a date that another worker is still building
    (so nothing here failed, yet it is not complete) is built again after a pause, until it is complete,
    fails here, or `[service] wait_for_others` has passed.
    """
    _, runtime = checked_settings()
    task_config.settings.cache_clear()  # this build reads the configuration as it is now
    root = Path(task_config.settings().output_root)
    todo = [d for d in dates if force or not partition.is_complete(root, d, verify)]
    if verify:
        for date in todo:
            partition.remove_damaged(root, date)
    outcomes = {}
    with ExitStack() as rebuilds:
        tokens = {d: rebuilds.enter_context(partition.forced_rebuild(root, d)) for d in todo} if force else {}
        deadline = time.monotonic() + runtime.wait_for_others.total_seconds()
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


def _build(tasks, log_level):
    """One luigi.build of the tasks: ({date: events}, the exception that ended it or None)."""
    crash = _unreachable_scheduler() if central_scheduler() and tasks else None
    _EVENTS.by_date = {}
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
    finally:
        events, _EVENTS.by_date = _EVENTS.by_date, None
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
    (`notifications.mail_run`). Only irisflow's builds: a stock `luigi` command mails as Luigi does.
    Their RPCs to a central scheduler go over one kept-alive connection, task states sent with the next
    question (`scheduler_client`).

    Through a central scheduler, a worker whose tasks wait for tasks another worker runs also stays and
    asks luigid again every PATIENT_WAIT_SECONDS, for up to PATIENT_IDLE_SECONDS idle, instead of
    returning at once (Luigi's `keep_alive = False`) and the whole build being made again, its completeness
    checks and RPCs paid twice, after the date's next task was free to run. A failed task keeps it idle
    too, so a date that fails through luigid is told PATIENT_IDLE_SECONDS later.
    """

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


def _unreachable_scheduler():
    """An RPCError when the configured central scheduler does not accept connections, else None.

    Asked before the build, so a dead luigid costs one clear error per date instead of Luigi's
    retries and a traceback for every task.
    """
    url = scheduler_url()
    address = urllib.parse.urlsplit(url)
    if address.scheme not in ("http", "https"):
        return None
    deadline = time.monotonic() + SCHEDULER_CONNECT_TIMEOUT
    while True:  # asked again for a few seconds: luigid being restarted fails no date
        try:
            socket.create_connection((address.hostname, address.port or 80), timeout=SCHEDULER_CONNECT_TIMEOUT).close()
            return None
        except OSError as exc:
            if time.monotonic() + SCHEDULER_RETRY_SECONDS < deadline:
                time.sleep(SCHEDULER_RETRY_SECONDS)
                continue
            return luigi.rpc.RPCError(
                f"central scheduler {url} not reachable ({exc.strerror or exc}); start luigid "
                "or remove [core] default_scheduler_host to use the local scheduler",
                exc,
            )


def _finish(root, date, token, events, crash, still_elsewhere=False):
    """Turn the date's events into an outcome, promote a forced rebuild, and record or clear failure."""
    built_in = partition.staging_root(root, date, token) if token else root
    outcome = _outcome(built_in, date, events, crash)
    if still_elsewhere and outcome.status == "failure":
        outcome.reason, outcome.step = "scheduler", None
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
                    "error": outcome.error,
                    "time": dt.datetime.now(dt.UTC).isoformat(),
                },
            )
    except OSError as exc:  # the same full or read-only disk that failed the run
        LOG.warning("%s: could not record the outcome under %s: %s", outcome.date, root, _storage_error(exc))
    return outcome


def _settle_rebuild(root, date, token, succeeded):
    """Swap a complete forced rebuild in; a failed one leaves the old partition, and its rejected input's
    records (if any) replace the date's failure records. The staging folder goes when its
    `partition.forced_rebuild` ends."""
    if succeeded:
        partition.promote(root, date, token)
        return
    rejected = partition.failed_dir(partition.staging_root(root, date, token), date)
    if rejected.exists():
        partition.clear_failure(root, date)
        target = partition.failed_dir(root, date)
        target.parent.mkdir(parents=True, exist_ok=True)
        rejected.replace(target)


def _outcome(root, date, events, crash):
    outcome = DateOutcome(date.isoformat(), "success" if partition.is_complete(root, date) else "failure")
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
        summary = partition.read_summary(root, date)
        outcome.accuracy = {name: m["accuracy"] for name, m in summary["models"].items()}
        return outcome
    failures = [(task, exc) for kind, task, exc in events if kind == "failure"]
    missing = [task for kind, task, _ in events if kind == "missing"]
    if failures:
        task, exc = failures[0]
        outcome.step, outcome.error = task.task_family, str(exc)
        if isinstance(exc, InputRejected):
            outcome.reason = "validation"
        elif isinstance(exc, OSError) and exc.errno in STORAGE_ERRORS:
            outcome.reason, outcome.error = "storage", _storage_error(exc, flatten(task.output()))
        else:
            outcome.reason = "error"
    elif missing:
        outcome.step, outcome.reason = missing[0].task_family, "missing_input"
        outcome.error = f"input not found: {source_path(date)}"
    elif crash is not None:
        outcome.reason = "scheduler" if isinstance(crash, luigi.rpc.RPCError) else "error"
        outcome.error = f"{type(crash).__name__}: {crash}"
    else:
        outcome.reason, outcome.error = "error", "not completed; see the Luigi log"
    return outcome


def _storage_error(exc, targets=()):
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
