"""How the daemon runs a pass's dates: one by one, in a fresh process of its own.

A spawned child runs the dates through `service.runner.run_dates` and sends a RunReport per date back
over a pipe: pandas, scikit-learn and Luigi's task-instance cache never pile up in the long-running
daemon, and a child that dies fails only the dates it had not reported.
"""

import logging
import multiprocessing

from .. import journal, process
from ..defaults import use_packaged_defaults
from ..runner import DateOutcome, RunReport, run_dates
from ..secrets import mask, mask_logging
from ..state import Reason


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
                [
                    DateOutcome(
                        date.isoformat(), "failure", reason=Reason.ERROR, error=mask(f"{type(exc).__name__}: {exc}")
                    )
                ],
                0.0,
            )


def _child_main(dates, sender, stopping, log_level):
    # A fresh interpreter: it reads the configuration as the daemon did (the packaged defaults included).
    use_packaged_defaults()
    mask_logging()  # Luigi's worker log names the scheduler URL
    # Without this, what irisflow logs here (a mail it could not send) would go nowhere.
    # Only irisflow's loggers: Luigi's has its own handler, and a root one would print its records twice.
    logging.getLogger("irisflow").addHandler(journal.stderr_handler(process.LOG_FORMAT))
    journal.luigi_to_journal(log_level)
    process.ignore_stop_signals()  # the daemon decides when its run stops
    if not process.end_with_parent():  # the daemon died before this process could follow it
        return
    for report in run_one_by_one(dates, stopping, log_level):
        sender.send(report)
    sender.close()


class ChildRuns:
    """Runs passes in spawned children; `current` is the child at work, if any (for `kill`)."""

    def __init__(self, stopping, log_level):
        self.stopping, self.log_level = stopping, log_level
        self.current = None

    def __call__(self, dates):
        """Yield a RunReport per date as the child finishes it; the dates it never reported fail."""
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=_child_main, name="irisflow-run", args=(dates, sender, self.stopping, self.log_level)
        )
        child.start()
        sender.close()
        self.current = child
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
            self.current = None
        lost = [d.isoformat() for d in dates if d.isoformat() not in reported]
        if lost and not self.stopping.is_set():
            error = f"the run process exited with status {child.exitcode} before finishing the date"
            yield RunReport([DateOutcome(d, "failure", reason=Reason.ERROR, error=error) for d in lost], 0.0)

    def kill(self):
        child = self.current
        if child is not None:
            child.kill()
