"""`python -m service …`: run, backfill, status, validate, report (and serve, the daemon; worker, for
extra hosts).

Exit status: 0 success, 1 a pipeline or validation failure, 2 bad usage or configuration, always with a
one-line error rather than a traceback. Commands with nothing to compute import no heavy library.
"""

import argparse
import datetime as dt
import json
import os
import re
import signal
import sys
import traceback
from collections.abc import Sequence

from tasks import partition

from . import __version__, summary
from .config import ConfigError
from .defaults import use_packaged_defaults

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATUS_WORDS = {
    "success": "ran",
    "skipped": "already complete",
    "failure": "FAILED",
    "unselected": "not selected by --only",
    "cancelled": "left (not finished)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(message)


def _date(text: str) -> dt.date:
    try:
        return partition.parse_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dates(text):
    try:
        return summary.parse_dates(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _reasons(text):
    reasons = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in reasons if r not in summary.PLAN_REASONS]
    if unknown or not reasons:
        raise argparse.ArgumentTypeError(
            f"unknown reason(s) {', '.join(unknown) or text!r}; choose from {','.join(summary.PLAN_REASONS)}"
        )
    return reasons


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="irisflow", description="irisflow: the scheduled Iris batch pipeline.")
    parser.add_argument("--verbose", action="store_true", help="show Luigi's INFO log")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run the pipeline for one date (default: today)")
    run.add_argument("--date", type=_date, help="YYYY-MM-DD (default: today in [service] timezone)")
    backfill = commands.add_parser("backfill", help="run every date of an inclusive range that needs it")
    backfill.add_argument("--start", type=_date, help="first date, YYYY-MM-DD")
    backfill.add_argument("--end", type=_date, help="last date, YYYY-MM-DD")
    backfill.add_argument(
        "--dates",
        type=_dates,
        metavar="RANGES",
        help="instead of --start/--end: dates and ranges, e.g. 2026-01-01..2026-01-31,2026-02-03",
    )
    backfill.add_argument(
        "--only",
        type=_reasons,
        metavar="REASONS",
        help="build only dates with these reasons: "
        + ",".join(summary.PLAN_REASONS)
        + f" (default: {','.join(summary.DEFAULT_REASONS)})",
    )
    backfill.add_argument(
        "--dry-run", action="store_true", help="run and write nothing: print what each date would get and why"
    )
    backfill.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    for command in (run, backfill):
        command.add_argument(
            "--verify",
            action="store_true",
            help="also compare every file with its recorded sha256 and rebuild what differs",
        )
        command.add_argument("--workers", type=_positive, help="worker processes (default: [service] workers)")
        command.add_argument(
            "--force",
            action="store_true",
            help="recompute complete dates; old outputs are replaced only once the new are complete",
        )
        command.add_argument(
            "--metrics-textfile",
            metavar="PATH",
            help="write the run's metrics for node_exporter's textfile collector (a .prom file)",
        )
        command.add_argument("--pushgateway", metavar="URL", help="push the run's metrics to this Pushgateway")

    status = commands.add_parser("status", help="show which dates are complete, failed or missing")
    status.add_argument("--start", type=_date, help="first date (default: the oldest date with outputs)")
    status.add_argument("--end", type=_date, help="last date (default: today, or the newest date with outputs)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument(
        "--verify", action="store_true", help="also compare every file with its recorded sha256 (reads every file)"
    )

    commands.add_parser(
        "serve", help="run the daemon: the daily schedule, catch-up, failure mail, /metrics and the partition view"
    )

    report = commands.add_parser("report", help="write the partition view of a date range as static HTML files")
    report.add_argument("--start", type=_date, required=True, help="first date, YYYY-MM-DD")
    report.add_argument("--end", type=_date, required=True, help="last date, YYYY-MM-DD")
    report.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and the other pages")

    worker = commands.add_parser(
        "worker",
        help="run whatever irisflow work the central scheduler has pending (a Luigi assistant worker, for extra hosts)",
    )
    worker.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="tasks run at once, each in a process forked from the worker (default 1)",
    )

    validate = commands.add_parser("validate", help="check a CSV file against the schema")
    validate.add_argument("path", help="the CSV file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = None
    try:
        use_packaged_defaults()
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        _print_error(exc)
        return EXIT_USAGE
    except OSError as exc:  # a file or directory the command needs cannot be read or written
        _print_error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("irisflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, or a state nobody foresaw: one line, the traceback with --verbose
        if args is not None and args.verbose:
            traceback.print_exc()
        _print_error(
            f"unexpected {type(exc).__name__}: {exc}"
            + ("" if args is not None and args.verbose else " (run again with --verbose for the traceback)")
        )
        return EXIT_FAILED


def _print_error(message):
    """One line, whatever the message holds: control characters from arguments are shown escaped."""
    shown = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda match: repr(match.group())[1:-1], str(message))
    print(f"irisflow: error: {shown}", file=sys.stderr)


def today() -> dt.date:
    """Today's date in the schedule's time zone."""
    from .config import service, time_zone

    return dt.datetime.now(time_zone(service().timezone)).date()


def _log_level(args):
    """Luigi's log only with --verbose: otherwise each failure is told once, by `_print_failure`."""
    return "INFO" if args.verbose else "CRITICAL"


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_dates

    date = args.date or today()
    _check_metrics_destinations(args)
    report = run_dates([date], workers=_workers(args), force=args.force, verify=args.verify, log_level=_log_level(args))
    outcome = report.outcomes[0]
    root = _output_root()
    if outcome.status == "failure":
        _print_failure(outcome)
    else:
        verb = "already complete, nothing to do" if outcome.status == "skipped" else f"done in {report.seconds:.1f} s"
        print(f"{outcome.date}: {verb}; outputs in {partition.partition_dir(root, date)}")
        _print_models(root, date)
    forced = ["forced"] if args.force else []
    _mail(root, report, report.outcomes, lambda dates: summary.backfill_command(dates, forced))
    delivered = _export_metrics(args, report)  # after the outcome, as backfill does: the run is told either way
    return EXIT_OK if outcome.status != "failure" and delivered else EXIT_FAILED


def cmd_backfill(args: argparse.Namespace) -> int:
    from tasks.iris import pipeline_settings

    from .config import checked_settings
    from .plan import plan

    dates = _backfill_dates(args)
    if args.json and not args.dry_run:
        raise ConfigError("--json goes with --dry-run")
    settings, _ = checked_settings()
    decisions = plan(settings.output_root, dates, pipeline_settings(), force=args.force, verify=args.verify)
    only = set(args.only or summary.DEFAULT_REASONS + ("forced",))
    chosen = [d for d in decisions if d.reason in only]
    if args.dry_run:
        return _print_plan(args, decisions, chosen)
    _check_metrics_destinations(args)
    report, stopped_by = _run_backfill(args, chosen)
    reasons = {d.date.isoformat(): d.reason for d in decisions}
    ran = {o.date: o for o in report.outcomes}
    outcomes = [ran.get(d.date.isoformat()) or _not_chosen(d) for d in decisions]

    def rerun(some):
        return summary.backfill_command(some, [reasons[d] for d in some], args.workers)

    for first, last, status, count in _runs_of_same_status(outcomes):
        span = first if first == last else f"{first}..{last}"
        print(f"{span}  {STATUS_WORDS[status]} ({count} date{'s' if count > 1 else ''})")
    groups = summary.failure_groups(outcomes)
    if groups:
        print(summary.format_failures(groups, rerun), file=sys.stderr)
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUS_WORDS}
    extra = "".join(f", {counts[s]} {STATUS_WORDS[s]}" for s in ("unselected", "cancelled") if counts[s])
    print(
        f"backfill {dates[0]}..{dates[-1]}: {counts['success']} ran, {counts['skipped']} already complete, "
        f"{counts['failure']} failed{extra} in {report.seconds:.1f} s"
    )
    if stopped_by is not None:
        left = [o.date for o in outcomes if o.status == "cancelled"]
        print(
            f"stopped by {signal.Signals(stopped_by).name}: {len(chosen) - len(left)} of {len(chosen)} dates "
            f"done, {len(left)} left" + (f"; resume with: {rerun(left)}" if left else ""),
            file=sys.stderr,
        )
    _mail(settings.output_root, report, outcomes, rerun)
    delivered = _export_metrics(args, report)
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
    return _range(args.start, args.end)


