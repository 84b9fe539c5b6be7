"""`python -m service …`: run, backfill, status, validate, report (and serve, the daemon).

Exit status: 0 success, 1 a pipeline or validation failure, 2 bad usage or configuration, always with a
one-line error rather than a traceback. Commands with nothing to compute import no heavy library.
"""
import argparse
import datetime as dt
import json
import os
import re
import sys
import traceback

from tasks import partition

from .config import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATUS_WORDS = {"success": "ran", "skipped": "already complete", "failure": "FAILED"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(message)


def _date(text):
    try:
        return partition.parse_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def build_parser():
    parser = _Parser(prog="python -m service", description="irisflow: the scheduled Iris batch pipeline.")
    parser.add_argument("--verbose", action="store_true", help="show Luigi's INFO log")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run the pipeline for one date (default: today)")
    run.add_argument("--date", type=_date, help="YYYY-MM-DD (default: today in [service] timezone)")
    backfill = commands.add_parser("backfill", help="run every date of an inclusive range")
    backfill.add_argument("--start", type=_date, required=True, help="first date, YYYY-MM-DD")
    backfill.add_argument("--end", type=_date, required=True, help="last date, YYYY-MM-DD")
    for command in (run, backfill):
        command.add_argument("--verify", action="store_true",
                             help="also compare every file with its recorded sha256 and rebuild what differs")
        command.add_argument("--workers", type=_positive, help="worker processes (default: [service] workers)")
        command.add_argument("--force", action="store_true",
                             help="recompute complete dates; old outputs are replaced only once the new are complete")
        command.add_argument("--metrics-textfile", metavar="PATH",
                             help="write the run's metrics for node_exporter's textfile collector (a .prom file)")
        command.add_argument("--pushgateway", metavar="URL", help="push the run's metrics to this Pushgateway")

    status = commands.add_parser("status", help="show which dates are complete, failed or missing")
    status.add_argument("--start", type=_date, help="first date (default: the oldest date with outputs)")
    status.add_argument("--end", type=_date, help="last date (default: today, or the newest date with outputs)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--verify", action="store_true",
                        help="also compare every file with its recorded sha256 (reads every file)")

    commands.add_parser("serve", help="run the daemon: the daily schedule, catch-up, failure mail, /metrics and "
                                      "the partition view")

    report = commands.add_parser("report", help="write the partition view of a date range as static HTML files")
    report.add_argument("--start", type=_date, required=True, help="first date, YYYY-MM-DD")
    report.add_argument("--end", type=_date, required=True, help="last date, YYYY-MM-DD")
    report.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and the other pages")

    validate = commands.add_parser("validate", help="check a CSV file against the schema")
    validate.add_argument("path", help="the CSV file")
    return parser


def main(argv=None):
    args = None
    try:
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
        _print_error(f"unexpected {type(exc).__name__}: {exc}" + ("" if args is not None and args.verbose
                                                                  else " (run again with --verbose for the traceback)"))
        return EXIT_FAILED


def _print_error(message):
    """One line, whatever the message holds: control characters from arguments are shown escaped."""
    shown = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda match: repr(match.group())[1:-1], str(message))
    print(f"irisflow: error: {shown}", file=sys.stderr)


def today():
    """Today's date in the schedule's time zone."""
    from .config import service, time_zone

    return dt.datetime.now(time_zone(service().timezone)).date()


def _log_level(args):
    """Luigi's log only with --verbose: otherwise each failure is told once, by `_print_failure`."""
    return "INFO" if args.verbose else "CRITICAL"


def cmd_run(args):
    from .runner import run_dates

    date = args.date or today()
    _check_metrics_destinations(args)
    report = run_dates([date], workers=_workers(args), force=args.force, verify=args.verify,
                       log_level=_log_level(args))
    outcome = report.outcomes[0]
    if outcome.status == "failure":
        _print_failure(outcome)
    else:
        root = _output_root()
        verb = "already complete, nothing to do" if outcome.status == "skipped" else f"done in {report.seconds:.1f} s"
        print(f"{outcome.date}: {verb}; outputs in {partition.partition_dir(root, date)}")
        _print_models(root, date)
    delivered = _export_metrics(args, report)  # after the outcome, as backfill does: the run is told either way
    return EXIT_OK if outcome.status != "failure" and delivered else EXIT_FAILED


def cmd_backfill(args):
    from .runner import run_dates

    dates = _range(args.start, args.end)

    def progress(outcome, done, total):
        if outcome.status != "skipped":
            print(f"[{done}/{total}] {outcome.date} {outcome.status}", file=sys.stderr, flush=True)

    _check_metrics_destinations(args)
    report = run_dates(dates, workers=_workers(args), force=args.force, verify=args.verify, progress=progress,
                       log_level=_log_level(args))
    for first, last, status, count in _runs_of_same_status(report.outcomes):
        span = first if first == last else f"{first}..{last}"
        print(f"{span}  {STATUS_WORDS[status]} ({count} date{'s' if count > 1 else ''})")
    for outcome in report.failed:
        _print_failure(outcome)
    counts = {s: sum(o.status == s for o in report.outcomes) for s in ("success", "skipped", "failure")}
    print(f"backfill {args.start}..{args.end}: {counts['success']} ran, {counts['skipped']} already complete, "
          f"{counts['failure']} failed in {report.seconds:.1f} s")
    delivered = _export_metrics(args, report)
    if report.failed:
        print("failed dates: " + " ".join(o.date for o in report.failed), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if delivered else EXIT_FAILED


def cmd_status(args):
    from .status import statuses

    root = _output_root()
    if args.start and args.end:
        dates = _range(args.start, args.end)
    else:
        present = partition.dates_present(root)
        start = args.start or (present[0] if present else None)
        end = args.end or (today() if args.start else present[-1] if present else None)
        dates = _range(start, end) if start and end else []
    rows = statuses(root, dates, verify=args.verify)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no dates under {root}")
    for row in rows:
        detail = ""
        if row["state"] == "failed":
            headline = (row["error"] or "").partition("\n")[0]  # an error may be empty or span lines
            detail = f"{row['reason']} in {row['step']}: {headline}"
        elif row["state"] in ("incomplete", "damaged"):
            detail = "; ".join(row["problems"])
        elif row.get("history_changed"):
            detail = f"history changed: {row['history_changed'].get('source')} differs from the first snapshot"
        print(f"{row['date']}  {row['state']:<10} {detail}".rstrip())
    return EXIT_OK


def cmd_validate(args):
    from tasks.schema import InputRejected, format_report, read_source, validate_frame

    from .config import checked_settings

    if not os.path.isfile(args.path):
        raise ConfigError(f"{args.path}: no such file")
    settings, _ = checked_settings()
    try:
        frame = read_source(args.path, settings.max_source_bytes)
        _, report = validate_frame(frame, source=args.path, min_rows=settings.min_rows,
                                   max_invalid_fraction=settings.max_invalid_fraction)
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


def cmd_serve(args):
    from .daemon import serve

    return serve(verbose=args.verbose)


def cmd_report(args):
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


COMMANDS = {"run": cmd_run, "backfill": cmd_backfill, "status": cmd_status, "validate": cmd_validate,
            "serve": cmd_serve, "report": cmd_report}
