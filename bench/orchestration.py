"""`python -m bench.orchestration --start D --dates N [--profile K]`: how much of a build's CPU is the
tasks' own work, measured in one process and printed as JSON (figure 12 of `make bench`).

The runner's own run of N dates in this process (`service.runner.builds.run_dates`, chunk by chunk as in
each process of a backfill), with each task's `produce()` timed: whatever CPU the run takes outside them
(Luigi's scheduling and events, completeness checks, locks, the champion's decisions) is orchestration. One date is built first,
untimed, so the figure is of the steady state, not of imports a process pays once. With --profile K,
the K functions with the most CPU of their own outside `produce()` are listed too (cProfile).
"""

import argparse
import cProfile
import datetime as dt
import io
import json
import pstats
import time

from tasks import partition
from tasks.base import DatePartitionTask


class ProduceClock:
    """CPU seconds spent inside every DatePartitionTask's produce(), by task family."""

    def __init__(self, profiler=None):
        self.seconds: dict[str, float] = {}
        self._depth = 0
        self._profiler = profiler  # switched off inside produce(), so it profiles the rest alone

    def install(self):
        for family in _task_classes():
            family.produce = self._timed(family.produce, family.__name__)

    def _timed(self, produce, name):
        def timed(task):
            self._depth += 1
            if self._profiler and self._depth == 1:
                self._profiler.disable()
            started = time.process_time()
            try:
                return produce(task)
            finally:
                self._depth -= 1
                if not self._depth:
                    self.seconds[name] = self.seconds.get(name, 0.0) + time.process_time() - started
                    if self._profiler:
                        self._profiler.enable()

        return timed


def _task_classes():
    pending, found = [DatePartitionTask], []
    while pending:
        family = pending.pop()
        found.extend(family.__subclasses__())
        pending.extend(family.__subclasses__())
    return [family for family in found if "produce" in vars(family)]


def orchestration_profile(profiler, top):
    """The `top` functions with the most CPU of their own outside produce() (the profiler is off inside)."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = sorted(
        ((own, calls, pstats.func_std_string(func)) for func, (_, calls, own, _, _) in stats.stats.items()),
        reverse=True,
    )
    return [{"function": name, "own_seconds": round(own, 4), "calls": calls} for own, calls, name in rows[:top]]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.orchestration", description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=partition.parse_date, required=True)
    parser.add_argument("--dates", type=int, default=30)
    parser.add_argument("--profile", type=int, default=0, help="list this many functions outside produce()")
    parser.add_argument("--dump", help="with --profile: also write the pstats file here")
    args = parser.parse_args(argv)
    from service.runner.builds import run_dates
    from tasks.warmup import one_thread_each

    one_thread_each()
    run_dates([args.start - dt.timedelta(days=1)])  # the imports and first-use costs, untimed
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    clock = ProduceClock(profiler)
    clock.install()
    dates = list(partition.date_range(args.start, args.start + dt.timedelta(days=args.dates - 1)))
    started, wall = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    outcomes = run_dates(dates).outcomes
    if profiler:
        profiler.disable()
        if args.dump:
            profiler.dump_stats(args.dump)
    total, wall = time.process_time() - started, time.perf_counter() - wall
    failed = [o.date for o in outcomes if o.status != "success"]
    produce = sum(clock.seconds.values())
    print(
        json.dumps(
            {
                "dates": args.dates,
                "failed": failed,
                "cpu_seconds": total,
                "wall_seconds": wall,
                "produce_seconds": produce,
                "produce_by_task": clock.seconds,
                "orchestration_share": (total - produce) / total,
                "profile": orchestration_profile(profiler, args.profile) if profiler else [],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