def _not_chosen(decision):
    """The outcome of a date the plan left alone: complete (or stale, kept) dates count as already complete."""
    from .outcomes import DateOutcome

    status = "skipped" if decision.reason in ("complete", "stale") else "unselected"
    return DateOutcome(decision.date.isoformat(), status)


def _print_plan(args, decisions, chosen):
    """The dry run: each date, whether it would be built and why, then the counts per reason."""
    from .plan import count

    building = {d.date for d in chosen}
    if args.json:
        print(
            json.dumps(
                {
                    "dates": [{**d.as_dict(), "action": "build" if d.date in building else "skip"} for d in decisions],
                    "counts": count(decisions),
                    "build": len(chosen),
                    "skip": len(decisions) - len(chosen),
                },
                indent=2,
            )
        )
        return EXIT_OK
    for decision in decisions:
        action = "build" if decision.date in building else "skip"
        print(f"{decision.date}  {action:<5}  {decision.reason:<10}  {decision.detail}")
    print("reasons: " + ", ".join(f"{n} {reason}" for reason, n in count(decisions).items()))
    print(f"would build {len(chosen)} of {len(decisions)} dates (dry run: nothing was run or written)")
    return EXIT_OK


def _run_backfill(args, chosen):
    """Run the chosen dates with progress; (RunReport, the signal that stopped it or None).

    The first Ctrl-C or SIGTERM starts no new dates and lets those in progress finish; a second abandons
    them (their temporaries are removed by the next run). Either way the report covers every date, those
    never finished as "cancelled".
    """
    import threading
    import time

    from .outcomes import DateOutcome, RunReport
    from .progress import Progress
    from .runner import run_dates

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

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = run_dates(
            [d.date for d in chosen],
            workers=_workers(args),
            progress=on_finished,
            stop=stop,
            force=args.force or any(d.needs_rebuild for d in chosen),
            verify=args.verify,
            log_level=_log_level(args),
        )
    except KeyboardInterrupt:  # the second signal: what finished is kept, the rest is left
        progress.write("abandoned the dates in progress")
        report = RunReport(
            [finished.get(d.date.isoformat()) or DateOutcome(d.date.isoformat(), "cancelled") for d in chosen],
            time.monotonic() - started,
        )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        progress.close()
    return report, (signals[0] if signals else None)


