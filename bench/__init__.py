"""The benchmark behind `make bench`: figures, not assertions.

`python -m bench` prints one figure a line, each timing with its ratio against a reference measured in
the same run and the issue's goal beside it: a cold 365-date backfill against a plain one-process loop
(bench.reference), a backfill with nothing to do, scaling to 3,650 dates, peak memory, one cold date.
"""
