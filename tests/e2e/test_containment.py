"""Failures stay contained: a helper process killed mid-backfill costs only a retry of its own chunk, and a
forced rebuild killed at any moment leaves the date's old or new partition complete, never neither."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, poll
from tasks import partition
from tasks.partition import objects

START, END = "2026-01-01", "2026-01-30"
DAY = partition.parse_date("2026-11-24")
LEASE_SECONDS = 3  # on a store: how long a killed forced run's staging marker outlives it


def _children(pid):
    """{pid: command line} of the direct children of `pid`, from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid:
            found[int(entry)] = command
    return found


def _helper_of(process):
    helpers = [pid for pid, command in _children(process.pid).items() if "spawn_main" in command]
    return helpers[0] if helpers else None


@pytest.mark.slow
def test_a_helper_killed_mid_backfill_fails_nothing_and_only_its_chunk_is_retried(irisflow_config):
    irisflow_config.set("iris", models='["knn", "decision_tree"]')
    irisflow_config.set("service", chunk_size=3)
    backfill = subprocess.Popen([sys.executable, "-m", "service", "backfill", "--start", START, "--end", END,
                                 "--workers", "2"], cwd=REPO, env=irisflow_config.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        helper = poll("the helper process", lambda: _helper_of(backfill), timeout=60)
        poll("the helper's first date", lambda: any(partition.is_complete(irisflow_config.output_root, d)
                                                      for d in partition.date_range(*map(partition.parse_date,
                                                                                        (START, END)))))
        os.kill(helper, signal.SIGKILL)
        out, err = backfill.communicate(timeout=300)
    finally:
        backfill.kill()
    assert backfill.returncode == 0, err
    assert "0 failed" in out and "Traceback" not in err
    retried = [line for line in err.splitlines() if "a helper process died while building" in line]
    assert len(retried) == 1 and "attempt 1 of 2" in retried[0], err
    dates = partition.date_range(partition.parse_date(START), partition.parse_date(END))
    assert all(partition.is_complete(irisflow_config.output_root, d, verify=True) for d in dates)
    assert not list(irisflow_config.output_root.rglob(f"*{partition.TEMPORARY}*"))


@pytest.mark.slow
def test_a_forced_rebuild_killed_at_any_moment_leaves_a_complete_partition(backend_config, cli):
    """On a disk the swap is one exchange of folders; on a store the promotion goes through the summary,
    and a forced run killed in it leaves the live summary naming its generation until the next run, once
    the dead run's staging marker has expired, finishes it."""
    backend_config.set("iris", models='["knn", "random_forest"]', lease_seconds=LEASE_SECONDS,
                       hyperparameters='{"random_forest": {"n_estimators": 200}}')
    root = backend_config.output_root
    assert cli("run", "--date", str(DAY)).returncode == 0
    chance = random.Random(20261124)
    for attempt in range(8):
        forced = subprocess.Popen([sys.executable, "-m", "service", "run", "--date", str(DAY), "--force"],
                                  cwd=REPO, env=backend_config.env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(chance.uniform(0.5, 4.0))
        forced.kill()
        forced.wait(timeout=30)
        found = partition.inspect(root, DAY, verify=True)
        assert found.state == "complete", (attempt, found.problems)
    staging = partition.location(root) / partition.STAGING
    if partition.is_object(staging):  # the killed runs' markers must expire before their staging goes
        poll("the killed forced runs' staging markers to expire", lambda: all(
            age >= LEASE_SECONDS for name, (_, age) in objects.sizes_and_ages(staging).items()
            if name.endswith(".lock")), timeout=30)
    again = cli("run", "--date", str(DAY))
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr
    assert partition.durable.files_in(staging) == {}
    summary = partition.read_summary(root, DAY)
    assert "generation" not in summary
    assert partition.is_complete(root, DAY, verify=True)
