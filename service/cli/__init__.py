"""`irisflow …` (also `python -m service …`): the command line.

    parser.py      the commands, their options, and how values are checked
    runs.py        run: one date, and what every run does at its end (mail, metrics, printed outcome)
    backfill.py    backfill: a range, its plan, progress, and stopping on a signal
    inspection.py  status, validate, report: what is there, read-only
    champion.py    champion show/history/promote/replay, predict: which model is live
    output.py      lines for the operator, with journal priorities under systemd

Exit status: 0 success, 1 a pipeline or validation failure, 2 bad usage or configuration, always with a
one-line error rather than a traceback (the traceback with --verbose). Commands with nothing to compute
import no heavy library.
"""

import argparse
import logging
import traceback
from collections.abc import Sequence

from ..config import ConfigError
from ..defaults import use_packaged_defaults
from ..secrets import mask_logging
from . import output
from .exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .parser import build_parser

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = None
    mask_logging()  # Luigi's log too, which a --verbose run shows, names the scheduler URL
    try:
        use_packaged_defaults()
        args = build_parser().parse_args(argv)
        return _commands()[args.command](args)
    except ConfigError as exc:
        output.error(exc)
        return EXIT_USAGE
    except OSError as exc:  # a file or directory the command needs cannot be read or written
        output.error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_FAILED
    except KeyboardInterrupt:
        output.tell("irisflow: interrupted", logging.WARNING)
        return 130
    except Exception as exc:  # a bug, or a state nobody foresaw: one line, the traceback with --verbose
        verbose = args is not None and args.verbose
        if verbose:
            traceback.print_exc()
        output.error(
            f"unexpected {type(exc).__name__}: {exc}"
            + ("" if verbose else " (run again with --verbose for the traceback)")
        )
        return EXIT_FAILED


def cmd_serve(args: argparse.Namespace) -> int:
    from ..daemon import serve

    return serve(verbose=args.verbose)


def cmd_worker(args: argparse.Namespace) -> int:
    from ..central.worker import SchedulerUnreachable, serve_worker

    try:
        return serve_worker(processes=args.workers, verbose=args.verbose)
    except SchedulerUnreachable as exc:  # exit 1, not 2: systemd restarts the worker until luigid is back
        output.error(exc)
        return EXIT_FAILED


def cmd_champion(args: argparse.Namespace) -> int:
    from . import champion

    return {
        "show": champion.cmd_show,
        "history": champion.cmd_history,
        "promote": champion.cmd_promote,
        "replay": champion.cmd_replay,
    }[args.action](args)


def _commands():
    from .backfill import cmd_backfill
    from .champion import cmd_predict
    from .inspection import cmd_report, cmd_status, cmd_validate
    from .runs import cmd_run

    return {
        "run": cmd_run,
        "backfill": cmd_backfill,
        "status": cmd_status,
        "validate": cmd_validate,
        "serve": cmd_serve,
        "report": cmd_report,
        "worker": cmd_worker,
        "champion": cmd_champion,
        "predict": cmd_predict,
    }
