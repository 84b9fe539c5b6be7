"""Every run of any date goes through here: dates → chunks of IrisPipeline tasks → luigi.build → outcomes.

The CLI's `run` and `backfill` and the daemon's ticks all call `run_dates`. It skips complete dates
without touching Luigi, hands the rest to `luigi.build` in chunks (Luigi's local scheduler slows down
with the square of the tasks it holds), spreads chunks over worker processes, and turns Luigi's task
events into one outcome per date. Per date it holds a file lock for the whole build, so a backfill and
the daemon never run the same date at once, and records why a failed date failed under
`{output_root}/failed/{date}/failure.json` (removed again once the date succeeds).
"""
import ctypes
import datetime as dt
import errno
import fcntl
import logging
import math
import multiprocessing
import os
import queue
import re
import shutil
import signal
import socket
import threading
import time
import urllib.parse
import uuid
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import luigi
import luigi.interface
import luigi.rpc
import luigi.task_register
import luigi.worker
from luigi.task import flatten

from tasks import partition
from tasks.iris import IrisPipeline, read_json, source_path, write_json
from tasks.schema import InputRejected

from . import notifications
from .config import central_scheduler, checked_settings

# One BLAS/OpenMP thread per worker process: two processes each spinning up a thread per core fight
# over the two cores and run slower than one process alone.
THREAD_LIMITS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Errors of the disk rather than of the pipeline: the operator frees space or fixes permissions.
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
SCHEDULER_CONNECT_TIMEOUT = 5
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
    outcomes: list
    seconds: float
    emails_sent: int = 0  # failure mails Luigi's workers sent during the run, in whichever process
    email_failures: int = 0  # ... and could not send

    @property
    def failed(self):
        return [o for o in self.outcomes if o.status == "failure"]


class _TaskEvents:
    """Luigi's task events of the build in progress in this process, grouped by date."""

    by_date = None

    def record(self, kind, task, value=None):
        if self.by_date is not None and hasattr(task, "date"):
            self.by_date.setdefault(task.date.isoformat(), []).append((kind, task, value))


_EVENTS = _TaskEvents()
for _event, _kind in ((luigi.Event.PROCESSING_TIME, "time"), (luigi.Event.FAILURE, "failure"),
                      (luigi.Event.SUCCESS, "success"), (luigi.Event.DEPENDENCY_MISSING, "missing")):
    luigi.Task.event_handler(_event)(lambda task, value=None, _kind=_kind: _EVENTS.record(_kind, task, value))


@contextmanager
def date_lock(root, date):
    """Hold an exclusive lock on the date for this process; the kernel drops it if the process dies."""
    folder = Path(root) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{date.isoformat()}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def run_dates(dates, *, workers=1, force=False, progress=None, log_level="WARNING", stop=None):
    """Run the pipeline for every date; complete dates are skipped unless `force`. Returns a RunReport.

    `progress(outcome, done, total)` is called as each date finishes. Once `stop` (a threading.Event) is
    set no further chunk is handed out: chunks in progress finish, and dates never started come back
    "cancelled". Raises ConfigError before any work when the configuration is bad.
    """
    settings, runtime = checked_settings()
    started = time.monotonic()
    root = Path(settings.output_root)
    dates = sorted(set(dates))
    todo = dates if force else [d for d in dates if not partition.is_complete(root, d)]
    pending = set(todo)
    outcomes = {d.isoformat(): DateOutcome(d.isoformat(), "skipped") for d in dates if d not in pending}
    done = len(outcomes)
    for outcome in outcomes.values():
        _report_progress(progress, outcome, 0, len(dates))
    emails = {"sent": 0, "failed": 0}
    chunks = _Chunks(todo, runtime.chunk_size, workers, stop)
    with closing(_run_chunks(chunks, workers, force, log_level)) as built:  # closed at once if interrupted
        for chunk_outcomes, chunk_emails in built:
            emails = {key: emails[key] + chunk_emails[key] for key in emails}
            for outcome in chunk_outcomes:
                done += 1
                outcomes[outcome.date] = outcome
                _report_progress(progress, outcome, done, len(dates))
    return RunReport([outcomes.get(d.isoformat()) or DateOutcome(d.isoformat(), "cancelled") for d in dates],
                     time.monotonic() - started,
                     emails["sent"], emails["failed"])


def _report_progress(progress, outcome, done, total):
    if progress is not None:
        progress(outcome, done, total)


class _Chunks:
    """The dates still to build, handed out a chunk at a time to whichever process is free (thread-safe).

    A chunk holds at most chunk_size dates, so Luigi's scheduler never holds many tasks, and chunks shrink
    as the dates run out (guided self-scheduling), so every process finishes at about the same moment.
    """

    def __init__(self, dates, chunk_size, workers, stop=None):
        self._dates, self._size, self._workers = deque(dates), chunk_size, workers
        self._stop = stop or threading.Event()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._dates)

    def count_full(self):
        """How many full chunks the dates still to build make up."""
        return len(self._dates) // self._size

    def take(self):
        """The next chunk, or [] when every date has been handed out or the run is stopping."""
        with self._lock:
            if self._stop.is_set():
                self._dates.clear()
            share = math.ceil(len(self._dates) / (2 * self._workers)) if self._workers > 1 else self._size
            return [self._dates.popleft() for _ in range(min(self._size, max(1, share), len(self._dates)))]

    def close(self):
        """Hand out nothing more (the run was interrupted)."""
        with self._lock:
            self._dates.clear()


