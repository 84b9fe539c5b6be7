"""How the runner hands dates out: every date once, in order, in chunks no larger than chunk_size that
shrink toward the end when several processes share the work (so they finish together)."""
import datetime as dt
import threading

import pytest

from service.runner import run_dates
from service.runner.sharing import Chunks

DATES = [dt.date(2001, 1, 1) + dt.timedelta(days=n) for n in range(365)]


def _all_chunks(chunks):
    taken = []
    while chunk := chunks.take():
        taken.append(chunk)
    return taken


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_every_date_is_handed_out_once_in_order_in_chunks_of_at_most_chunk_size(workers):
    taken = _all_chunks(Chunks(DATES, 20, workers))
    assert [d for chunk in taken for d in chunk] == DATES
    assert max(len(chunk) for chunk in taken) == 20


def test_one_process_gets_plain_chunk_size_slices():
    assert [len(chunk) for chunk in _all_chunks(Chunks(DATES, 20, 1))] == [20] * 18 + [5]


def test_with_several_processes_the_last_chunks_shrink_to_single_dates():
    sizes = [len(chunk) for chunk in _all_chunks(Chunks(DATES, 20, 2))]
    assert sizes[-4:] == [1, 1, 1, 1] and sizes == sorted(sizes, reverse=True)
    assert len(sizes) < 40  # still mostly full chunks: each luigi.build call has a cost


def test_through_a_central_scheduler_one_process_also_ends_on_single_dates():
    """Other hosts may share the range: the last chunks shrink for them as for helper processes."""
    sizes = [len(chunk) for chunk in _all_chunks(Chunks(DATES[:60], 5, 1, busy=set))]
    assert sizes[-4:] == [1, 1, 1, 1] and sizes == sorted(sizes, reverse=True) and sizes[0] == 5


def test_when_every_date_left_is_busy_they_are_still_handed_out():
    """A host killed mid-chunk leaves its dates PENDING in luigid until pruned: they must still be built
    here (waited for), never dropped as if every date had been handed out."""
    chunks = Chunks(DATES[:4], 5, 1, busy=lambda: set(DATES[:4]))
    assert [d for chunk in _all_chunks(chunks) for d in chunk] == DATES[:4]


def test_a_helper_process_is_started_only_for_a_full_chunk_of_work():
    assert Chunks(DATES[:39], 20, 2).count_full() == 1
    assert Chunks(DATES[:40], 20, 2).count_full() == 2


def test_closing_hands_out_nothing_more():
    chunks = Chunks(DATES, 20, 2)
    chunks.take()
    chunks.close()
    assert chunks.take() == [] and len(chunks) == 0


def test_dates_another_worker_is_building_are_put_back_once_and_taken_at_the_end():
    """Through a central scheduler: dates some worker is building now go to the end of the queue, once."""
    chunks = Chunks(DATES[:10], 4, 1, busy=lambda: set(DATES[2:6]))  # another host holds these, all along
    taken = [[date.day for date in chunk] for chunk in _all_chunks(chunks)]
    assert taken == [[1, 2, 7], [8, 9], [10, 3], [4], [5], [6]]


def test_a_date_no_build_reported_on_is_a_failure_unless_the_run_was_stopped(irisflow_config, monkeypatch):
    """The net under take(): should dates ever be lost on the way (chunks running out while dates remain,
    as a bug once made them), the run reports them failed, never leaves them out; only a stopped run
    leaves dates cancelled."""
    monkeypatch.setattr(Chunks, "take", lambda self: [])
    lost = run_dates(DATES[:3]).outcomes
    assert [(o.status, o.error) for o in lost] == [("failure", "the run ended without building the date")] * 3
    stop = threading.Event()
    stop.set()
    assert [o.status for o in run_dates(DATES[:3], stop=stop).outcomes] == ["cancelled"] * 3
