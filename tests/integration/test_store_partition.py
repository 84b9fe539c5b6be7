"""The partition contract's own concurrency on object storage, against a real SeaweedFS: the leases that
stand in for flock (taken with a conditional PUT, renewed, expiring by the store's clock), and forced
rebuilds promoted through the summary while readers look."""
import collections
import contextlib
import json
import threading
import time
import uuid

import pytest

from conftest import PartitionFiles, poll
from service.runner import run_dates
from tasks import partition
from tasks.partition import leases, objects

DAY = partition.parse_date("2026-11-24")
TASK = "TrainModel-0123456789.json"  # a task's lease is named by its receipt


@pytest.fixture
def root(store_config):
    return store_config.output_root


def _race(contenders):
    """Every contender's try_acquire() at the same moment, each in its thread: their answers in order."""
    start, answers = threading.Barrier(len(contenders)), [None] * len(contenders)

    def attempt(index):
        start.wait()
        answers[index] = contenders[index].try_acquire()

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(len(contenders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def _lease_ages(root):
    """{lease object's name: its age in seconds by the store's clock}, from one LIST."""
    return {name: age for name, (_, age) in objects.sizes_and_ages(root / partition.LOCKS / DAY.isoformat()).items()}


def test_exactly_one_of_many_threads_takes_a_lease_and_again_once_it_is_let_go(root):
    for round_ in range(3):  # the first lease is one conditional PUT; later ones a LIST and a PUT
        contenders = [leases.TaskLease(root, DAY, TASK) for _ in range(8)]
        answers = _race(contenders)
        assert answers.count(True) == 1, (round_, answers)
        holder = contenders[answers.index(True)]
        assert not leases.TaskLease(root, DAY, TASK).try_acquire()
        assert partition.in_progress(root, DAY)
        holder.release()
        assert not partition.in_progress(root, DAY)


def test_a_date_lease_and_a_task_lease_of_the_date_exclude_each_other(root):
    date = leases.TaskLease(root, DAY, leases.DATE)
    assert date.try_acquire()
    assert not leases.TaskLease(root, DAY, TASK).try_acquire()
    assert leases.TaskLease(root, DAY.replace(day=25), TASK).try_acquire()  # another date's task is free
    date.release()
    task = leases.TaskLease(root, DAY, TASK)
    assert task.try_acquire()
    assert not leases.TaskLease(root, DAY, leases.DATE).try_acquire()
    assert leases.TaskLease(root, DAY, "Split-0123456789.json").try_acquire()  # tasks only exclude the date
    task.release()

    for round_ in range(5):  # racing: never a date holder beside a task holder (both may lose and retry)
        contenders = [leases.TaskLease(root, DAY, name) for name in (leases.DATE, TASK, leases.DATE, "Drift-1.json")]
        answers = _race(contenders)
        kinds = {contender.task == leases.DATE for contender, won in zip(contenders, answers) if won}
        assert len(kinds) <= 1 and answers[::2].count(True) <= 1, (round_, answers)
        for contender, won in zip(contenders, answers):
            if won:
                contender.release()



def test_promotions_of_a_date_take_turns_and_neither_wait_for_nor_hold_off_its_builds(root):
    build = leases.TaskLease(root, DAY, leases.DATE)
    assert build.try_acquire()
    promotion = leases.TaskLease(root, DAY, leases.PROMOTION)
    assert promotion.try_acquire()  # a build holds its date's lease to its end, maybe waiting on others
    assert not leases.TaskLease(root, DAY, leases.PROMOTION).try_acquire()
    build.release()
    assert leases.TaskLease(root, DAY, leases.DATE).try_acquire()
    promotion.release()

def test_an_expired_lease_is_taken_over_and_its_stalled_holder_cannot_seal(root):
    seconds = 3.0
    stalled = leases.TaskLease(root, DAY, TASK, seconds)
    assert stalled.try_acquire()  # no heartbeat: its holder stalls from now on
    stalled.check()  # just taken: still its own
    successor = leases.TaskLease(root, DAY, TASK, seconds)
    while not successor.try_acquire():
        ages = _lease_ages(root)
        assert ages[stalled.key.name] < seconds + 1, ages  # not taken over before it expired ...
        time.sleep(0.1)
    assert _lease_ages(root)[stalled.key.name] >= seconds  # ... and taken over once it had
    assert successor.number == stalled.number + 1
    with pytest.raises(partition.LeaseLost, match="lease_seconds = 3"):
        stalled.check()
    successor.check()
    successor.release()


def test_a_holder_that_renews_its_lease_keeps_it(root):
    seconds = 3.0
    holder = leases.TaskLease(root, DAY, TASK, seconds).acquire()  # with its heartbeat
    try:
        rival = leases.TaskLease(root, DAY, TASK, seconds)
        deadline = time.monotonic() + seconds + 2  # longer than an unrenewed lease lasts (stamps are whole seconds)
        while time.monotonic() < deadline:
            assert not rival.try_acquire()
            time.sleep(0.1)
        holder.renewed -= seconds  # as if it had stalled: check() asks the store, which still shows it
        holder.check()
    finally:
        holder.release()
    assert rival.try_acquire()
    rival.release()


@contextlib.contextmanager
def _reading(root):
    """A thread asking `partition.inspect` about DAY over and over for the block: {state: times seen}, and
    the problems of each answer that was not "complete"."""
    seen, problems, stop = collections.Counter(), [], threading.Event()

    def read():
        while not stop.is_set():
            found = partition.inspect(root, DAY)
            seen[found.state] += 1
            if found.state != "complete":
                problems.append(found.problems)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        yield seen, problems
    finally:
        stop.set()
        reader.join()


def test_readers_see_the_old_or_the_new_complete_partition_throughout_forced_rebuilds(store_config):
    root = store_config.output_root
    store_config.set("iris", models='["knn"]')
    assert [o.status for o in run_dates([DAY]).outcomes] == ["success"]
    for models in (["decision_tree"], ["knn", "decision_tree"], ["knn"]):
        store_config.set("iris", models=json.dumps(models))  # not while a reader runs: it reloads [s3] too
        with _reading(root) as (seen, problems):
            assert [o.status for o in run_dates([DAY], force=True).outcomes] == ["success"]
        assert set(seen) == {"complete"} and seen["complete"] > 10, (models, seen, problems[:3])
        summary = partition.read_summary(root, DAY)
        assert sorted(summary["models"]) == sorted(models)
        _sealed_alone(root, summary)
        assert partition.is_complete(root, DAY, verify=True)
        assert partition.durable.files_in(root / partition.STAGING) == {}



def _staged(store_config, *models):
    """DAY built with knn, then one forced rebuild per list of models built under its staging root and not
    promoted, as a forced run leaves it just before the promotion: their tokens."""
    import luigi

    from tasks.iris import IrisPipeline

    store_config.set("iris", models='["knn"]')
    assert [o.status for o in run_dates([DAY]).outcomes] == ["success"]
    tokens = []
    for chosen in models:
        store_config.set("iris", models=json.dumps(chosen))
        tokens.append(uuid.uuid4().hex[:12])
        assert luigi.build([IrisPipeline(date=DAY, rebuild=tokens[-1])], local_scheduler=True, log_level="WARNING")
    return tokens


def _sealed_alone(root, summary):
    """The partition holds its summary and exactly the files the summary lists."""
    assert PartitionFiles(root, DAY).names() == sorted([*summary["manifest"], partition.SUMMARY])


def test_two_promotions_of_a_date_at_once_happen_one_after_the_other(store_config, monkeypatch):
    """Two forced rebuilds of one date that end together (two hosts, two operators) promote one after the
    other, as the exclusive partition lock orders two swaps on a disk. Interleaved, the first to finish
    sealed files the other had just deleted, and readers saw the date incomplete."""
    root = store_config.output_root
    tokens = _staged(store_config, ["knn", "decision_tree"], ["decision_tree"])  # the second has no knn files
    copying, copy, copied = threading.Event(), objects.copy, []

    def slow_copy(source, destination):  # a slow store: the first promotion has copied its knn files, and
        copy(source, destination)        # copies on, when the second starts
        copied.append(destination)
        if len(copied) == 12:
            copying.set()
        time.sleep(0.05)

    monkeypatch.setattr(objects, "copy", slow_copy)
    with _reading(root) as (seen, problems):
        first = threading.Thread(target=partition.promote, args=(root, DAY, tokens[0]))
        first.start()
        assert copying.wait(timeout=60)
        partition.promote(root, DAY, tokens[1])
        first.join()
    assert set(seen) == {"complete"}, (seen, problems[:3])
    summary = partition.read_summary(root, DAY)
    assert list(summary["models"]) == ["decision_tree"] and "generation" not in summary
    _sealed_alone(root, summary)
    assert partition.is_complete(root, DAY, verify=True)


class Killed(Exception):
    """The promoting process dies here."""


@pytest.mark.parametrize(("request_", "nth"), [("remove", 1), ("copy", 6)],
                         ids=["after the summary naming the generation", "midway through the copies"])
def test_a_promotion_cut_short_reads_complete_and_the_next_run_finishes_it(store_config, monkeypatch, request_,
                                                                            nth):
    """A forced run killed while it promotes leaves the live summary naming its generation, the old files
    partly deleted or the new ones partly copied in, and a staging marker that nobody renews. Here the
    promotion stops before its nth request of the kind, as a kill would stop it (but that its lease is let
    go rather than left to expire)."""
    root = store_config.output_root
    store_config.set("iris", lease_seconds=3)
    [token] = _staged(store_config, ["knn", "decision_tree"])
    marker = partition.staging_root(root, DAY, token).with_name(f"{DAY}-{token}.lock")
    leases.Marker(marker).renew()  # as the forced run's heartbeat last left it
    made, real = [], getattr(objects, request_)

    def dies(*args):
        made.append(args)
        if len(made) == nth:
            raise Killed
        real(*args)

    monkeypatch.setattr(objects, request_, dies)
    with pytest.raises(Killed):
        partition.promote(root, DAY, token, 3)
    monkeypatch.setattr(objects, request_, real)

    # The live summary names the staged rebuild, whose files readers read until the promotion is done.
    assert partition.read_summary(root, DAY)["generation"] == f"{partition.STAGING}/{DAY}-{token}"
    found = partition.inspect(root, DAY, verify=True)
    assert found.state == "complete" and sorted(found.summary["models"]) == ["decision_tree", "knn"]

    # While the rebuild's marker is younger than lease_seconds its builder may be at work: a run leaves it.
    assert [o.status for o in run_dates([DAY]).outcomes] == ["skipped"]
    assert "generation" in partition.read_summary(root, DAY)

    poll("the dead rebuild's marker to expire",
         lambda: objects.sizes_and_ages(marker.parent)[marker.name][1] >= 3, timeout=30)
    assert [o.status for o in run_dates([DAY]).outcomes] == ["skipped"]
    summary = partition.read_summary(root, DAY)
    assert "generation" not in summary and sorted(summary["models"]) == ["decision_tree", "knn"]
    _sealed_alone(root, summary)
    assert partition.is_complete(root, DAY, verify=True)
    assert partition.durable.files_in(root / partition.STAGING) == {}
