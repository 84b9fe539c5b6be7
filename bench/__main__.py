"""`python -m bench [--quick]`: run every figure and print one a line (see the package docstring)."""

import argparse
import os
import sys
import tempfile
import time

from . import figures, scale_out, store
from .harness import BenchError

QUICK = figures.Plan(dates=30, scale_dates=300, repeats=1, daemon_runs=60, daemon_first=10, scale_out_dates=12)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smaller run: {QUICK.dates} and {QUICK.scale_dates} dates, {QUICK.repeats} repeat",
    )
    parser.add_argument("--dates", type=int, help="dates of the backfill figures (default 365)")
    parser.add_argument("--scale-dates", type=int, help="dates of the scaling figure's large run (default 3650)")
    parser.add_argument("--repeats", type=int, help="runs per timing; medians are quoted (default 3)")
    parser.add_argument("--scale-out-dates", type=int, help="dates of each run of figures 8-11 (default 60)")
    return parser


def plan_from(args):
    plan = QUICK if args.quick else figures.Plan()
    chosen = {
        key: value
        for key, value in (
            ("dates", args.dates),
            ("scale_dates", args.scale_dates),
            ("repeats", args.repeats),
            ("scale_out_dates", args.scale_out_dates),
        )
        if value
    }
    return figures.Plan(**{**plan.__dict__, **chosen})


def main(argv=None, out=sys.stdout):
    """Print every figure; exit status 1 if a benchmarked command failed or outputs differed."""
    plan = plan_from(build_parser().parse_args(argv))
    started = time.monotonic()
    say = lambda text: print(text, file=out, flush=True)  # noqa: E731
    say(
        f"irisflow benchmark: {plan.dates} dates, {plan.repeats} repeat(s), {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start; timings are medians"
    )
    with tempfile.TemporaryDirectory(prefix="irisflow-bench-") as tmp:
        try:
            cold, identical, complete = figures.backfill_cold(plan, tmp)
            first, plain, memory = cold
            for figure in (
                lambda: first,
                lambda: plain,
                lambda: figures.backfill_nothing_to_do(plan, complete),
                lambda: figures.status_verified(plan, complete),
                lambda: figures.orchestration(plan, tmp),
                lambda: figures.scaling(plan, tmp),
                lambda: memory,
                lambda: figures.daemon_memory(plan, tmp),
                lambda: figures.daemon_idle(plan, tmp),
                lambda: figures.one_date_cold(plan, tmp),
                lambda: figures.drift_per_date(plan, tmp),
                lambda: figures.view_render(plan, tmp),
                *scale_out.figures(plan, tmp),
                lambda: store.figures(plan, tmp),
            ):
                measured = figure()
                for each in measured if isinstance(measured, list) else [measured]:
                    for line in each.lines():
                        say(line)
        except BenchError as exc:
            say(f"benchmark failed: {exc}")
            return 1
    say(f"done in {time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
