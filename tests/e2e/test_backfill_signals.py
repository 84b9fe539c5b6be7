"""The operator's backfill: the plan (--dry-run, --json, --only), stale dates, progress where it runs, and a
clean stop on Ctrl-C or SIGTERM with real processes (the CLI, its helper processes, a pseudo-terminal)."""
import datetime as dt
import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from conftest import REPO, poll
from tasks import partition


def _group(pgid):
    """The processes of a process group, from /proc (field 5 of /proc/PID/stat)."""
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            members.append(pid)
    return members


def _start_slow_backfill(irisflow_config, days):
    """A real `backfill --workers 2` in its own process group, slow enough per date to be interrupted."""
    irisflow_config.set("iris", models='["random_forest"]', hyperparameters='{"random_forest": {"n_estimators": 300}}')
    process = subprocess.Popen([sys.executable, "-m", "service", "backfill", "--start", str(days[0]),
                                "--end", str(days[-1]), "--workers", "2"], cwd=REPO, env=irisflow_config.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = process.stderr.readline()  # the first date finished: helpers are at work
    assert re.match(r"\[1/\d+\] \S+ success", first), first
    poll("a helper process", lambda: len(_group(process.pid)) >= 2)
    return process


@pytest.mark.slow
def test_ctrl_c_lets_dates_in_progress_finish_and_tells_how_to_resume(irisflow_config):
    days = partition.date_range(dt.date(2026, 1, 1), dt.date(2026, 1, 30))
    process = _start_slow_backfill(irisflow_config, days)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    poll("no process of the backfill left", lambda: not _group(process.pid), timeout=10)
    root = irisflow_config.output_root
    done = [d for d in days if partition.is_complete(root, d)]
    left = [d for d in days if d not in done]
    assert done and left and "Traceback" not in err
    assert not [p for p in root.rglob("*") if "-luigi-tmp-" in p.name]  # dates in progress finished whole
    assert not [d for d in left if partition.partition_dir(root, d).exists()]  # left dates never started
    assert f"{len(done)} ran" in out and f"{len(left)} left (not finished)" in out
    resume = re.search(r"resume with: (.+)", err).group(1)
    assert resume.startswith("python -m service backfill --dates ")
    command = shlex.split(resume)
    again = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=irisflow_config.env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(left)} ran, 0 already complete, 0 failed" in again.stdout
    assert all(partition.is_complete(root, d) for d in days)


@pytest.mark.slow
def test_a_second_sigterm_abandons_dates_in_progress_cleanly(irisflow_config, cli):
    days = partition.date_range(dt.date(2026, 1, 1), dt.date(2026, 1, 30))
    process = _start_slow_backfill(irisflow_config, days)
    process.send_signal(signal.SIGTERM)
    # The second SIGTERM as soon as the first is acknowledged, while the dates then in progress still run
    # (a fixed pause could outlast them).
    before = ""
    while "no new dates start" not in before and (line := process.stderr.readline()):
        before += line
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    err = before + err
    assert process.returncode == 143, err
    assert "abandoned the dates in progress" in err and "Traceback" not in err
    poll("no process of the backfill left", lambda: not _group(process.pid), timeout=10)
    root = irisflow_config.output_root
    for day in days:  # nothing half-written looks complete
        assert partition.is_complete(root, day) or not (partition.partition_dir(root, day) / "summary.json").exists()
    resume = re.search(r"resume with: (.+)", err).group(1)
    again = cli(*shlex.split(resume)[3:])
    assert again.returncode == 0, again.stderr
    assert not [p for p in root.rglob("*") if "-luigi-tmp-" in p.name]  # the next run removed temporaries
    assert all(partition.is_complete(root, d) for d in days)
