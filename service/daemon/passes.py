"""The daemon's decisions, on an injectable clock: what is due, each pass, late-data retries, reports.

Every firing of the schedule, and start-up, is a *pass*: each date of the catch-up window (the last
`catchup_days` dates whose scheduled time has come) whose state (`service.state`) says it needs building
runs, oldest first, in a fresh process (`service.daemon.child`). Input that has not arrived is not a
failure yet: the date is retried every `retry_interval` until `data_deadline` after its scheduled time
(its state reads `waiting` meanwhile), then reported. A date whose input was rejected, or missing at its
deadline, is settled (`service.daemon.settled`), so each bad date is mailed once.

The clock is injected (`Daemon(now=...)`), so catch-up, late data and deadlines are plain methods that
tests drive without waiting.
"""

import datetime as dt
import logging
import multiprocessing
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

from apscheduler.jobstores.base import JobLookupError

from tasks import partition
from tasks.config import pipeline_settings

from ..config import ConfigError, checked_settings
from ..reporting import mail, metrics
from ..reporting.summary import backfill_command
from ..runner import RunReport
from ..schedule import UTC, Schedule, build_trigger
from ..state import SETTLED, DateStates, Reason, State
from .child import ChildRuns, run_one_by_one
from .settled import Settled, source_fingerprint
from .status import PassRecord, span, status_line

LOG = logging.getLogger("irisflow.daemon")
DAILY_JOB = "daily"
JOB_REFERENCE = "service.daemon:scheduled_run"  # what the persistent job store holds: keep it importable


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
        self.root = partition.location(settings.output_root)
        self.scheduler = scheduler
        self.now = now or (lambda: dt.datetime.now(UTC))
        self.states = DateStates(self.root, pipeline_settings(), self.schedule, self.now, settings.lease_seconds)
        self.log_level = log_level
        self.stopping = multiprocessing.get_context("spawn").Event()
        self.children = ChildRuns(self.stopping, log_level)
        self.run = self._run_here if in_process else self.children
        self.idle = threading.Event()
        self.idle.set()
        self.settled = Settled(Path(runtime.state_dir) / "settled.json")
        self.last_pass = None
        self.on_status = lambda line: None  # where status lines go: systemd's STATUS= under `serve`

    # -- what is due ---------------------------------------------------------------------------------
    def due(self, now: dt.datetime) -> list[dt.date]:
        """Dates of the window to run: their state (files verified against their recorded hashes) needs a
        build, nobody is building them, and they are not settled with the same input file."""
        return [
            found.date
            for found in self.states.of_dates(self.schedule.window(now), verify=True)
            if found.state not in (*SETTLED, State.RUNNING) and not self.settled.holds(found.date)
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
            self.on_status(f"running {span(dates)} since {self.now().astimezone(self.schedule.zone):%H:%M:%S %Z}")
        try:
            self._run_pass(dates)
        except Exception as exc:
            self.last_pass = PassRecord(self.now(), dates, None)
            LOG.exception("pass over %s failed", ", ".join(d.isoformat() for d in dates) or "no dates")
            headline = str(exc).partition("\n")[0]  # a mail subject is one line
            mails = mail.send_failure(
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
            mails, decisions = Counter(), []
            for report in self.run(dates):
                mails.update(sent=report.emails_sent, failed=report.email_failures)
                decisions.extend(report.decisions)
                counted.extend(o for o in report.outcomes if self._handle(o, inputs.get(o.date)))
            mails.update(mail.mail_run(self.root, counted, backfill_command))  # one mail a pass
            metrics.record(RunReport(counted, time.monotonic() - started, mails["sent"], mails["failed"], decisions))
            self.settled.save(self.schedule.window(self.now())[0])
        self.last_pass = PassRecord(self.now(), dates, counted)
        self.update_gauges(self.now())

    def _handle(self, outcome, fingerprint):
        """Act on one date's outcome; False when it is no failure yet (input still awaited)."""
        date = dt.date.fromisoformat(outcome.date)
        if outcome.status != "failure":
            LOG.info("%s: %s", outcome.date, outcome.status)
            self.settled.release(outcome.date)
            self._cancel_retry(date)
            return True
        now = self.now().astimezone(UTC)
        deadline = self.schedule.deadline(date)
        if outcome.reason == Reason.MISSING_INPUT and now < deadline:
            when = min(now + self.retry_interval, deadline)
            zone = self.schedule.zone
            LOG.info(
                "%s: input not there yet; looking again at %s (deadline %s)",
                outcome.date,
                f"{when.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}",
                f"{deadline.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}",
            )
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
        if outcome.reason == Reason.MISSING_INPUT:
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
        self.settled.settle(outcome.date, outcome.reason, fingerprint)
        return True

    def _cancel_retry(self, date):
        try:
            self.scheduler.remove_job(f"retry-{date}", jobstore="memory")
        except JobLookupError:
            pass

    def window_states(self, now):
        return self.states.of_dates(self.schedule.window(now))

    def update_gauges(self, now: dt.datetime) -> None:
        """The window's dates by state, the next scheduled run, the newest complete date's accuracy and the
        champion's."""
        states = self.window_states(now)
        metrics.record_window(states)
        upcoming = self.schedule.next_run(now)
        metrics.NEXT_RUN.set(upcoming.timestamp() if upcoming else 0)
        metrics.record_champion(self.root, now.timestamp())
        complete = [s.date for s in states if s.state in SETTLED]
        if complete:
            metrics.record_partition(self.root, complete[-1])

    def status(self, now):
        """One line for `systemctl status`, times in the schedule's zone: the last pass and its outcome, the next
        run, the dates missing."""
        return status_line(self.last_pass, self.window_states(now), self.schedule.next_run(now), self.schedule.zone)

    # -- how a pass runs -----------------------------------------------------------------------------
    def _run_here(self, dates):
        return run_one_by_one(dates, self.stopping, self.log_level)

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
            self.scheduler.add_job(JOB_REFERENCE, self.trigger, id=DAILY_JOB, jobstore="default", replace_existing=True)
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
        self.children.kill()
        self.idle.wait(30)
