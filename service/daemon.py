"""The scheduling daemon, `python -m service serve`: irisflow as a long-running service.

An APScheduler BlockingScheduler fires `[service] schedule` (cron, in `[service] timezone`) from a job
store that outlives restarts (SQLite under `[service] state_dir`). Every firing, and start-up, is a
*pass*: each date of the catch-up window (the last `catchup_days` dates whose scheduled time has come)
that is not complete runs, oldest first, through `service.runner.run_dates` in a fresh process. A daemon
that was down finishes the dates it missed, and a complete date never runs twice.

Input that has not arrived is not a failure yet: the date is retried every `retry_interval` until
`data_deadline` after its scheduled time, then reported. A date whose input was rejected, or missing at
its deadline, is *settled*: no pass runs it again until its input file changes, so each bad date is
mailed once (`{state_dir}/settled.json` keeps this across restarts).

The clock is injected (`Daemon(now=...)`), so catch-up, late data and deadlines are plain methods that
tests drive without waiting; `serve` wires the scheduler, signals, the lock file, /metrics and the
partition view (service.web) on one listener.
"""

import datetime as dt
import faulthandler
import fcntl
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from apscheduler.events import EVENT_SCHEDULER_STARTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.exc import SQLAlchemyError

from tasks import partition

from . import journal, metrics, notifications
from .config import ConfigError, checked_settings, time_zone
from .defaults import use_packaged_defaults
from .outcomes import DateOutcome, RunReport
from .runner import run_dates
from .schedule import UTC, Schedule, build_trigger
from .summary import backfill_command
from .systemd_notify import Notifier

LOG = logging.getLogger("irisflow.daemon")
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
DAILY_JOB = "daily"
# A firing missed while the daemon was down still runs (once, coalesced) if it is back within a day;
# the start-up pass covers longer outages.
MISFIRE_GRACE_SECONDS = 24 * 3600
# Reasons whose date is not run again until its input file changes: rerunning could only fail (and mail)
# the same way. Other failures (errors, a full disk, an unreachable scheduler) are retried every pass.
SETTLING_REASONS = ("validation", "missing_input")
WATCHDOG = "watchdog"  # the heartbeat job's id and its executor's alias
_DAEMON = None  # the serving daemon, for the job the persistent store holds by reference


class DaemonScheduler(BlockingScheduler):
    """A BlockingScheduler that submits nothing once shut down: APScheduler 3 processes due jobs once
    more after `shutdown` and logs an error for each, as its executor no longer takes work."""

    def _process_jobs(self):
        return None if self.state == STATE_STOPPED else super()._process_jobs()


