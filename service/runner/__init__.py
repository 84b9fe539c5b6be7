"""The runner: every run of any date goes through `run_dates` (the CLI's `run` and `backfill`, the daemon's
passes).

    builds.py    dates → chunks → luigi.build → one outcome per date, failure records
    sharing.py   chunks handed out to this process, its helper processes and other hosts
    outcomes.py  Luigi's task events → each date's outcome (DateOutcome, RunReport)
"""

from .builds import build_chunk, run_dates
from .outcomes import DateOutcome, RunReport

__all__ = ["DateOutcome", "RunReport", "build_chunk", "run_dates"]
