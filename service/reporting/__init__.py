"""What irisflow tells: the plan of a backfill, a run's summary, the failure mail, metrics, progress.

plan.py      what a backfill would do with each date, and why (its state)
summary.py   failures grouped by reason and step, rerun commands
mail.py      the one failure mail per run, through Luigi's notifications
metrics.py   the Prometheus registry and how runs update it
progress.py  a tqdm bar on a terminal, plain lines elsewhere
"""
