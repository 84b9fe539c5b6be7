"""The command line's words: `irisflow {run,backfill,status,validate,report,serve,worker,champion,predict}` and
their options.

Values are checked as they are parsed (dates, ranges, reasons, counts), so a command starts only with
arguments it can use; a bad one is a ConfigError (one line, exit status 2).
"""

import argparse
import datetime as dt

from tasks import partition

from .. import __version__
from ..config import ConfigError
from ..reporting import summary
from ..reporting.plan import DEFAULT_REASONS, PLAN_REASONS


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
    unknown = [r for r in reasons if r not in PLAN_REASONS]
    if unknown or not reasons:
        raise argparse.ArgumentTypeError(
            f"unknown reason(s) {', '.join(unknown) or text!r}; choose from {','.join(PLAN_REASONS)}"
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
        + ",".join(PLAN_REASONS)
        + f" (default: {','.join(str(r) for r in DEFAULT_REASONS)})",
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

    champion = commands.add_parser("champion", help="which model is live: the champion and its decisions")
    actions = champion.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for name, what in (("show", "the champion now"), ("history", "every decision, oldest first")):
        action = actions.add_parser(name, help=what)
        action.add_argument("--json", action="store_true", help="print JSON")
    promote = actions.add_parser("promote", help="make a model of a complete date the champion by hand (recorded)")
    promote.add_argument("--date", type=_date, required=True, help="the date the model was trained on, YYYY-MM-DD")
    promote.add_argument("--model", required=True, help="the model's name, e.g. knn")
    promote.add_argument("--reason", required=True, help="why, for the history")
    replay = actions.add_parser("replay", help="decide every complete date from --start on again, in date order")
    replay.add_argument("--start", type=_date, required=True, help="first date to decide again, YYYY-MM-DD")

    predict = commands.add_parser("predict", help="predict the species of a CSV's rows with the champion")
    predict.add_argument("--input", required=True, metavar="FILE.csv", help="rows with exactly the feature columns")
    predict.add_argument(
        "--out", metavar="FILE.csv", help="where to write the rows and predicted_species (default: stdout)"
    )

    validate = commands.add_parser("validate", help="check a CSV file against the schema")
    validate.add_argument("path", help="the CSV file")
    return parser
