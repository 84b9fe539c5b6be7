"""`python -m bench.view drift|grid`: what drift and the partition view cost, measured in one process and
printed as JSON (figures 6 and 7 of `make bench`).

    drift --date D --repeats N   the Drift task of a date whose previous dates are complete, run N times
    grid --copies N              N dates made by hard-linking the newest complete partition, then the grid
                                 over all of them, each year's page and one date page, rendered
"""

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

from tasks import partition
from tasks.config import iris


def drift_seconds(date, repeats):
    """Median seconds of Drift's work for `date` (its drift.json removed before each run)."""
    from tasks.iris import Drift

    task = Drift(date=date)
    times = []
    for _ in range(repeats):
        Path(task.output().path).unlink(missing_ok=True)
        started = time.perf_counter()
        task.produce()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def copy_partitions(root, count):
    """`count` dates ending at the newest complete one, each a complete copy of it (its files hard-linked,
    its summary its own, naming its date); (first, last)."""
    newest = partition.dates_present(root)[-1]
    source = partition.partition_dir(root, newest)
    summary = json.loads((source / partition.SUMMARY).read_text())
    first = newest - dt.timedelta(days=count - 1)
    for date in partition.date_range(first, newest - dt.timedelta(days=1)):
        target = partition.partition_dir(root, date)
        for path in source.rglob("*"):
            destination = target / path.relative_to(source)
            if path.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
            elif path.name == partition.SUMMARY:
                destination.write_text(json.dumps({**summary, "date": date.isoformat()}))
            elif not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, destination)
    return first, newest


def grid_seconds(copies):
    """Seconds to render the grid over every date, each year's page and one date page; heavy imports."""
    from service.view import configured_view

    first, last = copy_partitions(iris().output_root, copies)
    view = configured_view()
    started = time.perf_counter()
    page = view.grid(first, last)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    for year in range(first.year, last.year + 1):
        view.year(dt.date(year, 1, 1))
    years = time.perf_counter() - started
    started = time.perf_counter()
    view.date(last)
    one_date = time.perf_counter() - started
    return {
        "dates": copies,
        "all_dates_seconds": whole,
        "year_pages_seconds": years,
        "years": last.year - first.year + 1,
        "date_page_seconds": one_date,
        "html_bytes": len(page),
        "heavy_imported": sorted(name for name in ("pandas", "sklearn", "scipy", "matplotlib") if name in sys.modules),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.view", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    drift = commands.add_parser("drift")
    drift.add_argument("--date", type=partition.parse_date, required=True)
    drift.add_argument("--repeats", type=int, default=5)
    grid = commands.add_parser("grid")
    grid.add_argument("--copies", type=int, default=3650)
    args = parser.parse_args(argv)
    if args.command == "drift":
        print(json.dumps({"seconds": drift_seconds(args.date, args.repeats)}))
    else:
        print(json.dumps(grid_seconds(args.copies)))


if __name__ == "__main__":
    main()
