"""`irisflow backfill`: every date of a range that needs it, planned from each date's state, with progress,
a summary grouped by failure, and a clean stop on SIGINT/SIGTERM."""

import argparse
import json
import logging
import signal
import threading
import time

from tasks import partition

from ..config import ConfigError
from ..reporting import summary
from ..reporting.plan import FORCED, count, plan
from ..runner import DateOutcome, RunReport
from ..state import SETTLED, configured
from . import output
from .exits import EXIT_FAILED, EXIT_OK
from .runs import check_metrics_destinations, export_metrics, log_level, mail_run, workers

STATUS_WORDS = {
    "success": "ran",
    "skipped": "already complete",
    "failure": "FAILED",
    "unselected": "not selected by --only",
    "cancelled": "left (not finished)",
}


def cmd_backfill(args: argparse.Namespace) -> int:
    dates = _backfill_dates(args)
    if args.json and not args.dry_run:
        raise ConfigError("--json goes with --dry-run")
    states = configured()
    decisions = plan(states, dates, only=args.only, force=args.force, verify=args.verify)
    chosen = [d for d in decisions if d.build]
    if args.dry_run:
        return _print_plan(args, decisions, chosen)
    check_metrics_destinations(args)
    report, stopped_by = _run_backfill(args, chosen)
    reasons = {d.date.isoformat(): d.reason for d in decisions}
    ran = {o.date: o for o in report.outcomes}
    outcomes = [ran.get(d.date.isoformat()) or _not_chosen(d) for d in decisions]

    def rerun(some):
        return summary.backfill_command(some, [reasons[d] for d in some], args.workers)

    lines = []
    for first, last, status, n in _runs_of_same_status(outcomes):
        span = first if first == last else f"{first}..{last}"
        lines.append(f"{span}  {STATUS_WORDS[status]} ({n} date{'s' if n > 1 else ''})")
    output.tell("\n".join(lines))
    groups = summary.failure_groups(outcomes)
    if groups:
        output.tell(summary.format_failures(groups, rerun), logging.ERROR)
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUS_WORDS}
    extra = "".join(f", {counts[s]} {STATUS_WORDS[s]}" for s in ("unselected", "cancelled") if counts[s])
    output.tell(
        f"backfill {dates[0]}..{dates[-1]}: {counts['success']} ran, {counts['skipped']} already complete, "
        f"{counts['failure']} failed{extra} in {report.seconds:.1f} s",
        logging.ERROR if groups else logging.INFO,
    )
    if stopped_by is not None:
        left = [o.date for o in outcomes if o.status == "cancelled"]
        output.tell(
            f"stopped by {signal.Signals(stopped_by).name}: {len(chosen) - len(left)} of {len(chosen)} dates "
            f"done, {len(left)} left" + (f"; resume with: {rerun(left)}" if left else ""),
            logging.WARNING,
        )
    mail_run(states.root, report, outcomes, rerun)
    delivered = export_metrics(args, report)
    if stopped_by is not None:
        return 128 + stopped_by
    return EXIT_FAILED if groups or not delivered else EXIT_OK


def _backfill_dates(args):
    if args.dates and (args.start or args.end):
        raise ConfigError("give either --dates or --start and --end")
    if args.dates:
        return args.dates
    if not (args.start and args.end):
        raise ConfigError("backfill needs --start and --end (or --dates)")
    try:
        return partition.date_range(args.start, args.end)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _not_chosen(decision):
    """The outcome of a date the plan left alone: complete (or stale, kept) dates count as already complete."""
    status = "skipped" if decision.found.state in SETTLED else "unselected"
    return DateOutcome(decision.date.isoformat(), status)


def _print_plan(args, decisions, chosen):
    """The dry run: each date, whether it would be built and why, then the counts per reason."""
    if args.json:
        output.tell(
            json.dumps(
                {
                    "dates": [d.as_dict() for d in decisions],
                    "counts": count(decisions),
                    "build": len(chosen),
                    "skip": len(decisions) - len(chosen),
                },
                indent=2,
            )
        )
        return EXIT_OK
    lines = [f"{d.date}  {'build' if d.build else 'skip':<5}  {d.reason:<10}  {_why(d)}".rstrip() for d in decisions]
    lines.append("reasons: " + ", ".join(f"{n} {reason}" for reason, n in count(decisions).items()))
    lines.append(f"would build {len(chosen)} of {len(decisions)} dates (dry run: nothing was run or written)")
    output.tell("\n".join(lines))
    return EXIT_OK


def _run_backfill(args, chosen):
    """Run the chosen dates with progress; (RunReport, the signal that stopped it or None).

    The first Ctrl-C or SIGTERM starts no new dates and lets those in progress finish; a second abandons
    them (their temporaries are removed by the next run). Either way the report covers every date, those
    never finished as "cancelled".
    """
    from .. import process
    from ..reporting.progress import Progress
    from ..runner import run_dates

    started = time.monotonic()
    progress = Progress(len(chosen))
    stop = threading.Event()
    signals = []
    finished = {}

    def on_signal(signum, _frame):
        if signals:
            raise KeyboardInterrupt
        signals.append(signum)
        stop.set()
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second SIGTERM"
        progress.write(
            f"{signal.Signals(signum).name}: no new dates start; the dates in progress finish ({again} abandons them)"
        )

    def on_finished(outcome, _done, _total):
        finished[outcome.date] = outcome
        progress.finished(outcome)

    try:
        with process.handling(on_signal, (signal.SIGINT, signal.SIGTERM)):
            report = run_dates(
                [d.date for d in chosen],
                workers=workers(args),
                progress=on_finished,
                stop=stop,
                force=args.force or any(d.needs_rebuild for d in chosen),
                verify=args.verify,
                log_level=log_level(args),
            )
    except KeyboardInterrupt:  # the second signal: what finished is kept, the rest is left
        progress.write("abandoned the dates in progress")
        report = RunReport(
            [finished.get(d.date.isoformat()) or DateOutcome(d.date.isoformat(), "cancelled") for d in chosen],
            time.monotonic() - started,
        )
    finally:
        progress.close()
    return report, (signals[0] if signals else None)


def _why(decision):
    """The plan's few words for a date: its state's detail, or what its reason means."""
    if decision.reason == FORCED:
        return "complete; rebuilt as --force asks"
    return decision.found.detail or {"missing": "no outputs yet", "complete": "nothing to do"}.get(decision.reason, "")


def _runs_of_same_status(outcomes):
    """(first date, last date, status, count) for each run of consecutive dates with the same status."""
    runs = []
    for outcome in outcomes:
        if runs and runs[-1][2] == outcome.status:
            runs[-1][1], runs[-1][3] = outcome.date, runs[-1][3] + 1
        else:
            runs.append([outcome.date, outcome.date, outcome.status, 1])
    return runs
