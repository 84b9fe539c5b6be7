"""Log lines that reach systemd's journal with their level.

Under systemd the daemon's stderr is a journal stream, which systemd names in JOURNAL_STREAM
("device:inode"). A line that starts with `<N>` (sd-daemon(3)) is stored at syslog priority N, so
`journalctl -u irisflow -p warning` shows warnings and errors only. Everywhere else (a terminal, a file,
a test) the lines stay plain.
"""

import logging
import os
import sys

# logging's levels as syslog priorities: critical 2, error 3, warning 4, info 6, debug 7.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def priority(levelno):
    """The syslog priority of a logging level (levels in between take the next lower one's)."""
    return next((value for level, value in _PRIORITIES if levelno >= level), 7)


def is_journal(stream):
    """Whether `stream` is the journal stream systemd connected (not, say, a file a child redirected to)."""
    expected = os.environ.get("JOURNAL_STREAM")
    try:
        stat = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


class JournalFormatter(logging.Formatter):
    """Each line of a record, a traceback's too, prefixed with the record's priority."""

    def format(self, record):
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stderr_handler(fmt):
    """A handler writing `fmt` lines to stderr: with priorities when stderr is the journal, plain otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter((JournalFormatter if is_journal(sys.stderr) else logging.Formatter)(fmt))
    return handler


def luigi_to_journal(level):
    """When stderr is the journal: Luigi's worker log (logger luigi-interface) at `level` with priorities, in
    place of the plain handler Luigi would add at its first build (`[core] no_configure_logging`, for this
    process only). Call it before the first build."""
    if not is_journal(sys.stderr):
        return
    import luigi.configuration

    config = luigi.configuration.get_config()
    if not config.has_section("core"):
        config.add_section("core")
    config.set("core", "no_configure_logging", "true")
    logger = logging.getLogger("luigi-interface")
    logger.setLevel(level)
    logger.addHandler(stderr_handler("%(levelname)s: %(message)s"))
