"""Runs through a real `luigid` on loopback: tasks DONE in its API, task history, de-duplication."""
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import REPO, free_port
from tasks import partition

DAY = "2026-11-24"


def api(port, method, **data):
    query = urllib.parse.urlencode({"data": json.dumps(data)})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{method}?{query}", timeout=10) as response:
        return json.loads(response.read())["response"]


@pytest.fixture
def luigid(irisflow_config, tmp_path):
    """A real central scheduler with task history and Prometheus metrics; runs are pointed at it."""
    port, history = free_port(), tmp_path / "history.sqlite"
    irisflow_config.set("scheduler", record_task_history="true", metrics_collector="prometheus",
                        state_path=str(tmp_path / "luigid-state.pickle"))
    irisflow_config.set("task_history", db_connection=f"sqlite:///{history}")
    logdir = tmp_path / "luigid-logs"
    logdir.mkdir()  # luigid crashes if its --logdir does not exist
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "luigid"), "--address", "127.0.0.1",
                               "--port", str(port), "--logdir", str(logdir)],
                              env=irisflow_config.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            api(port, "task_list", status="DONE")
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "luigid did not start"
            time.sleep(0.1)
    irisflow_config.set("core", default_scheduler_host="127.0.0.1", default_scheduler_port=port)
    yield port, history
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_a_date_runs_through_luigid_with_history_and_metrics(irisflow_config, luigid, cli):
    port, history = luigid
    result = cli("run", "--date", DAY)
    assert result.returncode == 0, result.stderr
    done = api(port, "task_list", status="DONE")
    families = sorted(task["name"] for task in done.values())
    assert families.count("TrainModel") == 5
    assert {"Extract", "Validate", "Split", "IrisPipeline"} <= set(families)
    assert all(task["params"]["date"] == DAY for task in done.values() if "date" in task["params"])
    with sqlite3.connect(history) as db:
        names = [row[0] for row in db.execute("SELECT name FROM tasks")]
        events = db.execute("SELECT COUNT(*) FROM task_events WHERE event_name = 'DONE'").fetchone()[0]
    assert "IrisPipeline" in names and events >= 9
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        exported = response.read().decode()
    assert 'luigi_task_done_total{family="TrainModel"} 5.0' in exported


@pytest.mark.slow
def test_two_workers_asking_for_the_same_date_do_the_work_once(irisflow_config, luigid):
    """Two stock Luigi workers (no irisflow lock) share one scheduler: each task runs exactly once."""
    port, history = luigid
    command = [os.path.join(os.path.dirname(sys.executable), "luigi"), "--module", "tasks.iris",
               "IrisPipeline", "--date", DAY, "--worker-wait-interval", "0.2"]
    workers = [subprocess.Popen(command, cwd=REPO, env=irisflow_config.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        worker.wait(timeout=300)
    assert partition.is_complete(irisflow_config.output_root, dt.date(2026, 11, 24))
    with sqlite3.connect(history) as db:
        runs = db.execute("SELECT t.name, COUNT(*) FROM task_events e JOIN tasks t ON t.id = e.task_id "
                          "WHERE e.event_name = 'RUNNING' GROUP BY t.task_id").fetchall()
    assert runs and all(count == 1 for _, count in runs), runs
    assert sorted(name for name, _ in runs).count("TrainModel") == 5