def _run_chunks(chunks, workers, force, log_level):
    """Yield each chunk's (outcomes, mails) as it finishes, building in this process and workers - 1 others.

    This process builds too rather than idling while it waits: that saves one process start-up (about
    1.5 s of imports) and one process's memory (about 180 MB). A thread per helper process keeps it fed.
    """
    _one_thread_each()  # effective when this process has not loaded BLAS yet, as in a CLI run
    helpers = min(workers, chunks.count_full()) - 1  # a helper is worth its start-up for a full chunk
    if helpers < 1:
        while chunk := chunks.take():
            yield _build_counting_mails(chunk, force, log_level)
        return
    finished = queue.SimpleQueue()
    feeding = helpers  # feeders that have not yet put their (None, None): "no more from my helper"
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with ProcessPoolExecutor(helpers, mp_context=context, initializer=_start_helper) as pool:
        feeders = [threading.Thread(target=_feed_helper, args=(pool, chunks, finished, force, log_level),
                                    daemon=True) for _ in range(helpers)]
        for feeder in feeders:
            feeder.start()
        try:
            while feeding or len(chunks):
                chunk = chunks.take()
                done = [(chunk, _build_counting_mails(chunk, force, log_level))] if chunk else [finished.get()]
                while not finished.empty():
                    done.append(finished.get())
                for chunk, result in done:
                    if chunk is None:
                        feeding -= 1
                    else:
                        yield result
        except BaseException:  # abandoned (a second Ctrl-C): helpers end now, their chunks unfinished
            for helper in list(pool._processes.values()):  # noqa: SLF001 - Python 3.11 has no kill_workers()
                helper.kill()
            raise
        finally:
            chunks.close()
            for feeder in feeders:
                feeder.join()


def _feed_helper(pool, chunks, finished, force, log_level):
    """Keep one helper process building chunks until none are left (or the run stops); put each
    (chunk, result) in finished, then (None, None)."""
    while chunk := chunks.take():
        try:
            result = pool.submit(_build_counting_mails, chunk, force, log_level).result()
        except BaseException as exc:  # the helper died (killed, out of memory) or was interrupted
            result = ([DateOutcome(d.isoformat(), "failure", reason="error",
                                   error=f"worker process failed: {exc!r}") for d in chunk],
                      {"sent": 0, "failed": 0})
        finished.put((chunk, result))
    finished.put((None, None))


def _build_counting_mails(dates, force, log_level):
    """build_chunk and the failure mails Luigi sent meanwhile, so counts made in a worker process travel back."""
    notifications.install()
    before = notifications.tally()
    outcomes = build_chunk(dates, force, log_level)
    return outcomes, notifications.since(before)


def _start_helper():
    """A helper process: one BLAS thread; the run decides when it stops (a terminal's Ctrl-C reaches the
    whole process group, systemd's SIGTERM the whole unit), and it never outlives the run."""
    _one_thread_each()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), name="irisflow-orphan-watch",
                     daemon=True).start()


