"""Figures 13 and 14: the output root on object storage (issue #23), on a real S3 server on this machine.

13. a cold backfill (`--workers 2`) with `output_root = s3://bucket/prefix` against the same on the local
    disk, in turns;
14. the same backfill again with every date complete on the store, as a whole process; 14b: `status` of
    those dates.

The server is SeaweedFS (bench/seaweedfs.py, as in the tests), started for these figures only and killed
after them. It runs on the same two cores as the backfill, so its own CPU time is printed beside each
figure: against a store on another machine the backfill would have those cycles to itself. What each
command asked of the store, per date and by kind, comes from the server's own metrics, so the measured
processes run unchanged.
"""

import os
import shutil
import statistics
import tempfile

from .figures import START, Figure, run_backfill
from .harness import BenchError, Workspace, alternate, median_ratio, median_seconds, process_cpu_seconds
from .seaweedfs import DidNotStart, SeaweedFS


class Store:
    """The running server, a bucket on it, and what a command did to it: requests by kind and the server's
    CPU time, taken around each command."""

    def __init__(self, tmp):
        self.server = SeaweedFS(tempfile.mkdtemp(prefix="seaweedfs-", dir=tmp))
        try:
            self.server.start()
        except DidNotStart as failure:
            raise BenchError(str(failure)) from None
        self.bucket = self.server.bucket("bench")
        self.runs = 0

    def workspace(self, tmp, name):
        """A workspace whose output root is a prefix of its own in the bucket (a cold store for a backfill)."""
        self.runs += 1
        return Workspace(
            tmp,
            name,
            iris={"output_root": f"s3://{self.bucket}/{name}-{self.runs}"},
            sections={"s3": self.server.s3_section()},
            env=self.server.environment(),
        )

    def measure(self, command):
        """command() (a Measured), with .requests ({kind: (count, server seconds)}) and .server_cpu added."""
        requests, cpu = self.server.requests(), process_cpu_seconds(self.server.process.pid)
        measured = command()
        after = self.server.requests()
        measured.requests = {
            kind: (count - requests.get(kind, (0, 0.0))[0], seconds - requests.get(kind, (0, 0.0))[1])
            for kind, (count, seconds) in after.items()
            if count > requests.get(kind, (0, 0))[0]
        }
        measured.server_cpu = process_cpu_seconds(self.server.process.pid) - cpu
        return measured

    def close(self):
        self.server.stop()
        shutil.rmtree(self.server.root, ignore_errors=True)


def _requests_line(runs, dates):
    """'S3 requests a date: PUT 28 (2.1 ms each), GET 33 (…), …' over the runs' medians."""
    medians = {
        kind: [statistics.median(run.requests.get(kind, (0, 0.0))[i] for run in runs) for i in (0, 1)]
        for kind in {kind for run in runs for kind in run.requests}
    }
    parts = [
        f"{kind} {count / dates:.1f} ({seconds / count * 1000:.1f} ms each)"
        for kind, (count, seconds) in sorted(medians.items(), key=lambda item: -item[1][0])
        if count
    ]
    server = statistics.median(sum(s for _, s in run.requests.values()) for run in runs)
    return (
        f"S3 requests a date, by the server's count: {', '.join(parts)}; the server's time answering them "
        f"{server:.2f} s in all, its CPU time {statistics.median(run.server_cpu for run in runs):.2f} s"
    )


def _all_complete(workspace, plan):
    """`status` of the dates on the store, measured; BenchError unless every one is complete (what the
    backfill on the store wrote is whole, as the contract reads it)."""
    measured = workspace.run("-m", "service", "status", "--start", str(START), "--end", str(plan.end(plan.dates)))
    if f"dates: {plan.dates} complete" not in measured.stdout:
        raise BenchError(f"the store's dates are not all complete after the backfill:\n{measured.stdout[-2000:]}")
    return measured


def backfill_cold(plan, tmp, store):
    """Figure 13: a cold backfill with the output root on the store against the same on local disk.

    Returns (the figure, the last store workspace, holding complete dates)."""
    kept = []

    def on_disk(_):
        workspace = Workspace(tmp, "disk")
        measured = run_backfill(workspace, plan, plan.dates, plan.workers)
        shutil.rmtree(workspace.path)
        return measured

    def on_store(_):
        workspace = store.workspace(tmp, "cold")
        measured = store.measure(lambda: run_backfill(workspace, plan, plan.dates, plan.workers))
        for earlier in kept:
            shutil.rmtree(earlier.path)  # its local state; the objects stay in the bucket until the server goes
        kept[:] = [workspace]
        return measured

    stores, disks = alternate(plan.repeats, on_store, on_disk)
    complete = kept[0]
    _all_complete(complete, plan)
    ratio = median_ratio(stores, disks)
    busy = statistics.median(s.cpu_seconds / s.seconds for s in stores)
    return (
        Figure(
            "13",
            f"backfill, cold, on object storage ({plan.dates} dates, default models, --workers {plan.workers}, "
            "output root on a local SeaweedFS)",
            f"{median_seconds(stores):.1f} s = {ratio:.2f}x the same on local disk ({median_seconds(disks):.1f} s)",
            "<= 1.5x",
            ratio <= 1.5,
            (
                f"CPU time of the backfill {median_ratio(stores, disks, 'cpu_seconds'):.2f}x the one on disk; "
                f"{busy:.2f} of {os.cpu_count()} cores busy on average; every date complete on the store after it",
                _requests_line(stores, plan.dates),
            ),
        ),
        complete,
    )


def nothing_to_do(plan, store, workspace):
    """Figure 14: the backfill again with every date complete on the store, as a whole process; 14b: `status`
    of those dates."""
    repeats = max(plan.repeats, 3)
    end = str(plan.end(plan.dates))
    noops, statuses = alternate(
        repeats,
        lambda _: store.measure(lambda: run_backfill(workspace, plan, plan.dates)),
        lambda _: store.measure(lambda: _all_complete(workspace, plan)),
    )
    seconds, status_seconds = median_seconds(noops), median_seconds(statuses)
    return [
        Figure(
            "14",
            f"backfill, nothing to do, on object storage ({plan.dates} dates complete on the store, whole process)",
            f"{seconds:.2f} s ({seconds / plan.dates * 1000:.1f} ms/date); "
            f"CPU time {statistics.median(n.cpu_seconds for n in noops):.2f} s",
            "<= 3 s",
            seconds <= 3,
            (_requests_line(noops, plan.dates),),
        ),
        Figure(
            "14b",
            f"status of those dates on object storage (python -m service status --start … --end {end})",
            f"{status_seconds:.2f} s ({status_seconds / plan.dates * 1000:.1f} ms/date)",
            notes=(_requests_line(statuses, plan.dates),),
        ),
    ]


def figures(plan, tmp):
    """Figures 13, 14 and 14b, measured with one server that runs only meanwhile."""
    store = Store(tmp)
    try:
        cold, complete = backfill_cold(plan, tmp, store)
        return [cold, *nothing_to_do(plan, store, complete)]
    finally:
        store.close()
