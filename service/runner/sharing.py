"""How a run's dates are shared out: in chunks, to this process and its helper processes, and, through
a central scheduler, apart from the dates other hosts are building.

`run_chunks` builds chunks in this process and in N-1 spawned helpers, handing the next chunk to
whichever is free; `Chunks` decides what the next chunk is. Through luigid, each host starts at a
random chunk (`from_random_chunk`) and puts off the dates luigid shows in progress
(`dates_in_progress`), so hosts on one range take different dates instead of taking turns on the same.
"""

import contextlib
import datetime as dt
import logging
import math
import multiprocessing
import queue
import random
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import luigi.rpc

from tasks import partition
from tasks.iris import IrisPipeline
from tasks.warmup import one_thread_each

from .. import process
from ..central.client import remote_scheduler
from ..config import checked_settings, scheduler_url
from ..defaults import use_packaged_defaults
from ..secrets import mask_logging
from ..state import Reason
from .outcomes import DateOutcome

LOG = logging.getLogger(__name__)


def from_random_chunk(dates, chunk_size):
    """The dates from a random chunk boundary to the end, then from the start: hosts backfilling one range
    through a central scheduler then start at different places, instead of all asking luigid for the same
    tasks and waiting for each other's (a date's tasks form a chain, so two hosts on one date mostly take
    turns)."""
    offset = random.randrange(0, len(dates), chunk_size) if dates else 0
    return dates[offset:] + dates[:offset]


def dates_in_progress():
    """The dates whose IrisPipeline the central scheduler holds as PENDING or RUNNING: some worker (another
    host, or a helper of this run) is building them now. Empty if it cannot be asked; the build says why."""
    scheduler = remote_scheduler(scheduler_url(), attempts=1)
    dates = set()
    try:
        for status in ("PENDING", "RUNNING"):
            listed = scheduler.task_list(status=status, search=f"{IrisPipeline.get_task_family()}(") or {}
            for task in listed.values() if "num_tasks" not in listed else ():
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    dates.add(partition.parse_date(task["params"]["date"]))
    except (luigi.rpc.RPCError, ValueError) as exc:  # unreachable, or an answer that is not luigid's
        LOG.debug("could not ask the central scheduler which dates are in progress: %s", exc)
    return dates


class Chunks:
    """The dates still to build, handed out a chunk at a time to whichever process is free (thread-safe).

    A chunk holds at most chunk_size dates, so Luigi's scheduler never holds many tasks, and chunks shrink
    as the dates run out (guided self-scheduling), so every process (and, through a central scheduler,
    every host) finishes at about the same moment.
    With `busy` (through a central scheduler: the dates some worker is building now), a date another
    host is building is put back at the end once, so hosts on one range take different dates instead of
    sharing each date's tasks and waiting for each other's; by the time it comes round again it is
    usually complete and skipped.
    """

    def __init__(self, dates, chunk_size, workers, stop=None, busy: Callable[[], set[dt.date]] | None = None):
        self._dates, self._size = deque(dates), chunk_size
        self._stop, self._busy = stop or threading.Event(), busy
        self._put_back: set[dt.date] = set()
        # Through a central scheduler other hosts may be on the same range: the chunks shrink toward its
        # end as if there were one more process, so the hosts finish together too.
        self._sharing = workers + (busy is not None)
        self.abandoned = False  # the chunks in progress are given up too: no helper builds them again
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._dates)

    def count_full(self):
        """How many full chunks the dates still to build make up."""
        return len(self._dates) // self._size

    def take(self):
        """The next chunk, or [] when every date has been handed out or the run is stopping. When every date
        left is busy, they are put back once and handed out all the same: the build waits for them."""
        busy = self._busy() if self._busy is not None and len(self) else set()
        with self._lock:
            if self._stop.is_set():
                self._dates.clear()
            share = math.ceil(len(self._dates) / (2 * self._sharing)) if self._sharing > 1 else self._size
            size, chunk = min(self._size, max(1, share)), []
            while self._dates and len(chunk) < size:  # ends: a date is put back at most once
                date = self._dates.popleft()
                if date in busy and date not in self._put_back:
                    self._put_back.add(date)
                    self._dates.append(date)
                else:
                    chunk.append(date)
            return chunk

    def close(self):
        """Hand out nothing more (the run was interrupted)."""
        with self._lock:
            self._dates.clear()

    def abandon(self):
        """Hand out nothing more, and give up the chunks in progress (a second Ctrl-C)."""
        self.abandoned = True
        self.close()