def _exit_when_orphaned(parent):
    """End this helper once the run that started it is gone, even killed with SIGKILL (the kernel's
    parent-death signal would fire when the *thread* that spawned the helper ends, too early here)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _one_thread_each():
    """One BLAS/OpenMP thread in this process (from when it loads BLAS), unless the operator chose otherwise."""
    for name in THREAD_LIMITS:
        os.environ.setdefault(name, "1")


def build_chunk(dates, force=False, log_level="WARNING"):
    """Build IrisPipeline for the dates in one luigi.build call; one DateOutcome per date.

    Runs in a worker process or in the caller's. Each date is locked for the whole build and checked
    again once locked, so a date another process finished meanwhile is skipped.
    """
    settings, _ = checked_settings()
    root = Path(settings.output_root)
    with ExitStack() as locks:
        try:
            for date in dates:
                locks.enter_context(date_lock(root, date))
        except OSError as exc:  # the output root is not writable or its disk is full
            return [DateOutcome(d.isoformat(), "failure", reason="storage",
                                error=f"cannot take the date's lock: {_storage_error(exc)}") for d in dates]
        todo = [d for d in dates if force or not partition.is_complete(root, d)]
        for date in todo:
            _remove_abandoned_temporaries(root, date)
        staging = {d: _fresh_staging(root, d) for d in todo} if force else {}
        # An explicit output_root spares every target path a luigi.Config lookup (the costliest per-task step).
        tasks = [IrisPipeline(date=d, output_root=str(staging.get(d, root))) for d in todo]
        crash = _unreachable_scheduler() if central_scheduler() and tasks else None
        _EVENTS.by_date = {}
        try:
            if crash is None:
                luigi.build(tasks, worker_scheduler_factory=_WorkersWithoutTaskMail(),
                            local_scheduler=not central_scheduler(), workers=1, log_level=log_level)
        except Exception as exc:  # scheduler gone mid-build, or Luigi itself failed
            crash = exc
        finally:
            events, _EVENTS.by_date = _EVENTS.by_date, None
        finished = {d: _finish(root, d, staging.get(d), events.get(d.isoformat(), []), crash) for d in todo}
    _release_memory()
    return [finished.get(d) or DateOutcome(d.isoformat(), "skipped") for d in dates]


class _WorkersWithoutTaskMail(luigi.interface._WorkerSchedulerFactory):  # noqa: SLF001 - build's hook
    """Luigi's workers without their mail per failed task: a run mails once for all its dates
    (`notifications.mail_run`). Only irisflow's builds: a stock `luigi` command mails as Luigi does."""

    def create_worker(self, scheduler, worker_processes, assistant=False):
        return luigi.worker.Worker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant,
                                   send_failure_email=False)


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

    Asked once before the build, so a dead luigid costs one clear error per date instead of Luigi's
    retries and a traceback for every task.
    """
    from luigi.interface import core

    settings = core()
    url = settings.scheduler_url or f"http://{settings.scheduler_host}:{settings.scheduler_port}/"
    address = urllib.parse.urlsplit(url)
    if address.scheme not in ("http", "https"):
        return None
    try:
        socket.create_connection((address.hostname, address.port or 80), timeout=SCHEDULER_CONNECT_TIMEOUT).close()
    except OSError as exc:
        return luigi.rpc.RPCError(f"central scheduler {url} not reachable ({exc.strerror or exc}); start luigid "
                                  "or remove [core] default_scheduler_host to use the local scheduler", exc)
    return None


def _remove_abandoned_temporaries(root, date):
    """Delete temporary files a killed or failed run left behind; safe while this process holds the lock."""
    part = partition.partition_dir(root, date)
    for leftover in part.rglob("*-luigi-tmp-*"):
        leftover.unlink(missing_ok=True)
    for folder in sorted((p for p in part.rglob("*") if p.is_dir()), reverse=True) + [part]:
        try:
            folder.rmdir()  # only empty ones: a failed date keeps its whole targets for the next run
        except OSError:
            pass


def _fresh_staging(root, date):
    """An empty output root for a forced rebuild of the date; leftovers of killed rebuilds are removed."""
    staging = Path(root) / ".staging"
    for old in staging.glob(f"{date.isoformat()}-*"):
        shutil.rmtree(old, ignore_errors=True)
    return staging / f"{date.isoformat()}-{uuid.uuid4().hex[:8]}"


def _finish(root, date, staging, events, crash):
    """Turn the date's events into an outcome, promote a forced rebuild, and record or clear failure."""
    outcome = _outcome(staging or root, date, events, crash)
    if staging is not None:
        _promote(staging, root, date, outcome.status == "success")
    failed = partition.failed_dir(root, date)
    if outcome.status == "success":
        shutil.rmtree(failed, ignore_errors=True)
        return outcome
    _remove_abandoned_temporaries(root, date)
    record = {"date": outcome.date, "step": outcome.step, "reason": outcome.reason,
              "error": outcome.error, "time": dt.datetime.now(dt.timezone.utc).isoformat()}
    try:
        write_json(luigi.LocalTarget(str(failed / partition.FAILURE)), record)
    except OSError as exc:  # the same full or read-only disk that failed the run
        _remove_abandoned_temporaries(Path(root) / "failed", date)
        LOG.warning("%s: could not record the failure under %s: %s", outcome.date, failed, _storage_error(exc))
    return outcome


def _promote(staging, root, date, succeeded):
    """Swap a complete forced rebuild in for the old partition; keep the old one if the rebuild failed."""
    if succeeded:
        new, old = partition.partition_dir(staging, date), partition.partition_dir(root, date)
        retired = staging.with_name(staging.name + "-retired")
        if old.exists():
            old.replace(retired)
        new.replace(old)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        rejected = partition.failed_dir(staging, date)
        if rejected.exists():
            target = partition.failed_dir(root, date)
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            rejected.replace(target)
    shutil.rmtree(staging, ignore_errors=True)


def _outcome(root, date, events, crash):
    outcome = DateOutcome(date.isoformat(), "success" if partition.is_complete(root, date) else "failure")
    outcome.tasks = [[task.task_family, seconds, not any(k == "failure" and t is task for k, t, _ in events)]
                     for kind, task, seconds in events if kind == "time"]
    validated = [(kind, task, value) for kind, task, value in events
                 if task.task_family == "Validate" and kind in ("success", "failure")]
    if validated:
        outcome.validation = _validation_report(root, date, validated[-1][0] == "success")
    if outcome.status == "success":
        summary = read_json(luigi.LocalTarget(str(partition.partition_dir(root, date) / partition.SUMMARY)))
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
        path = re.sub(r"-luigi-tmp-\d+$", "", str(exc.filename))  # the target, not Luigi's temporary
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
