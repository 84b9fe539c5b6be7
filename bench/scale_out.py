"""Figures 8-11: Luigi's own engine against the runner's, and several "hosts" on one luigid.

8. the stock `luigi --module tasks.iris RangeDaily --of IrisPipeline … --workers 2` against
   `python -m service backfill --workers 2` (Luigi's own worker processes against the runner's pool);
9. a backfill through a real luigid (irisflow's, with the shipped luigid.cfg) against the same on the
   local scheduler, and once each through Luigi's own luigid and without task history;
10. two backfill processes with one worker each ("hosts") against one luigid over one range, against
   one such process alone;
11. the runner's helper pool: `backfill --workers 2` against `backfill --workers 1`.
"""

import contextlib
import dataclasses
import datetime as dt
import functools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .figures import Figure
from .harness import (
    REPO,
    BenchError,
    Workspace,
    alternate,
    free_port,
    median_ratio,
    median_seconds,
    process_cpu_seconds,
)

SCALE_OUT_START = dt.date(1900, 1, 1)
# luigid as luigid.service runs it, and Luigi's own (task history written one event at a time).
IRISFLOW_LUIGID = (sys.executable, "-m", "service.central.luigid")
STOCK_LUIGID = (os.path.join(os.path.dirname(sys.executable), "luigid"),)


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Luigid:
    """irisflow's luigid (`service.central.luigid`, as luigid.service runs it) on loopback with the shipped
    deploy/etc/luigid.cfg (task history in its folder)."""

    def __init__(self, tmp, history=True, command=IRISFLOW_LUIGID):
        self.folder = Path(tempfile.mkdtemp(prefix="luigid-", dir=tmp))
        config = self.folder / "luigid.cfg"
        shipped = (REPO / "deploy" / "etc" / "luigid.cfg").read_text()
        config.write_text(
            shipped.replace(
                "sqlite:////var/lib/luigid/task-history.db", f"sqlite:///{self.folder / 'history.db'}"
            ).replace("record_task_history = true", f"record_task_history = {str(history).lower()}")
        )
        (self.folder / "logs").mkdir()
        self.port = free_port()
        self.server = subprocess.Popen(
            [
                *command,
                "--address",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--logdir",
                str(self.folder / "logs"),
                "--state-path",
                str(self.folder / "state.pickle"),
            ],
            env={**os.environ, "LUIGI_CONFIG_PATH": str(config)},
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not _accepts(self.port):
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BenchError("luigid did not start")
            time.sleep(0.1)

    def cpu_seconds(self):
        """CPU time luigid has used so far (user + system)."""
        return process_cpu_seconds(self.server.pid)

    def close(self):
        self.server.terminate()
        self.server.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def luigid(tmp, history=True, command=IRISFLOW_LUIGID):
    server = Luigid(tmp, history, command)
    try:
        yield server
    finally:
        server.close()


def _central(port):
    return {"default_scheduler_host": "127.0.0.1", "default_scheduler_port": port}


def _first(start, plan, i):
    """The first date of repeat i: each repeat builds dates of its own."""
    return start + dt.timedelta(days=i * plan.dates)


def _backfills(tmp, name, first, count, workers, hosts=1, server=None):
    """`hosts` backfills of the `count` dates from `first`, started at once in a fresh workspace (through
    `server`, a Luigid, whose CPU time is then recorded too); the workspace is removed afterwards."""
    workspace = Workspace(tmp, name, core=_central(server.port) if server else None)
    end = first + dt.timedelta(days=count - 1)
    args = ["-m", "service", "backfill", "--start", str(first), "--end", str(end), "--workers", str(workers)]
    measured = workspace.run_together([args] * hosts)
    if server is not None:
        measured.scheduler_cpu = server.cpu_seconds()
    shutil.rmtree(workspace.path)
    return measured


def stock_luigi(plan, tmp, start):
    """Figure 8 (no goal): the stock command over `plan.dates` dates against the runner, both with 2 workers."""

    def stock(i):
        workspace = Workspace(tmp, "stock")
        first = _first(start, plan, i)
        stop = first + dt.timedelta(days=plan.dates)
        measured = workspace.run(
            os.path.join(os.path.dirname(sys.executable), "luigi"),
            "--module",
            "tasks.iris",
            "RangeDaily",
            "--of",
            "IrisPipeline",
            "--start",
            str(first),
            "--stop",
            str(stop),
            "--days-back",
            "100000",
            "--task-limit",
            str(plan.dates),
            "--workers",
            str(plan.workers),
            "--local-scheduler",
            "--log-level",
            "WARNING",
            python=False,
        )
        shutil.rmtree(workspace.path)
        return measured

    def runner(i):
        return _backfills(tmp, "runner", _first(start, plan, i), plan.dates, plan.workers)

    stocks, runners = alternate(plan.repeats, stock, runner)
    ratio = median_ratio(stocks, runners)
    return Figure(
        "8",
        f"stock luigi RangeDaily --of IrisPipeline --workers {plan.workers} ({plan.dates} dates)",
        f"{median_seconds(stocks):.1f} s = {ratio:.2f}x python -m service backfill --workers "
        f"{plan.workers} ({median_seconds(runners):.1f} s)",
        None,
        None,
        (
            "no goal: stock Luigi forks a process per task with --workers > 1 (spotify/luigi#3212), which "
            "costs more than the tasks; run it with one worker, and `irisflow worker` for more processes",
            f"CPU time {median_ratio(stocks, runners, 'cpu_seconds'):.2f}x the runner's (a process forked "
            f"per task, against {plan.workers} long-lived processes), its system (kernel) time "
            f"{median_ratio(stocks, runners, 'system_seconds'):.2f}x (forks, exits, page faults); page faults "
            f"{statistics.median(m.page_faults for m in stocks) / plan.dates:,.0f} a date against "
            f"{statistics.median(m.page_faults for m in runners) / plan.dates:,.0f} (each fork's pages are "
            f"copied as the parent and the task write to them)",
        ),
    )


def through_luigid(plan, tmp, start):
    """Figure 9: one backfill through luigid against the same on the local scheduler (one worker each,
    so the comparison is of the schedulers alone); the variants: Luigi's own luigid, no task history."""

    def local(i):
        return _backfills(tmp, "local", _first(start, plan, i), plan.dates, 1)

    def central(i, history=True, command=IRISFLOW_LUIGID):
        with luigid(tmp, history, command) as server:
            return _backfills(tmp, "central", _first(start, plan, i), plan.dates, 1, server=server)

    centrals, locals_ = alternate(plan.repeats, central, local)
    # The variants once each, beside a run on the local scheduler: what batching and task history cost.
    stock, local_s = central(plan.repeats, command=STOCK_LUIGID), local(plan.repeats)
    unrecorded, local_h = central(plan.repeats + 1, history=False), local(plan.repeats + 1)
    ratio = median_ratio(centrals, locals_)
    return Figure(
        "9",
        f"backfill through luigid ({plan.dates} dates, --workers 1, shipped luigid.cfg)",
        f"{median_seconds(centrals):.1f} s = {ratio:.2f}x the local scheduler ({median_seconds(locals_):.1f} s)",
        "<= 1.1x",
        ratio <= 1.1,
        (
            f"luigid's own CPU time meanwhile: {statistics.median(c.scheduler_cpu for c in centrals):.1f} s "
            f"(task history on); without task history {unrecorded.seconds / local_h.seconds:.2f}x, luigid "
            f"{unrecorded.scheduler_cpu:.1f} s CPU",
            f"through Luigi's own luigid (task history written an event at a time): "
            f"{stock.seconds / local_s.seconds:.2f}x the local scheduler, luigid {stock.scheduler_cpu:.1f} s CPU",
        ),
    )


def two_hosts(plan, tmp, start):
    """Figure 10: two backfill processes with one worker each against one luigid, over one range, against
    one such process alone (both through luigid)."""

    def one(i):
        with luigid(tmp) as server:
            return _backfills(tmp, "one-host", _first(start, plan, i), plan.dates, 1, server=server)

    def two(i):
        with luigid(tmp) as server:
            return _backfills(tmp, "two-hosts", _first(start, plan, i), plan.dates, 1, hosts=2, server=server)

    twos, ones = alternate(plan.repeats, two, one)
    ratio = median_ratio(twos, ones)
    return Figure(
        "10",
        f"two hosts (two backfills, one worker each, one luigid, one range of {plan.dates} dates)",
        f"{median_seconds(twos):.1f} s = {ratio:.2f}x one such host ({median_seconds(ones):.1f} s)",
        "<= 0.6x",
        ratio <= 0.6,
        (
            f"CPU time of the two {median_ratio(twos, ones, 'cpu_seconds'):.2f}x the one's; luigid's "
            f"{statistics.median(t.scheduler_cpu for t in twos):.1f} s against "
            f"{statistics.median(o.scheduler_cpu for o in ones):.1f} s",
        ),
    )


def helper_pool(plan, tmp, start):
    """Figure 11: what the runner's own helper pool buys: --workers 2 against --workers 1."""

    def run(i, workers):
        return _backfills(tmp, f"pool-{workers}", _first(start, plan, i), plan.dates, workers)

    pools, singles = alternate(plan.repeats, lambda i: run(i, plan.workers), lambda i: run(i, 1))
    ratio = median_ratio(pools, singles)
    return Figure(
        "11",
        f"the runner's helper pool: backfill --workers {plan.workers} ({plan.dates} dates)",
        f"{median_seconds(pools):.1f} s = {ratio:.2f}x --workers 1 ({median_seconds(singles):.1f} s); "
        f"with figure 8, the pool (not Luigi's per-task processes) is what makes the runner fast",
    )


def figures(plan, tmp):
    """The four figures as callables, each on its own dates (far from the other figures')."""
    plan = dataclasses.replace(plan, dates=plan.scale_out_dates)
    return [
        functools.partial(figure, plan, tmp, SCALE_OUT_START + dt.timedelta(days=10000 * number))
        for number, figure in enumerate((stock_luigi, through_luigid, two_hosts, helper_pool))
    ]
