"""`irisflow status`, `validate` and `report`: what is there, read-only. Each date's state comes from
`service.state`, as everywhere else."""

import argparse
import json
import os

from tasks import partition

from ..config import ConfigError, checked_settings
from ..state import configured, count, today
from . import output
from .exits import EXIT_FAILED, EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    states = configured()
    root = states.root
    if args.start and args.end:
        dates = _range(args.start, args.end)
    else:
        present = partition.dates_present(root)
        start = args.start or (present[0] if present else None)
        end = args.end or (today() if args.start else present[-1] if present else None)
        dates = _range(start, end) if start and end else []
    found = states.of_dates(dates, verify=args.verify)
    if args.json:
        from ..champion import decisions_by_date

        decided = decisions_by_date(root)
        rows = [s.as_dict() for s in found]
        for row in rows:
            if row["date"] in decided:
                row["champion_decision"] = decided[row["date"]]
        output.tell(json.dumps(rows, indent=2))
        return EXIT_OK
    if not found:
        output.tell(f"no dates under {root}")
        return EXIT_OK
    lines = [f"{s.date}  {s.state:<10} {s.detail}".rstrip() for s in found]
    lines.append("dates: " + ", ".join(f"{n} {state}" for state, n in count(found).items()))
    lines.append(f"output root: {root}")
    output.tell("\n".join(lines))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from tasks.reading import read_source
    from tasks.schema import InputRejected, format_report, validate_frame

    settings, _ = checked_settings()
    _check_readable_file(args.path)
    try:
        frame = read_source(args.path, settings.max_source_bytes)
        _, report = validate_frame(
            frame, source=args.path, min_rows=settings.min_rows, max_invalid_fraction=settings.max_invalid_fraction
        )
    except InputRejected as exc:
        output.tell(str(exc))
        return EXIT_FAILED
    output.tell(format_report(report))
    return EXIT_OK


def _check_readable_file(path):
    """A regular file, or ConfigError saying what it is instead."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    for test, kind in kinds.items():
        if test(mode):
            raise ConfigError(f"{path}: is {kind}, not a regular file")


def cmd_report(args: argparse.Namespace) -> int:
    from ..view import write_report

    _range(args.start, args.end)  # a reversed range is a usage error
    written = write_report(args.start, args.end, args.out)
    output.tell(f"{written} files written; open {os.path.join(os.path.abspath(args.out), 'index.html')}")
    return EXIT_OK


def _range(start, end):
    try:
        return partition.date_range(start, end)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
