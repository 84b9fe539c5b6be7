"""The daemon, `irisflow serve`: the schedule, catch-up, late-data retries, reports, and its listener.

passes.py   what is due and what a pass does (the Daemon, on an injectable clock)
child.py    each pass's dates in a fresh process
settled.py  failures not run again until their input changes
status.py   the one-line status systemd shows
serve.py    APScheduler, signals, the lock file, /metrics and the view, systemd's notify protocol
"""

from .passes import DAILY_JOB, Daemon
from .serve import scheduled_run, serve

__all__ = ["DAILY_JOB", "Daemon", "scheduled_run", "serve"]