def _mail(root, report, outcomes, rerun):
    """The run's one failure mail (failed and recovered dates), counted in the report's mail figures."""
    from . import notifications

    notifications.log_to_stderr()  # a mail that cannot be sent is told on stderr, as the daemon logs it
    mails = notifications.mail_run(root, outcomes, rerun)
    report.emails_sent += mails["sent"]
    report.email_failures += mails["failed"]


def cmd_status(args: argparse.Namespace) -> int:
    from tasks.iris import pipeline_settings

    from .config import checked_settings
    from .plan import count, plan

    root = _output_root()
    if args.start and args.end:
        dates = _range(args.start, args.end)
    else:
        present = partition.dates_present(root)
        start = args.start or (present[0] if present else None)
        end = args.end or (today() if args.start else present[-1] if present else None)
        dates = _range(start, end) if start and end else []
    checked_settings()
    decisions = plan(root, dates, pipeline_settings(), verify=args.verify)
    if args.json:
        print(json.dumps([_status_row(d) for d in decisions], indent=2))
        return EXIT_OK
    if not decisions:
        print(f"no dates under {root}")
        return EXIT_OK
    for decision in decisions:
        detail = "" if decision.reason == "missing" or decision.detail == "skipped" else decision.detail
        print(f"{decision.date}  {decision.reason:<10} {detail}".rstrip())
    print("dates: " + ", ".join(f"{n} {state}" for state, n in count(decisions).items()))
    return EXIT_OK


def _status_row(decision):
    """A date's state in `status --json`: failed dates with reason, step, error and time; others with
    the files that are wrong or the settings that differ."""
    row = {"date": decision.date.isoformat(), "state": decision.reason}
    if decision.failure is not None:
        row.update({key: decision.failure.get(key) for key in ("reason", "step", "error", "time")})
    elif decision.problems:
        row["problems"] = decision.problems
    if decision.history_changed:
        row["history_changed"] = decision.history_changed
    return row


