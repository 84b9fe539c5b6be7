"""Getting a process ready for the tasks' work only where there is work.

A run with nothing to do (a no-op backfill, `status`) never loads pandas, scikit-learn or pandera: the
first task a process finds to do calls `import_heavy_libraries`. A process about to fork task processes
(stock Luigi with `--workers N`, the assistant worker) first rehearses a date (`tasks.rehearsal`), so
the children inherit what the steps load on first use.
"""

import functools
import gc
import logging
import os

from . import config

LOG = logging.getLogger("irisflow.tasks")
# One BLAS/OpenMP thread per worker process: two processes each spinning up a thread per core fight
# over the two cores and run slower than one process alone.
THREAD_LIMITS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_thread_each():
    """One BLAS/OpenMP thread in this process (effective before it loads BLAS), unless set otherwise."""
    for name in THREAD_LIMITS:
        os.environ.setdefault(name, "1")


@functools.cache
def import_heavy_libraries():
    """Get this process ready to do the tasks' work, once, in the process that finds a task to do, while
    a run with nothing to do never loads any of it: the libraries, one BLAS/OpenMP thread (unless the
    operator chose otherwise; on these tiny fits more threads only contend, and a forked child would
    start its own), the objects made so far frozen out of the garbage collector's reach (its full
    collections then skip the libraries), and, should this process fork task processes, their
    preparation just before it does.
    """
    one_thread_each()
    import pandas  # noqa: F401
    import pandera.pandas  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    from .models import import_estimators

    import_estimators()
    gc.freeze()
    os.register_at_fork(before=_prepare_task_processes)


@functools.cache
def _prepare_task_processes():
    """Before this process first forks (stock Luigi with `--workers N` forks a process per task, as does
    the assistant worker with `--workers N`), rehearse a date's work on made-up rows (`tasks.rehearsal`),
    so every child inherits what the steps load and build on first use instead of paying for it again,
    and freeze what that made too, so collections in the children do not copy its pages. A process that
    runs its tasks itself (the runner) never pays for it.
    """
    from .rehearsal import rehearse

    try:
        rehearse(config.settings(), config.quality().thresholds())
    except Exception as exc:  # a setting the real tasks will fail on, each with its own clear error
        LOG.debug("the rehearsal of a date's work failed: %s", exc, exc_info=True)
    gc.freeze()
