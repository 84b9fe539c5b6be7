"""`irisflow serve`: the daemon as a long-running service — APScheduler, signals, the lock file, the listener.

An APScheduler BlockingScheduler fires `[service] schedule` (cron, in `[service] timezone`) from a job
store that outlives restarts (SQLite under `[service] state_dir`); each firing is a pass of the `Daemon`
(`service.daemon.passes`). One listener serves /metrics and the partition view (`service.view`). Under
systemd (Type=notify) it says READY once its lock, the listener and the job store are up, keeps a STATUS
line, and pings the watchdog from a job of the scheduler's own loop.
"""

import datetime as dt
import faulthandler
import fcntl
import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from apscheduler.events import EVENT_SCHEDULER_STARTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.exc import SQLAlchemyError

from .. import process
from ..config import ConfigError, checked_settings, time_zone
from ..reporting import metrics
from .passes import Daemon
from .systemd_notify import Notifier

LOG = logging.getLogger("irisflow.daemon")
# A firing missed while the daemon was down still runs (once, coalesced) if it is back within a day;
# the start-up pass covers longer outages.
MISFIRE_GRACE_SECONDS = 24 * 3600
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

    from ..config import service
    from ..view import configured_view, make_app, start_server

    if not 0 <= port <= 65535:
        raise ConfigError(f"luigi.cfg [service] metrics_port: {port} is not a port number")
    idle_timeout = service().http_idle_timeout.total_seconds()
    if idle_timeout <= 0:
        raise ConfigError("luigi.cfg [service] http_idle_timeout: must be more than 0 seconds")
    try:
        app = make_app(configured_view(), make_wsgi_app(metrics.REGISTRY))
        return start_server(address, port, app, idle_timeout)
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
        process.log_to_stderr()
        LOG.info(
            "irisflow daemon: schedule %r in %s, /metrics and the partition view on %s:%d, state in %s",
            runtime.schedule,
            runtime.timezone,
            runtime.metrics_address,
            server.server_port,
            state_dir,
        )
        _DAEMON = daemon
        try:
            with process.handling(on_signal):
                scheduler.start()
                daemon.finish(runtime.stop_timeout)
        except SQLAlchemyError as exc:
            raise ConfigError(
                f"luigi.cfg [service] state_dir: the job store {state_dir / 'jobs.sqlite'} cannot be "
                f"used ({getattr(exc, 'orig', None) or exc}); move it away to start afresh"
            ) from None
        finally:
            server.shutdown()
            server.server_close()
        LOG.info("irisflow daemon stopped")
    return 0