def cmd_validate(args: argparse.Namespace) -> int:
    from tasks.schema import InputRejected, format_report, read_source, validate_frame

    from .config import checked_settings

    if not os.path.isfile(args.path):
        raise ConfigError(f"{args.path}: no such file")
    settings, _ = checked_settings()
    try:
        frame = read_source(args.path, settings.max_source_bytes)
        _, report = validate_frame(
            frame, source=args.path, min_rows=settings.min_rows, max_invalid_fraction=settings.max_invalid_fraction
        )
    except InputRejected as exc:
        print(exc)
        return EXIT_FAILED
    print(format_report(report))
    return EXIT_OK


def _workers(args):
    if args.workers:
        return args.workers
    from .config import checked_settings

    return checked_settings()[1].workers


def _output_root():
    from tasks.config import iris

    return iris().output_root


def _range(start, end):
    try:
        return partition.date_range(start, end)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _runs_of_same_status(outcomes):
    """(first date, last date, status, count) for each run of consecutive dates with the same status."""
    runs = []
    for outcome in outcomes:
        if runs and runs[-1][2] == outcome.status:
            runs[-1][1], runs[-1][3] = outcome.date, runs[-1][3] + 1
        else:
            runs.append([outcome.date, outcome.date, outcome.status, 1])
    return runs


def _print_failure(outcome):
    print(f"{outcome.date}: FAILED ({outcome.reason}) in {outcome.step or 'the run'}:", file=sys.stderr)
    print("  " + (outcome.error or "").replace("\n", "\n  "), file=sys.stderr)
    if outcome.reason == "error":
        print("  (run again with --verbose for Luigi's log and the traceback)", file=sys.stderr)


def _print_models(root, date):
    summary = partition.read_summary(root, date)
    if summary is None:  # changed since the run finished
        return
    print(f"  {'model':<22}{'accuracy':>9}{'macro F1':>10}")
    for name, metrics in sorted(summary["models"].items()):
        print(f"  {name:<22}{metrics['accuracy']:>9.3f}{metrics['macro_f1']:>10.3f}")
    print(f"  best: {summary['best_model']} ({summary['best_accuracy']:.3f})")


def cmd_serve(args: argparse.Namespace) -> int:
    from .daemon import serve

    return serve(verbose=args.verbose)


def cmd_report(args: argparse.Namespace) -> int:
    from .web import write_report

    _range(args.start, args.end)  # a reversed range is a usage error
    written = write_report(args.start, args.end, args.out)
    print(f"{written} files written; open {os.path.join(os.path.abspath(args.out), 'index.html')}")
    return EXIT_OK


def _check_metrics_destinations(args):
    """Refuse unusable --metrics-textfile/--pushgateway values before any work (exit status 2)."""
    import urllib.parse

    if args.metrics_textfile and not os.path.isdir(os.path.dirname(os.path.abspath(args.metrics_textfile))):
        raise ConfigError(f"--metrics-textfile {args.metrics_textfile}: no such directory")
    if args.pushgateway:
        url = urllib.parse.urlsplit(args.pushgateway)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ConfigError(f"--pushgateway {args.pushgateway!r}: expected an http:// or https:// URL")


def _export_metrics(args, report):
    """Count the run and hand the metrics over as asked; False (after a one-line error) if that failed."""
    if not (args.metrics_textfile or args.pushgateway):
        return True
    from . import metrics

    metrics.record(report)
    try:
        metrics.export(args.metrics_textfile, args.pushgateway)
    except OSError as exc:
        _print_error(f"metrics not delivered: {getattr(exc, 'reason', None) or exc}")
        return False
    return True


def cmd_worker(args):
    from .worker import SchedulerUnreachable, serve_worker

    try:
        return serve_worker(processes=args.workers, verbose=args.verbose)
    except SchedulerUnreachable as exc:  # exit 1, not 2: systemd restarts the worker until luigid is back
        _print_error(exc)
        return EXIT_FAILED


COMMANDS = {
    "run": cmd_run,
    "backfill": cmd_backfill,
    "status": cmd_status,
    "validate": cmd_validate,
    "serve": cmd_serve,
    "report": cmd_report,
    "worker": cmd_worker,
}
