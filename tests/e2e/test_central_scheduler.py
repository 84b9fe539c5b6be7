"""Runs through a real `luigid` on loopback: tasks DONE in its API, task history, de-duplication."""
import contextlib
import datetime as dt
import ipaddress
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import LUIGID, REPO, api, free_port, history_page, luigid_on_a_free_port, poll, start_luigid
from tasks import partition

DAY = "2026-11-24"


def listening_addresses(port):
    """The local addresses of the TCP sockets listening on `port`, from /proc/net/tcp and tcp6 (state 0A)."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, local_port = local.split(":")
                if state == "0A" and int(local_port, 16) == port:
                    # The kernel prints each 32-bit word of the address in host (little-endian) order.
                    raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, len(address), 8))
                    found.add(str(ipaddress.ip_address(raw[:width])))
    return found


def test_luigid_without_address_listens_on_loopback_only(irisflow_config, tmp_path):
    """Luigi's luigid listens on every interface; irisflow-luigid only on 127.0.0.1 unless told otherwise."""
    help_text = subprocess.run([*LUIGID, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "default 127.0.0.1" in " ".join(help_text.split())
    port = free_port()
    server = subprocess.Popen([*LUIGID, "--port", str(port), "--state-path", str(tmp_path / "state.pickle")],
                              env=irisflow_config.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll("luigid to answer on 127.0.0.1", lambda: api(port, "task_list", status="DONE") is not None,
             retry_on=(OSError,))
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
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
    assert "IrisPipeline" in history_page(port)
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
    history_page(port)
    with sqlite3.connect(history) as db:
        runs = db.execute("SELECT t.name, COUNT(*) FROM task_events e JOIN tasks t ON t.id = e.task_id "
                          "WHERE e.event_name = 'RUNNING' GROUP BY t.task_id").fetchall()
    assert runs and all(count == 1 for _, count in runs), runs
    assert sorted(name for name, _ in runs).count("TrainModel") == 5


def test_task_history_is_written_in_one_transaction_per_flush_one_record_per_task(irisflow_config, tmp_path):
    from luigi.scheduler import Task

    from service.central.luigid import BatchedTaskHistory

    database = tmp_path / "history.sqlite"
    irisflow_config.set("task_history", db_connection=f"sqlite:///{database}")
    history = BatchedTaskHistory()
    tasks = [Task(f"Extract_{day}", "PENDING", [], family="Extract", params={"date": day}) for day in ("d1", "d2")]
    for task in tasks:
        history.task_scheduled(task)
        history.task_started(task, "host-a")

    def rows():
        with sqlite3.connect(database) as db:
            return db.execute("SELECT t.task_id, t.host, e.event_name FROM task_events e JOIN tasks t "
                              "ON t.id = e.task_id ORDER BY e.id").fetchall()

    assert rows() == []  # held until the next flush
    history.flush()
    assert rows() == [("Extract_d1", "host-a", "PENDING"), ("Extract_d1", "host-a", "RUNNING"),
                      ("Extract_d2", "host-a", "PENDING"), ("Extract_d2", "host-a", "RUNNING")]
    history.task_finished(tasks[0], True)
    with history._session() as session:  # any read, as a history page's, writes what is held first
        (record,) = [r for r in history.find_all_by_name("Extract", session) if r.task_id == "Extract_d1"][:1]
        assert [event.event_name for event in record.events] == ["DONE", "RUNNING", "PENDING"]
        assert record.parameters["date"].value == "d1"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 2
    # A task recorded in an earlier flush gets the host of its RUNNING event in a later one.
    late = Task("Extract_d3", "PENDING", [], family="Extract", params={"date": "d3"})
    history.task_scheduled(late)
    history.flush()
    history.task_started(late, "host-b")
    history.flush()
    assert rows()[-2:] == [("Extract_d3", "host-b", "PENDING"), ("Extract_d3", "host-b", "RUNNING")]


def test_luigid_stopped_at_once_keeps_the_history_it_held(irisflow_config, tmp_path):
    """SIGTERM within the second after a task's events: they are in the database once luigid has exited."""
    port, database = free_port(), tmp_path / "history.sqlite"
    irisflow_config.set("scheduler", record_task_history="true", state_path=str(tmp_path / "state.pickle"))
    irisflow_config.set("task_history", db_connection=f"sqlite:///{database}")
    with open(tmp_path / "luigid.log", "w") as log:
        server = start_luigid(irisflow_config, port, log=log)
    try:
        api(port, "add_task", worker="w", task_id="Extract_1", status="PENDING", runnable=True, family="Extract")
        assert api(port, "get_work", worker="w", host="host-a")["task_id"] == "Extract_1"
        api(port, "add_task", worker="w", task_id="Extract_1", status="DONE", family="Extract")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode == 0
    with sqlite3.connect(database) as db:
        events = [row[0] for row in db.execute("SELECT event_name FROM task_events ORDER BY id")]
    assert events == ["PENDING", "RUNNING", "DONE"]
    # Its log (the journal, under systemd) tells starting and stopping, not every RPC.
    logged = (tmp_path / "luigid.log").read_text()
    assert "Scheduler starting up" in logged and "shutting down" in logged and "/api/" not in logged


def test_rpcs_share_one_connection_and_survive_a_luigid_restart_without_luigis_retry_wait(irisflow_config, tmp_path):
    from service.central.client import KeepAliveFetcher, remote_scheduler

    irisflow_config.set("scheduler", state_path=str(tmp_path / "state.pickle"))
    port = free_port()
    server = start_luigid(irisflow_config, port)
    try:
        scheduler = remote_scheduler(f"http://127.0.0.1:{port}")
        assert isinstance(scheduler._fetcher, KeepAliveFetcher)
        scheduler.ping(worker="w")
        first = scheduler._fetcher._local.connection.sock
        scheduler.add_task(worker="w", task_id="Extract_1", status="PENDING", runnable=True, family="Extract")
        assert scheduler.get_work(worker="w", host="h")["task_id"] == "Extract_1"
        assert scheduler._fetcher._local.connection.sock is first  # one kept-alive connection
        server.terminate()
        server.wait(timeout=30)
        server = start_luigid(irisflow_config, port)  # the state was saved: the task is still there
        started = time.monotonic()
        scheduler.add_task(worker="w", task_id="Extract_1", status="DONE", family="Extract")
        scheduler.ping(worker="w")
        assert time.monotonic() - started < 2, "waited for Luigi's rpc_retry_wait instead of reconnecting"
        assert "Extract_1" in api(port, "task_list", status="DONE")
    finally:
        server.terminate()
        server.wait(timeout=30)


def _sent_requests(scheduler):
    """Count the HTTP requests `scheduler` sends from now on (its fetcher's calls)."""
    sent, fetch = [], scheduler._fetcher.fetch
    scheduler._fetcher.fetch = lambda url, *args: sent.append(url.rsplit("/", 1)[1]) or fetch(url, *args)
    return sent


def test_reported_task_states_travel_with_the_next_question_in_one_request_and_in_order(irisflow_config):
    from service.central.client import remote_scheduler

    with luigid_on_a_free_port(irisflow_config) as port:
        scheduler = remote_scheduler(f"http://127.0.0.1:{port}")
        sent = _sent_requests(scheduler)
        scheduler.add_worker(worker="w", info={"host": "h"})
        for task_id, deps in (("Extract_1", []), ("Validate_1", ["Extract_1"])):
            scheduler.add_task(worker="w", task_id=task_id, status="PENDING", runnable=True, deps=deps,
                               family=task_id.split("_")[0])
        assert sent == [] and api(port, "task_list", status="PENDING") == {}  # held so far
        assert scheduler.get_work(worker="w", host="h")["task_id"] == "Extract_1"
        scheduler.add_task(worker="w", task_id="Extract_1", status="DONE", family="Extract")
        assert scheduler.get_work(worker="w", host="h")["task_id"] == "Validate_1"  # Extract_1 DONE came first
        assert sent == ["batch_calls", "batch_calls"]
        scheduler.ping(worker="w")
        assert sent[-1] == "ping"  # nothing held: a plain request
        assert list(api(port, "task_list", status="DONE")) == ["Extract_1"]


def test_against_luigis_own_luigid_each_call_goes_alone_after_one_refused_batch(irisflow_config):
    from service.central.client import remote_scheduler

    stock_luigid = [os.path.join(os.path.dirname(sys.executable), "luigid")]
    with luigid_on_a_free_port(irisflow_config, command=stock_luigid) as port:
        scheduler = remote_scheduler(f"http://127.0.0.1:{port}")
        sent = _sent_requests(scheduler)
        started = time.monotonic()
        scheduler.add_task(worker="w", task_id="Extract_1", status="PENDING", runnable=True, family="Extract")
        assert scheduler.get_work(worker="w", host="h")["task_id"] == "Extract_1"
        scheduler.add_task(worker="w", task_id="Extract_1", status="DONE", family="Extract")
        assert time.monotonic() - started < 2, "waited for Luigi's rpc_retry_wait after the refused batch"
        assert sent == ["batch_calls", "add_task", "get_work", "add_task"]  # refused once, then as Luigi sends
        assert list(api(port, "task_list", status="DONE")) == ["Extract_1"]


def test_a_worker_sends_the_states_it_still_holds_when_it_ends(irisflow_config):
    from service.central.client import ReportingWorker, remote_scheduler

    with luigid_on_a_free_port(irisflow_config) as port:
        scheduler = remote_scheduler(f"http://127.0.0.1:{port}")
        with ReportingWorker(scheduler=scheduler, worker_id="w"):
            scheduler.add_task(worker="w", task_id="Extract_1", status="DONE", family="Extract")
            assert api(port, "task_list", status="DONE") == {}
        assert list(api(port, "task_list", status="DONE")) == ["Extract_1"]


def test_a_batch_answers_only_scheduler_rpcs(irisflow_config):
    with luigid_on_a_free_port(irisflow_config) as port:
        for method in ("batch_calls", "no_such_method"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                api(port, "batch_calls", calls=[["ping", {"worker": "w"}], [method, {}]])
            assert refused.value.code == 500


def test_cors_settings_read_once_still_answer_each_origin_as_configured(irisflow_config):
    """irisflow-luigid's RPC handler reads [cors] once, not per request: allowed origins still get their
    header, on answers and on preflights, and others do not."""
    irisflow_config.set("cors", enabled="true", allowed_origins='["http://dashboard.example"]')
    with luigid_on_a_free_port(irisflow_config) as port:
        def allowed(origin, method="GET"):
            query = urllib.parse.urlencode({"data": json.dumps({"worker": "w"})})
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/ping?{query}", method=method,
                                             headers={"Origin": origin})
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers.get("Access-Control-Allow-Origin")

        for _ in range(2):  # the second request is answered from the settings read for the first
            assert allowed("http://dashboard.example") == "http://dashboard.example"
            assert allowed("http://elsewhere.example") is None
        assert allowed("http://dashboard.example", "OPTIONS") == "http://dashboard.example"


def test_an_http_error_from_the_scheduler_is_luigis_rpc_error(irisflow_config):
    import luigi.rpc

    from service.central.client import remote_scheduler

    irisflow_config.set("core", rpc_retry_attempts="1")
    with luigid_on_a_free_port(irisflow_config) as port:
        scheduler = remote_scheduler(f"http://127.0.0.1:{port}/no-such-prefix")
        with pytest.raises(luigi.rpc.RPCError) as raised:
            scheduler.ping(worker="w")
        assert "404" in str(raised.value.sub_exception)


def test_the_dates_other_workers_are_building_are_read_from_luigid_and_none_when_it_is_down(irisflow_config, luigid):
    from service.runner.sharing import dates_in_progress
    from tasks.iris import IrisPipeline

    port, _ = luigid
    day = dt.date(2026, 11, 24)
    api(port, "add_task", worker="another-host", task_id=IrisPipeline(date=day).task_id, status="PENDING",
        runnable=True, family="IrisPipeline", params={"date": day.isoformat(), "rebuild": ""})
    assert dates_in_progress() == {day}
    irisflow_config.set("core", default_scheduler_port=free_port())  # nothing listens there
    started = time.monotonic()
    assert dates_in_progress() == set()
    assert time.monotonic() - started < 2, "waited for Luigi's RPC retries"