def make_scheduler(scheduler_class, state_dir, zone):
    """A scheduler with the persistent store for the daily job and a memory store for one-off runs.

    One thread runs every job, so passes and retries never overlap.
    """
    return scheduler_class(
        jobstores={
            "default": SQLAlchemyJobStore(url=f"sqlite:///{Path(state_dir).resolve() / 'jobs.sqlite'}"),
            "memory": MemoryJobStore(),
        },
        executors={"default": ThreadPoolExecutor(1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_SECONDS},
        timezone=zone,
    )


def source_fingerprint(date):
    """What identifies the date's input file as it is now (None when absent): a change means new input."""
    from tasks.iris import source_path

    try:
        stat = os.stat(source_path(date))
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def run_one_by_one(dates, stopping=None, log_level="WARNING"):
    """Each date in its own `run_dates` call, oldest first, stopping between dates when asked.

    An error that escapes the runner (say, luigi.cfg broken since start-up) becomes the date's failure.
    """
    for date in sorted(dates):
        if stopping is not None and stopping.is_set():
            return
        try:
            yield run_dates([date], verify=True, log_level=log_level)
        except Exception as exc:
            yield RunReport(
                [DateOutcome(date.isoformat(), "failure", reason="error", error=f"{type(exc).__name__}: {exc}")], 0.0
            )


def _run_in_child_process(dates, sender, stopping, log_level):
    # A fresh interpreter: it reads the configuration as the daemon did (the packaged defaults included).
    use_packaged_defaults()
    # Without this, what irisflow logs here (a mail it could not send) would go nowhere.
    # Only irisflow's loggers: Luigi's has its own handler, and a root one would print its records twice.
    logging.getLogger("irisflow").addHandler(journal.stderr_handler(LOG_FORMAT))
    journal.luigi_to_journal(log_level)
    # The daemon decides when its run stops: systemd's SIGTERM and a terminal's ^C reach this process too.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    for report in run_one_by_one(dates, stopping, log_level):
        sender.send(report)
    sender.close()


def _end_with_parent():
    """Have the kernel kill this run process if the daemon dies, even by SIGKILL, so no run goes on
    unsupervised; the targets it was writing stay whole, and the restarted daemon runs the date again."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != multiprocessing.parent_process().pid:  # the daemon died before prctl took effect
        os._exit(1)


class PassRecord(NamedTuple):
    """The latest pass, for the status line: when it ended, its dates, and their counted outcomes (None when
    the pass itself failed)."""

    finished: dt.datetime
    dates: list
    outcomes: list | None


class Daemon:
    """Passes over the catch-up window, late-data retries and failure reports, on an injectable clock."""

    def __init__(self, scheduler, *, now=None, in_process=False, log_level="WARNING"):
        settings, runtime = checked_settings()
        self.trigger = build_trigger(runtime.schedule, runtime.timezone)
        problems = [
            text
            for bad, text in (
                (runtime.catchup_days < 1, "catchup_days must be at least 1"),
                (runtime.retry_interval <= dt.timedelta(0), "retry_interval must be positive"),
                (runtime.data_deadline < dt.timedelta(0), "data_deadline must not be negative"),
            )
            if bad
        ]
        if problems:
            raise ConfigError("luigi.cfg [service]: " + "; ".join(problems))
        self.schedule = Schedule(self.trigger, runtime.catchup_days, runtime.data_deadline)
        self.retry_interval = runtime.retry_interval
        self.root = Path(settings.output_root)
        self.settled_path = Path(runtime.state_dir) / "settled.json"
        self.scheduler = scheduler
        self.now = now or (lambda: dt.datetime.now(UTC))
        self.run = self._run_here if in_process else self._run_in_child
        self.log_level = log_level
        self.stopping = multiprocessing.get_context("spawn").Event()
        self.idle = threading.Event()
        self.idle.set()
        self._child = None
        self.settled = self._load_settled()
        self.last_pass = None
        self.on_status = lambda line: None  # where status lines go: systemd's STATUS= under `serve`

    # -- what is due ---------------------------------------------------------------------------------
    def due(self, now: dt.datetime) -> list[dt.date]:
        """Dates of the window to run: not complete (verified against their recorded hashes), and not
        settled with the same input file."""
        return [
            d
            for d in self.schedule.window(now)
            if not partition.is_complete(self.root, d, verify=True)
            and self.settled.get(d.isoformat(), "unsettled") != source_fingerprint(d)
        ]

    # -- passes --------------------------------------------------------------------------------------
    def tick(self) -> None:
        """A scheduled run, and the pass at start-up: every due date of the window, oldest first."""
        self.run_pass(self.due(self.now()))

    def retry(self, date):
        """A late-data retry of one date (YYYY-MM-DD), if it is still due."""
        self.run_pass([d for d in self.due(self.now()) if d.isoformat() == date])

    def run_pass(self, dates):
        """Run the dates, report failures, update the metrics. Never raises: a failure never stops the daemon."""
        if self.stopping.is_set():
            return
        self.idle.clear()
        if dates:
            self.on_status(f"running {_span(dates)} since {self.now().astimezone(self.schedule.zone):%H:%M:%S %Z}")
        try:
            self._run_pass(dates)
        except Exception as exc:
            self.last_pass = PassRecord(self.now(), dates, None)
            LOG.exception("pass over %s failed", ", ".join(d.isoformat() for d in dates) or "no dates")
            headline = str(exc).partition("\n")[0]  # a mail subject is one line
            mails = notifications.send_failure(
                f"irisflow: a scheduled run FAILED outside any task: {headline}", traceback.format_exc()
            )
            metrics.record_mails(mails["sent"], mails["failed"])
        finally:
            self.idle.set()
            if not self.stopping.is_set():  # stopping has its own status line
                self.on_status(self.status(self.now()))

    def _run_pass(self, dates):
        counted = []
        if dates:
            started = time.monotonic()
            inputs = {d.isoformat(): source_fingerprint(d) for d in dates}
            mails = Counter()
            for report in self.run(dates):
                mails.update(sent=report.emails_sent, failed=report.email_failures)
                counted.extend(o for o in report.outcomes if self._handle(o, inputs.get(o.date)))
            mails.update(notifications.mail_run(self.root, counted, backfill_command))  # one mail a pass
            metrics.record(RunReport(counted, time.monotonic() - started, mails["sent"], mails["failed"]))
            self._save_settled()
        self.last_pass = PassRecord(self.now(), dates, counted)
        self.update_gauges(self.now())

    def _handle(self, outcome, fingerprint):
        """Act on one date's outcome; False when it is no failure yet (input still awaited)."""
        date = partition.parse_date(outcome.date)
        if outcome.status != "failure":
            LOG.info("%s: %s", outcome.date, outcome.status)
            self.settled.pop(outcome.date, None)
            self._cancel_retry(date)
            return True
        now = self.now().astimezone(UTC)
        deadline = self.schedule.deadline(date)
        if outcome.reason == "missing_input" and now < deadline:
            when = min(now + self.retry_interval, deadline)
            LOG.info("%s: input not there yet; looking again at %s (deadline %s)", outcome.date, when, deadline)
            self.scheduler.add_job(
                self.retry,
                "date",
                run_date=when,
                args=[outcome.date],
                id=f"retry-{date}",
                jobstore="memory",
                replace_existing=True,
            )
            return False
        if outcome.reason == "missing_input":
            outcome.error = (
                f"{outcome.error}\nnot there by the data deadline {deadline} "
                f"({self.schedule.data_deadline} after the scheduled time); the next pass runs the "
                "date once the file is there"
            )
        LOG.error(
            "%s: FAILED (%s) in %s: %s",
            outcome.date,
            outcome.reason,
            outcome.step or "the run",
            (outcome.error or "").partition("\n")[0],
        )
        self._cancel_retry(date)
        if outcome.reason in SETTLING_REASONS:
            self.settled[outcome.date] = fingerprint
        return True

    def _cancel_retry(self, date):
        try:
            self.scheduler.remove_job(f"retry-{date}", jobstore="memory")
        except JobLookupError:
            pass

    def update_gauges(self, now: dt.datetime) -> None:
        """Dates missing in the window, the next scheduled run, and the newest complete date's accuracy."""
        window = self.schedule.window(now)
        complete = [d for d in window if partition.is_complete(self.root, d)]
        metrics.CATCHUP_MISSING.set(len(window) - len(complete))
        upcoming = self.schedule.next_run(now)
        metrics.NEXT_RUN.set(upcoming.timestamp() if upcoming else 0)
        if complete:
            metrics.record_partition(self.root, complete[-1])

    def status(self, now):
        """One line for `systemctl status`, times in the schedule's zone: the last pass and its outcome, the next
        run, the dates missing."""
        window = self.schedule.window(now)
        missing = [d for d in window if not partition.is_complete(self.root, d)]
        upcoming = self.schedule.next_run(now)
        return "; ".join(
            (
                _pass_summary(self.last_pass, self.schedule.zone),
                f"next run {upcoming.astimezone(self.schedule.zone):%Y-%m-%d %H:%M %Z}" if upcoming else "no next run",
                f"{len(missing)} of {len(window)} dates missing" + (f" ({_span(missing)})" if missing else ""),
            )
        )

    # -- settled failures ----------------------------------------------------------------------------
    def _load_settled(self):
        try:
            settled = json.loads(self.settled_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            LOG.warning("ignoring unreadable %s: %s", self.settled_path, exc)
            return {}
        return settled if isinstance(settled, dict) else {}

    def _save_settled(self):
        """Write the settled dates still inside the window (so the file stays small), atomically."""
        oldest = self.schedule.window(self.now())[0].isoformat()
        self.settled = {date: fingerprint for date, fingerprint in self.settled.items() if date >= oldest}
        self.settled_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.settled_path.with_name(self.settled_path.name + ".tmp")
        temporary.write_text(json.dumps(self.settled, indent=1, sort_keys=True))
        os.replace(temporary, self.settled_path)

    # -- how a pass runs -----------------------------------------------------------------------------
    def _run_here(self, dates):
        return run_one_by_one(dates, self.stopping, self.log_level)

    def _run_in_child(self, dates):
        """Run the dates in a fresh process, yielding a RunReport per date as it finishes: pandas,
        scikit-learn and Luigi's task-instance cache never pile up in the long-running daemon."""
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=_run_in_child_process, name="irisflow-run", args=(dates, sender, self.stopping, self.log_level)
        )
        child.start()
        sender.close()
        self._child = child
        reported = set()
        try:
            while True:
                try:
                    report = receiver.recv()
                except EOFError:
                    break
                reported.update(o.date for o in report.outcomes)
                yield report
        finally:
            receiver.close()
            child.join()
            self._child = None
        lost = [d.isoformat() for d in dates if d.isoformat() not in reported]
        if lost and not self.stopping.is_set():
            error = f"the run process exited with status {child.exitcode} before finishing the date"
            yield RunReport([DateOutcome(d, "failure", reason="error", error=error) for d in lost], 0.0)

    # -- life cycle ----------------------------------------------------------------------------------
    def start_schedule(self):
        """Add the daily job unless the persistent store holds it already: a restart then keeps a firing
        it missed due (run at once, coalesced) instead of moving it to the next day. A stored job this
        version cannot restore is replaced, never left to be dropped silently with the schedule."""
        try:
            job = self.scheduler.get_job(DAILY_JOB, jobstore="default")
        except Exception as exc:  # pickled by another version of irisflow or APScheduler
            LOG.error(
                "the job store's daily job cannot be restored (%s); replacing it with [service] schedule "
                "from luigi.cfg (the start-up pass runs any date that was missed)",
                exc,
            )
            job = None
        if job is None:
            self.scheduler.add_job(
                f"{__name__}:scheduled_run", self.trigger, id=DAILY_JOB, jobstore="default", replace_existing=True
            )
        elif repr(job.trigger) != repr(self.trigger):
            LOG.info("schedule changed from %s to %s", job.trigger, self.trigger)
            self.scheduler.reschedule_job(DAILY_JOB, jobstore="default", trigger=self.trigger)
        self.update_gauges(self.now())

    def finish(self, timeout):
        """Once scheduling stopped: let a run in progress finish, up to `timeout`, then end it."""
        self.stopping.set()
        if self.idle.wait(timeout.total_seconds()):
            return
        LOG.warning("the run in progress did not finish within %s; stopping it", timeout)
        child = self._child
        if child is not None:
            child.kill()
        self.idle.wait(30)


def _span(dates, shown=3):
    """Dates for a status line: a few of them, then how many more."""
    names = [d.isoformat() for d in sorted(dates)]
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _pass_summary(record, zone):
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


def scheduled_run():
    """The daily job, which the persistent job store holds by reference: a pass of the serving daemon."""
    _DAEMON.tick()


@contextmanager
def single_instance(lock_path):
    """Hold `{state_dir}/daemon.lock` while serving; the kernel releases it if the process dies."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+")
    except OSError as exc:
        raise ConfigError(f"luigi.cfg [service] state_dir: cannot use {lock_path.parent}: {exc.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ConfigError(
                f"another irisflow daemon (pid {holder}) is running on state dir "
                f"{lock_path.parent}; refusing to start a second one"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def _serve_http(address, port):
    """/metrics and the partition view (service.web) on one listener, from a background thread."""
    from prometheus_client import make_wsgi_app

    from .web import configured_view, make_app, start_server

    if not 0 <= port <= 65535:
        raise ConfigError(f"luigi.cfg [service] metrics_port: {port} is not a port number")
    try:
        return start_server(address, port, make_app(configured_view(), make_wsgi_app(metrics.REGISTRY)))
    except OSError as exc:
        raise ConfigError(
            f"luigi.cfg [service] metrics_address/metrics_port: cannot listen on "
            f"{address}:{port}: {exc.strerror or exc}"
        ) from None


def add_watchdog(scheduler, notifier):
    """Under a systemd watchdog: WATCHDOG=1 from a job that only the scheduler's own loop can start, on an
    executor of its own, so a long run never delays it but a hung scheduler stops it (and systemd restarts
    the daemon; its every firing would otherwise be logged). systemd kills a daemon that stopped pinging
    with SIGABRT: faulthandler then prints where each thread hung, into the journal."""
    if notifier.watchdog_interval is None:
        return
    faulthandler.enable()
    scheduler.add_executor(ThreadPoolExecutor(1), WATCHDOG)
    logging.getLogger(f"apscheduler.executors.{WATCHDOG}").setLevel(logging.WARNING)
    scheduler.add_job(
        notifier.alive,
        "interval",
        seconds=notifier.watchdog_interval.total_seconds(),
        id=WATCHDOG,
        jobstore="memory",
        executor=WATCHDOG,
        next_run_time=dt.datetime.now(dt.UTC),
    )


def serve(verbose: bool = False) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT; returns the exit status (0).

    Bad configuration, a second daemon on the same state directory or a metrics port in use raise
    ConfigError before anything runs. Under systemd (Type=notify) it reports READY=1 once the lock,
    /metrics and the job store are up, a STATUS= line after every pass, WATCHDOG=1 pings and STOPPING=1.
    """
    global _DAEMON
    _, runtime = checked_settings()
    state_dir = Path(runtime.state_dir)
    scheduler = make_scheduler(DaemonScheduler, state_dir, time_zone(runtime.timezone))
    daemon = Daemon(scheduler, log_level="INFO" if verbose else "WARNING")
    notifier = Notifier()
    daemon.on_status = notifier.status

    def stop_scheduling():
        if scheduler.running:
            scheduler.shutdown(wait=False)

    def on_signal(signum, _frame):
        if not daemon.stopping.is_set():
            said = (
                f"{signal.Signals(signum).name}: no new runs; a run in progress may take up to {runtime.stop_timeout}"
            )
            LOG.info("%s", said)
            notifier.stopping(f"stopping ({said})")
            daemon.stopping.set()
            threading.Thread(target=stop_scheduling, name="irisflow-stop").start()

    def on_started(_event):
        daemon.start_schedule()
        notifier.ready(daemon.status(daemon.now()))
        if daemon.stopping.is_set():  # a signal came before the scheduler ran
            threading.Thread(target=stop_scheduling, name="irisflow-stop").start()

    scheduler.add_listener(on_started, EVENT_SCHEDULER_STARTED)
    scheduler.add_job(daemon.tick, id="start-up", jobstore="memory")  # the catch-up pass, at once
    add_watchdog(scheduler, notifier)
    with single_instance(state_dir / "daemon.lock"):
        server = _serve_http(runtime.metrics_address, runtime.metrics_port)
        logging.basicConfig(level=logging.INFO, handlers=[journal.stderr_handler(LOG_FORMAT)])
        LOG.info(
            "irisflow daemon: schedule %r in %s, /metrics and the partition view on %s:%d, state in %s",
            runtime.schedule,
            runtime.timezone,
            runtime.metrics_address,
            server.server_port,
            state_dir,
        )
        _DAEMON = daemon
        previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            scheduler.start()
            daemon.finish(runtime.stop_timeout)
        except SQLAlchemyError as exc:
            raise ConfigError(
                f"luigi.cfg [service] state_dir: the job store {state_dir / 'jobs.sqlite'} cannot be "
                f"used ({getattr(exc, 'orig', None) or exc}); move it away to start afresh"
            ) from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            server.shutdown()
            server.server_close()
        LOG.info("irisflow daemon stopped")
    return 0
