"""What a command tells its operator, on the terminal and, under systemd, in the journal at its priority.

Progress and results go to stdout at info, failures to stderr at error: under systemd (a backfill unit)
each line then carries its syslog priority (`service.journal`), so `journalctl -p err -u
irisflow-backfill@…` shows exactly the failures. Control characters that came from arguments or files
are shown escaped, so one message stays one line.
"""

import logging
import re
import sys

from .. import journal
from ..secrets import mask

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def escaped(text) -> str:
    """`text` with control characters (but line ends) shown as Python escapes."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], str(text))


def tell(text, level=logging.INFO) -> None:
    """Lines for the operator: info to stdout, warnings and errors to stderr, each with its journal
    priority when that stream is the journal; secrets masked (`service.secrets`)."""
    stream = sys.stdout if level < logging.WARNING else sys.stderr
    lines = escaped(mask(text)).split("\n")
    if journal.is_journal(stream):
        prefix = f"<{journal.priority(level)}>"
        lines = [prefix + line for line in lines]
    print("\n".join(lines), file=stream, flush=True)


def error(message) -> None:
    """The one-line error a failed command ends with: `irisflow: error: …`."""
    tell("irisflow: error: " + escaped(mask(message)).replace("\n", " "), logging.ERROR)
