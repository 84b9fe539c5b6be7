"""Failure email through Luigi's own notifications (luigi.cfg `[email]` and `[smtp]`), counted.

One mail per run, not one per date: the runner turns Luigi's per-task failure mail off for its builds,
and a `run`, a `backfill` or a daemon pass calls `mail_run` once at its end. That mail names every date
that failed, grouped by reason and step (`service.reporting.summary`), and, once, every date that failed and was
mailed before and is complete now ("recovered"). Which dates were mailed as failed is kept in
`{output_root}/failed/mailed.json`, beside the failure records, so the CLI and the daemon agree (with an
output root on object storage, in `[service] state_dir`). Every
mail goes through `luigi.notifications.send_error_email` and so obeys the same configuration and rules
(nothing without `[email] receiver`, nothing from a terminal unless `[email] force_send`).

`install` wraps Luigi's mail senders once per process, so every attempt, whoever makes it, is tallied
as sent or failed. Luigi's SMTP sender logs socket errors and returns, so during the call its module
logger is swapped for ours (`irisflow.mail`, always at ERROR, whatever level Luigi's log runs at) and an
ERROR record means failure; the other methods raise, which is logged the same way. Either way a mail
that cannot be sent is logged and counted, never fatal.
"""

import fcntl
import functools
import html
import json
import logging
import os
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from luigi import notifications

from tasks import partition

from ..secrets import mask
from . import summary

# Luigi's [smtp] defaults username, password and local_hostname to None and then warns about its own
# defaults each time it reads them.
warnings.filterwarnings("ignore", message=r'Parameter "(username|password|local_hostname)" with value "None"')

SENDERS = ("send_email_smtp", "send_email_ses", "send_email_sendgrid", "send_email_sns")
MAIL_LOG = logging.getLogger("irisflow.mail")
MAIL_LOG.setLevel(logging.ERROR)
MAILED = "mailed.json"
_tally = {"sent": 0, "failed": 0}


class _ErrorSeen(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.seen = False

    def emit(self, record):
        self.seen = True


def _counted(send):
    @functools.wraps(send)
    def send_counted(*args, **kwargs):
        errors = _ErrorSeen()
        MAIL_LOG.addHandler(errors)
        luigi_logger, notifications.logger = notifications.logger, MAIL_LOG
        try:
            send(*args, **kwargs)
        except Exception:  # a mail that cannot be sent must never stop a run
            MAIL_LOG.exception("Could not send email")
        finally:
            notifications.logger = luigi_logger
            MAIL_LOG.removeHandler(errors)
        _tally["failed" if errors.seen else "sent"] += 1

    send_counted.counted = True
    return send_counted


class _OneLine(logging.Formatter):
    """`ERROR irisflow.mail: message` on one line: an exception's type and text instead of its traceback,
    and secrets masked (the [smtp] password, should a server's reply echo it)."""

    def format(self, record):
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return f"{record.levelname} {record.name}: " + re.sub(r"\s*\n\s*", " ", mask(message).strip())


class _Stderr(logging.Handler):
    """Writes to the sys.stderr of the moment (a test may have replaced it since)."""

    def emit(self, record):
        try:
            print(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def log_to_stderr():
    """For the CLI, which configures no logging of its own: every mail that cannot be sent, and every
    record of mailed dates that cannot be kept, is one line on stderr (idempotent)."""
    if not any(isinstance(handler, _Stderr) for handler in MAIL_LOG.handlers):
        handler = _Stderr(logging.ERROR)
        handler.setFormatter(_OneLine())
        MAIL_LOG.addHandler(handler)


def install():
    """Count every mail Luigi sends in this process (idempotent; the runner calls it before each build)."""
    for name in SENDERS:
        send = getattr(notifications, name)
        if not getattr(send, "counted", False):
            setattr(notifications, name, _counted(send))


def tally():
    """The mails this process has tried to send so far: {"sent": n, "failed": n}."""
    return dict(_tally)


def since(before):
    """The mails tried since `before` (an earlier `tally()`)."""
    return {key: _tally[key] - before[key] for key in _tally}


def send_failure(subject, message):
    """Mail one of the daemon's own failures as Luigi mails a task's; returns the mails it took, as `tally`."""
    install()
    before = tally()
    notifications.send_error_email(mask(subject), _as_configured(mask(message)))
    return since(before)


def _as_configured(text):
    """The mail's text as Luigi's `[email] format` will send it: under `html` Luigi sends the message as it
    is, as text/html, so the text (which names values from the input, paths and configuration) is
    escaped there and kept preformatted; plain text stays as it is."""
    if notifications.email().format != "html":
        return text
    return f"<html><body><pre>{html.escape(text)}</pre></body></html>"


def mail_run(root, outcomes, rerun):
    """The run's one mail, if any date failed; returns the mails it took, as `tally`.

    The mail also names, once, the dates mailed as failed before that are complete now (recovered).
    `rerun(dates)` is the command that reruns those dates, shown under each group of failures.
    """
    failed = [o for o in outcomes if o.status == "failure"]
    if not failed:
        return {"sent": 0, "failed": 0}
    dates = [o.date for o in failed]
    with _mailed_dates(root) as mailed:
        recovered = sorted(d for d in mailed if d not in dates and partition.is_complete(root, d))
        mails = send_failure(
            summary.mail_subject(dates, recovered), summary.mail_body(summary.failure_groups(failed), recovered, rerun)
        )
        if mails["sent"]:
            for date in recovered:
                del mailed[date]
            mailed.update({o.date: {"reason": o.reason, "step": o.step} for o in failed})
    return mails


def _records_folder(root):
    """Where the record of mailed dates lives: beside the failure records on a file system; in this
    host's `[service] state_dir` when the output root is on object storage (each host mails its runs)."""
    if partition.is_object(partition.location(root)):
        from ..config.sections import service

        return Path(service().state_dir)
    return Path(root) / "failed"


@contextmanager
def _mailed_dates(root):
    """{date: {"reason", "step"}} of the dates mailed as failed and not yet as recovered, locked and saved
    back; if the record cannot be read or written (a full disk) the mail still goes, as if none were."""
    folder = _records_folder(root)
    record = folder / MAILED
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".mailed.lock", "a")
    except OSError as exc:
        MAIL_LOG.error("cannot keep the record of mailed dates %s: %s", record, exc)
        yield {}
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            mailed = json.loads(record.read_text())
        except FileNotFoundError:
            mailed = {}
        except (OSError, ValueError) as exc:
            MAIL_LOG.error("ignoring the unreadable record of mailed dates %s: %s", record, exc)
            mailed = {}
        mailed = mailed if isinstance(mailed, dict) else {}
        before = dict(mailed)
        yield mailed
        if mailed != before:
            temporary = record.with_name(f".{MAILED}.tmp")
            try:
                temporary.write_text(json.dumps(mailed, indent=1, sort_keys=True))
                os.replace(temporary, record)
            except OSError as exc:
                MAIL_LOG.error("cannot update the record of mailed dates %s: %s", record, exc)
