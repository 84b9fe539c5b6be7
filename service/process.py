"""Process plumbing, written once: how irisflow's processes log, stop and end with their parent.

The daemon, its run process, the runner's helper processes, the assistant worker and the CLI all start,
log and stop the same way; each calls these instead of keeping its own copy.
"""

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator

from . import journal
from .secrets import mask_logging

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


def end_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent dies, even by SIGKILL, so no child goes on
    unsupervised; the targets it was writing stay whole, and the next run builds the date again.
    False when the parent died before this took effect (the caller should exit)."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    expected = parent.pid if parent is not None else os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    return os.getppid() == expected


def ignore_stop_signals() -> None:
    """A child whose parent decides when the work stops: a terminal's Ctrl-C reaches the whole process
    group, systemd's SIGTERM the whole unit; the parent tells its children itself."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def handling(handler: Callable, signals=STOP_SIGNALS) -> Iterator[None]:
    """`handler(signum, frame)` for the signals while the block runs; the previous handlers after."""
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def log_to_stderr(level: int = logging.INFO) -> None:
    """irisflow's log lines on stderr, with journal priorities when stderr is systemd's journal; every
    record of the process, Luigi's too, with its secrets masked."""
    mask_logging()
    logging.basicConfig(level=level, handlers=[journal.stderr_handler(LOG_FORMAT)])


def invoked_as() -> str:
    """The program as the operator invoked it, for the commands irisflow prints: `irisflow` (or whatever
    the console script is called), or `python -m service`."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not program or program in ("__main__.py", "-c", "-m") or program.startswith("python"):
        return "python -m service"
    return program
