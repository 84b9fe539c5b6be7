"""Figure 4b's measurement, run as a process of its own: the daemon's RSS over many scheduled runs.

A service.daemon.Daemon on an injected clock that moves on one day per run, its scheduler real but
paused (as in tests/test_daemon.py), makes each scheduled run (`tick`) in this process: with
in_process=True the pipeline's own memory (Luigi, pandas, scikit-learn) counts too, which is stricter
than `serve`, whose passes run in a child process. Prints JSON: the RSS after the first runs and after
all of them, in bytes.

    python -m bench.daemon_memory --runs 500 --first 50
"""

import argparse
import datetime as dt
import json
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from service.config import checked_settings, time_zone
from service.daemon import Daemon
from service.daemon.serve import make_scheduler

PAGE_KB = 1024


def rss():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * PAGE_KB for line in handle if line.startswith("VmRSS:"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.daemon_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--first", type=int, default=50)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2001, 1, 1))
    args = parser.parse_args(argv)
    _, runtime = checked_settings()
    Path(runtime.state_dir).mkdir(parents=True, exist_ok=True)
    scheduler = make_scheduler(BackgroundScheduler, runtime.state_dir, time_zone(runtime.timezone))
    scheduler.start(paused=True)
    clock = [dt.datetime.combine(args.start, dt.time(23, 59), time_zone(runtime.timezone))]
    daemon = Daemon(scheduler, now=lambda: clock[0], in_process=True)
    measured = {}
    for run in range(1, args.runs + 1):
        daemon.tick()
        clock[0] += dt.timedelta(days=1)
        if run in (args.first, args.runs):
            measured[run] = rss()
    scheduler.remove_all_jobs()
    scheduler.shutdown(wait=False)
    print(
        json.dumps(
            {
                "first": args.first,
                "runs": args.runs,
                "rss_after_first": measured[args.first],
                "rss_after_all": measured[args.runs],
            }
        )
    )


if __name__ == "__main__":
    main()
