"""`python -m service worker`: a Luigi assistant worker that adds a host's capacity to a central scheduler.

An assistant (Luigi's `--assistant`) schedules nothing of its own: it asks luigid for any runnable task
that other workers scheduled (a backfill, the daemon's runs, a stock `luigi` command) and runs it. The
tasks themselves take the per-task locks of the partition contract on the shared output root, so an
assistant and a backfill never build the same task at once, whichever host they run on.

The heavy libraries are imported once, at start, so no task pays for them; SIGTERM (systemd's stop)
lets the task in progress finish and then exits 0.
"""

import logging
import signal

import luigi
import luigi.rpc
import luigi.task_register

from .. import process
from ..config import ConfigError, central_scheduler, checked_settings, scheduler_url
from ..reporting import mail
from .client import ReportingWorker, remote_scheduler, unreachable_scheduler

LOG = logging.getLogger("irisflow.worker")
# How often an idle assistant asks luigid for work: Luigi's default (1 s plus up to 5 s of jitter) would
# leave it idle while a backfill's own worker, which asks again at once, takes every task.
ASK_EVERY_SECONDS = 0.2
ASK_JITTER_SECONDS = 0.1


class SchedulerUnreachable(RuntimeError):
    """luigid cannot be reached (at start, or for longer than Luigi's RPC retries mid-run)."""


def _log_task_events():
    """One line per task this worker finishes, as the journal of a long-running service should have."""

    @luigi.Task.event_handler(luigi.Event.PROCESSING_TIME)
    def finished(task, seconds):
        LOG.info("%s finished in %.1f s", task, seconds)

    @luigi.Task.event_handler(luigi.Event.FAILURE)
    def failed(task, exception):
        LOG.error("%s failed: %s", task, str(exception).partition("\n")[0])


class _AssistantWorker(ReportingWorker):
    """Luigi's worker, starting each request for work with Luigi's instance cache empty.

    Luigi keeps every task instance it made for the life of the process, and a task instance remembers
    that it was found done (`tasks.iris.DatePartitionTask.complete`): a worker that runs for months must
    neither grow with every date it saw nor trust what it found on disk days ago.
    """

    def _get_work(self):
        luigi.task_register.Register.clear_instance_cache()
        return super()._get_work()


def serve_worker(processes=1, verbose=False):
    """Run tasks luigid hands out until SIGTERM or SIGINT; returns the exit status (0).

    `processes` > 1 runs that many tasks at once, each in a process forked from this one (Luigi's
    `--workers`), which inherits the libraries imported here. Raises ConfigError without a central
    scheduler, SchedulerUnreachable when luigid cannot be reached.
    """
    from tasks.warmup import import_heavy_libraries

    if not central_scheduler():
        raise ConfigError(
            "worker needs a central scheduler: set [core] default_scheduler_host "
            "(and default_scheduler_port) in luigi.cfg"
        )
    checked_settings()
    unreachable = unreachable_scheduler()
    if unreachable is not None:
        raise SchedulerUnreachable(str(unreachable))
    process.log_to_stderr()
    if not verbose:
        logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    import_heavy_libraries()
    mail.install()
    _log_task_events()
    url = scheduler_url()
    # keep_alive: an assistant stays until told to stop, however long luigid has nothing for it.
    worker = _AssistantWorker(
        scheduler=remote_scheduler(url),
        worker_processes=processes,
        assistant=True,
        keep_alive=True,
        wait_interval=ASK_EVERY_SECONDS,
        wait_jitter=ASK_JITTER_SECONDS,
    )

    def phase_out(signum, _frame):
        LOG.info("%s: no new tasks; stopping after the tasks in progress", signal.Signals(signum).name)
        worker.handle_interrupt(signal.SIGUSR1, None)  # Luigi's own "stop asking for work"

    LOG.info("irisflow worker: assistant of %s with %d process(es)", url, processes)
    try:
        with process.handling(phase_out), worker:
            worker.run()
    except luigi.rpc.RPCError as exc:
        raise SchedulerUnreachable(f"central scheduler {url} lost: {exc}") from None
    LOG.info("irisflow worker stopped")
    return 0