def run_chunks(chunks, workers, build):
    """Yield each chunk's (outcomes, mails) as it finishes, building in this process and workers - 1 others.

    This process builds too rather than idling while it waits: that saves one process start-up (about
    1.5 s of imports) and one process's memory (about 180 MB). A thread per helper process keeps it fed.
    """
    one_thread_each()  # effective when this process has not loaded BLAS yet, as in a CLI run
    helpers = min(workers, chunks.count_full()) - 1  # a helper is worth its start-up for a full chunk
    if helpers < 1:
        while chunk := chunks.take():
            yield _contained(build, chunk)
        return
    finished = queue.SimpleQueue()
    feeding = helpers  # feeders that have not yet put their (None, None): "nothing more from my helper"
    feeders = [
        threading.Thread(target=_feed_helper, args=(chunks, finished, build), daemon=True) for _ in range(helpers)
    ]
    for feeder in feeders:
        feeder.start()
    try:
        while feeding or len(chunks):
            chunk = chunks.take()
            done = [(chunk, _contained(build, chunk))] if chunk else [finished.get()]
            while not finished.empty():
                done.append(finished.get())
            for chunk, result in done:
                if chunk is None:
                    feeding -= 1
                else:
                    yield result
    except BaseException:  # abandoned (a second Ctrl-C): the helpers end now, their chunks unfinished
        chunks.abandon()
        for helper in multiprocessing.active_children():
            helper.kill()
        raise
    finally:
        chunks.close()
        for feeder in feeders:
            feeder.join()


def _contained(build, chunk):
    """Build a chunk in this process; an exception fails that chunk's dates, never the whole run."""
    try:
        return build(chunk)
    except Exception as exc:
        LOG.debug("building %s failed", chunk, exc_info=True)
        return _chunk_failed(chunk, f"{type(exc).__name__}: {exc}")


def _chunk_failed(chunk, error):
    return [DateOutcome(d.isoformat(), "failure", reason=Reason.ERROR, error=error) for d in chunk], {
        "sent": 0,
        "failed": 0,
    }


def _feed_helper(chunks, finished, build):
    """Keep one helper process building chunks until none are left (or the run stops); put each
    (chunk, result) in finished, then (None, None).

    Each helper has its own one-process pool, so a helper that dies (killed, out of memory) breaks only
    its own chunk: the pool is rebuilt and the chunk tried once more in the fresh process, where dates
    the dead helper finished are found complete and skipped.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    pool = None
    try:
        while chunk := chunks.take():
            result = None
            for attempt in (1, 2):
                pool = pool or ProcessPoolExecutor(1, mp_context=context, initializer=_helper_started)
                try:
                    result = pool.submit(build, chunk).result()
                    break
                except BrokenProcessPool:
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = None
                    if chunks.abandoned:
                        break
                    LOG.warning(
                        "a helper process died while building %s..%s (attempt %d of 2)", chunk[0], chunk[-1], attempt
                    )
                except Exception as exc:  # the build itself raised in the helper
                    result = _chunk_failed(chunk, f"{type(exc).__name__}: {exc}")
                    break
            finished.put(
                (
                    chunk,
                    result
                    or _chunk_failed(
                        chunk, "the helper process building the date died twice (killed, or out of memory?)"
                    ),
                )
            )
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        finished.put((None, None))


def _helper_started():
    """A helper process: one BLAS thread, the configuration its parent read (checked, its paths resolved,
    once: its chunks do not check it again), and killed by the kernel when the process that started it
    dies. The run decides when it stops: a terminal's Ctrl-C reaches the whole process group, systemd's
    SIGTERM the whole unit, and the helper finishes its chunk unless the run abandons it."""
    one_thread_each()
    use_packaged_defaults()
    checked_settings()
    mask_logging()  # Luigi's worker log names the scheduler URL
    process.ignore_stop_signals()
    if not process.end_with_parent():
        raise SystemExit(1)
