"""What `serve` tells systemd, read from a real AF_UNIX datagram socket named in NOTIFY_SOCKET, and the
priorities its log lines carry when stderr is a journal stream. tests/test_systemd_boot.py checks the same
under a real systemd."""
import datetime as dt
import fcntl
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import REPO, SERVE, free_port, scrape, write_input
from service import journal
from service.daemon.systemd_notify import watchdog_interval


class NotifySocket:
    """The socket systemd would listen on: each datagram one message of `KEY=value` lines."""

    def __init__(self, path):
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))

    def receive(self, timeout=60.0):
        self.socket.settimeout(timeout)
        return dict(line.split("=", 1) for line in self.socket.recv(4096).decode().split("\n"))

    def receive_until(self, what, condition, timeout=60.0):
        """Messages until one satisfies `condition`; all of them, in order."""
        deadline, seen = time.monotonic() + timeout, []
        while True:
            try:
                seen.append(self.receive(max(deadline - time.monotonic(), 0.01)))
            except TimeoutError:
                pytest.fail(f"no {what} within {timeout} s; received {seen}")
            if condition(seen[-1]):
                return seen


def start(config, tmp_path, **env):
    with open(tmp_path / "daemon.err", "w") as err:
        return subprocess.Popen(SERVE, cwd=REPO, env=config.env(**env), stdout=subprocess.DEVNULL, stderr=err)


def lock_is_held(path):
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def daily_job_stored(jobs):
    with sqlite3.connect(jobs) as db:
        return db.execute("SELECT id FROM apscheduler_jobs").fetchall() == [("daily",)]


@pytest.mark.slow
def test_ready_once_up_then_status_watchdog_pings_and_stopping(irisflow_config, tmp_path):
    port = free_port()
    irisflow_config.set("service", metrics_port=port, catchup_days=1)
    notify = NotifySocket(tmp_path / "notify")
    daemon = start(irisflow_config, tmp_path, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    try:
        ready = notify.receive()
        # The first message, and only once the lock, /metrics and the job store are up.
        assert ready["READY"] == "1", ready
        assert lock_is_held(irisflow_config.state_dir / "daemon.lock")
        assert scrape(port) is not None
        assert daily_job_stored(irisflow_config.state_dir / "jobs.sqlite")
        date = r"\d{4}-\d\d-\d\d"
        assert re.fullmatch(rf"no pass yet; next run {date} 02:00 UTC; 1 of 1 dates missing \({date}\)", ready["STATUS"])

        seen = notify.receive_until("status after the start-up pass", lambda m: "last pass" in m.get("STATUS", ""))
        statuses = [m["STATUS"] for m in seen if "STATUS" in m]
        assert re.fullmatch(r"running \d{4}-\d\d-\d\d since \d\d:\d\d:\d\d UTC", statuses[0]), statuses
        assert re.fullmatch(r"last pass \S+ \d\d:\d\d UTC: 1 built; next run .*; 0 of 1 dates missing", statuses[-1])
        # Pinged every WATCHDOG_USEC/2 (0.5 s), from its own thread, while the pass ran and after.
        pings = notify.receive_until("three more watchdog pings", lambda m, n=iter(range(3)): "WATCHDOG" in m
                                     and next(n) == 2, timeout=10)
        assert all(m == {"WATCHDOG": "1"} for m in pings)

        daemon.send_signal(signal.SIGTERM)
        stopping = notify.receive_until("STOPPING=1", lambda m: "STOPPING" in m)[-1]
        assert stopping["STATUS"].startswith("stopping (SIGTERM: no new runs"), stopping
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert "Running job \"Notifier.alive" not in (tmp_path / "daemon.err").read_text()  # pings are not logged


@pytest.mark.slow
def test_log_lines_carry_their_priority_when_stderr_is_the_journal(irisflow_config, tmp_path):
    """JOURNAL_STREAM names the device and inode of stderr (here a file): every line, Luigi's from the run
    process and a traceback's included, starts with its syslog priority."""
    today = dt.datetime.now(dt.timezone.utc).date()
    for date in (today - dt.timedelta(days=1), today):  # the window's date, whichever side of 02:00 it is
        write_input(tmp_path / "incoming", date, bad=True)
    irisflow_config.set("iris", source=str(tmp_path / "incoming" / "{date}.csv"), models='["knn"]')
    irisflow_config.set("service", metrics_port=free_port(), catchup_days=1)
    err = tmp_path / "daemon.err"
    err.touch()
    stat = err.stat()
    daemon = start(irisflow_config, tmp_path, JOURNAL_STREAM=f"{stat.st_dev}:{stat.st_ino}")
    try:
        deadline = time.monotonic() + 120
        while "FAILED (validation)" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    lines = err.read_text().splitlines()
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), lines
    assert any(line.startswith("<6>INFO irisflow.daemon: irisflow daemon: schedule") for line in lines), lines
    assert any(re.match(r"<3>ERROR irisflow\.daemon: \S+: FAILED \(validation\)", line) for line in lines), lines
    assert any(line.startswith("<3>ERROR: ") for line in lines), lines  # Luigi's, in the run process


def test_plain_lines_where_stderr_is_not_the_journal(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert not journal.is_journal(sys.stderr)
    monkeypatch.delenv("JOURNAL_STREAM")
    assert type(journal.stderr_handler("%(message)s").formatter) is journal.logging.Formatter


@pytest.mark.parametrize(("level", "priority"), [(50, 2), (40, 3), (30, 4), (25, 6), (20, 6), (10, 7), (5, 7)])
def test_levels_map_to_syslog_priorities(level, priority):
    assert journal.priority(level) == priority


def test_every_line_of_a_record_carries_the_priority():
    record = journal.logging.LogRecord("x", 40, __file__, 1, "first\nsecond", None, None)
    assert journal.JournalFormatter("%(levelname)s %(message)s").format(record) == "<3>ERROR first\n<3>second"


@pytest.mark.parametrize(("environ", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, dt.timedelta(seconds=15)),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, dt.timedelta(seconds=15)),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_the_timeout_systemd_set_for_this_process(environ, expected):
    assert watchdog_interval(environ, 4242) == expected
