"""`irisflow run`: one date (default: today), and what every run does at its end — the printed outcome,
the one failure mail, and the metrics handed over as a batch job does."""

import argparse
import logging
import os
import urllib.parse

from tasks import partition

from ..config import ConfigError, checked_settings
from ..reporting import summary
from ..secrets import remember
from ..state import today
from . import output
from .exits import EXIT_FAILED, EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from ..runner import run_dates

    date = args.date or today()
    check_metrics_destinations(args)
    report = run_dates([date], workers=workers(args), force=args.force, verify=args.verify, log_level=log_level(args))
    outcome = report.outcomes[0]
    root = checked_settings()[0].output_root
    if outcome.status == "failure":
        print_failure(outcome)
    else:
        verb = "already complete, nothing to do" if outcome.status == "skipped" else f"done in {report.seconds:.1f} s"
        output.tell(f"{outcome.date}: {verb}; outputs in {partition.partition_dir(root, date)}")
        _print_models(root, date)
    forced = ["forced"] if args.force else []
    mail_run(root, report, report.outcomes, lambda dates: summary.backfill_command(dates, forced))
    delivered = export_metrics(args, report)  # after the outcome, as backfill does: the run is told either way
    return EXIT_OK if outcome.status != "failure" and delivered else EXIT_FAILED


def log_level(args):
    """Luigi's log only with --verbose: otherwise each failure is told once, by `print_failure`."""
    return "INFO" if args.verbose else "CRITICAL"


def workers(args):
    return args.workers or checked_settings()[1].workers


def print_failure(outcome):
    text = f"{outcome.date}: FAILED ({outcome.reason}) in {outcome.step or 'the run'}:\n  "
    text += (outcome.error or "").replace("\n", "\n  ")
    if outcome.reason == "error":
        text += "\n  (run again with --verbose for Luigi's log and the traceback)"
    output.tell(text, logging.ERROR)


def _print_models(root, date):
    found = partition.read_summary(root, date)
    if found is None:  # changed since the run finished
        return
    lines = [f"  {'model':<22}{'accuracy':>9}{'macro F1':>10}"]
    for name, metrics in sorted(found["models"].items()):
        lines.append(f"  {name:<22}{metrics['accuracy']:>9.3f}{metrics['macro_f1']:>10.3f}")
    lines.append(f"  best: {found['best_model']} ({found['best_accuracy']:.3f})")
    output.tell("\n".join(lines))


def mail_run(root, report, outcomes, rerun):
    """The run's one failure mail (failed and recovered dates), counted in the report's mail figures."""
    from ..reporting import mail

    mail.log_to_stderr()  # a mail that cannot be sent is told on stderr, as the daemon logs it
    mails = mail.mail_run(root, outcomes, rerun)
    report.emails_sent += mails["sent"]
    report.email_failures += mails["failed"]


def check_metrics_destinations(args):
    """Refuse unusable --metrics-textfile/--pushgateway values before any work (exit status 2)."""
    if args.metrics_textfile and not os.path.isdir(os.path.dirname(os.path.abspath(args.metrics_textfile))):
        raise ConfigError(f"--metrics-textfile {args.metrics_textfile}: no such directory")
    if args.pushgateway:
        remember(args.pushgateway)  # masked too where an error shows its password without the URL
        url = urllib.parse.urlsplit(args.pushgateway)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ConfigError(f"--pushgateway {args.pushgateway!r}: expected an http:// or https:// URL")


def export_metrics(args, report):
    """Count the run and hand the metrics over as asked; False (after a one-line error) if that failed."""
    if not (args.metrics_textfile or args.pushgateway):
        return True
    from ..reporting import metrics

    metrics.record(report)
    try:
        metrics.export(args.metrics_textfile, args.pushgateway)
    except OSError as exc:
        output.error(f"metrics not delivered: {getattr(exc, 'reason', None) or exc}")
        return False
    return True
