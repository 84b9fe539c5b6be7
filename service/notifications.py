"""Failure email through Luigi's own notifications (luigi.cfg `[email]` and `[smtp]`), counted.

Luigi's worker mails task failures itself; the daemon mails its own failures (a data deadline passed, an
error outside any task) with `send_failure`, so every mail obeys the same configuration and the same
rules (nothing without `[email] receiver`, nothing from a terminal unless `[email] force_send`).

`install` wraps Luigi's mail senders once per process, so every attempt, whoever makes it, is tallied
as sent or failed. Luigi's SMTP sender logs socket errors and returns, so during the call its module
logger is swapped for ours (`irisflow.mail`, always at ERROR, whatever level Luigi's log runs at) and an
ERROR record means failure; the other methods raise, which is logged the same way. Either way a mail
that cannot be sent is logged and counted, never fatal.
"""
import functools
import logging
import warnings

from luigi import notifications

# Luigi's [smtp] defaults username, password and local_hostname to None and then warns about its own
# defaults each time it reads them.
warnings.filterwarnings("ignore", message=r'Parameter "(username|password|local_hostname)" with value "None"')

SENDERS = ("send_email_smtp", "send_email_ses", "send_email_sendgrid", "send_email_sns")
MAIL_LOG = logging.getLogger("irisflow.mail")
MAIL_LOG.setLevel(logging.ERROR)
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
    notifications.send_error_email(subject, message)
    return since(before)
