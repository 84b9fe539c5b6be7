"""The operator's path under a real systemd 252: a Debian bookworm container boots, deploy/install.sh installs
this checkout, and the README's commands behave as it says, from `enable --now` to `--uninstall --purge`.

One container serves the whole module (booting and installing take most of a minute); the tests run in
file order, each leaving both units running for the next, and the last one uninstalls. The container
shares the host's network: /metrics and luigid listen on ports free on the host, set in the container's
/etc/irisflow config as an operator would. Run alone with `pytest -m systemd_boot`.
"""
import datetime as dt
import json
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import IRIS_CSV, REPO, free_port, history_page, poll, scrape, scraped_runs
from container import Container

pytestmark = [pytest.mark.slow, pytest.mark.systemd_boot]

CHECKOUT = "/root/irisflow"  # where the checkout is copied inside the container
INSTALL = f"{CHECKOUT}/deploy/install.sh"
CLI = "/opt/irisflow/bin/irisflow"
BACKFILL = "2026-01-01..2026-01-02"
BAD_BACKFILL = "2026-01-03..2026-01-04"  # 2026-01-04 has a bad input
LONG_BACKFILL = "2025-01-01..2025-01-31"


def days_ago(n):
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=n)).date().isoformat()


def config(metrics_port, luigid_port):
    """/etc/irisflow/luigi.cfg as the operator edits it: inputs, a three-day window on a midnight schedule,
    one model (the units, not the models, are under test), luigid, and the host's free ports."""
    return f"""[iris]
source = /srv/iris/{{date}}.csv
output_root = /var/lib/irisflow/output
models = ["knn"]

[service]
state_dir = /var/lib/irisflow/state
schedule = 0 0 * * *
catchup_days = 3
metrics_address = 127.0.0.1
metrics_port = {metrics_port}

[core]
default_scheduler_host = 127.0.0.1
default_scheduler_port = {luigid_port}
"""


def luigid_port_drop_in(port):
    """luigid's port through a drop-in, as `systemctl edit luigid` makes one."""
    return ("[Service]\nExecStart=\nExecStart=/opt/irisflow/venv/bin/irisflow-luigid --address 127.0.0.1 "
            f"--port {port} --state-path /var/lib/luigid/state.pickle\n")


def write_inputs(root):
    """The day's files under /srv/iris: the window's (yesterday's rejected by validation), the backfills'."""
    incoming = root / "srv/iris"
    incoming.mkdir(parents=True)
    good = IRIS_CSV.read_text()
    bad = good.replace("setosa", "dandelion", 1)
    dates = [days_ago(n) for n in range(4)] + ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    dates += [f"2025-01-{day:02d}" for day in range(1, 32)]
    for date in dates:
        (incoming / f"{date}.csv").write_text(bad if date in (days_ago(1), "2026-01-04") else good)


class Machine(Container):
    """The container with irisflow's units: what the tests ask systemd."""

    def prop(self, unit, name):
        return self.out("systemctl", "show", "-P", name, unit)

    def main_pid(self):
        return int(self.prop("irisflow", "MainPID"))

    def status_text(self):
        return self.prop("irisflow", "StatusText")

    def wait_ready_again(self, old_pid, timeout):
        """The daemon restarted (a new main PID) and is active, i.e. it said READY=1 again."""
        return poll("irisflow restarted and ready", lambda: (self.prop("irisflow", "ActiveState") == "active"
                                                             and self.main_pid() not in (0, old_pid)), timeout)

    def wait_pass(self, timeout=180):
        """The status line once a pass has ended."""
        return poll("the daemon's status after a pass", lambda: self.status_text().startswith("last pass")
                    and self.status_text(), timeout)

    def cursor(self):
        """The journal's position now: `journal(unit, f"--after-cursor={cursor}")` reads only what follows."""
        return self.out("journalctl", "-n", "1", "--show-cursor", "-o", "cat").rsplit("-- cursor: ", 1)[1].strip()

    def journal(self, unit, *options):
        return self.out("journalctl", "--no-pager", "-o", "cat", "-u", unit, *options)

    def processes_of(self, user):
        """Processes of `user` inside the container (their /proc entries belong to the user)."""
        return self.out("find", "/proc", "-mindepth", "1", "-maxdepth", "1", "-regex", "/proc/[0-9]+", "-user", user,
                        check=False).split()


def figure(capsys, name, seconds):
    """Printed as the test runs, whatever pytest captures."""
    with capsys.disabled():
        print(f"\n[systemd boot] {name}: {seconds:.1f} s", end="")


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    """Booted, with the checkout installed, configured and both units enabled and started."""
    box = Machine(tmp_path_factory.mktemp("container"))
    try:
        shutil.copytree(REPO, box.root / CHECKOUT.lstrip("/"), symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "output", "state"))
        for cert in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")):
            shutil.copy(cert, box.root / "usr/local/share/ca-certificates")
        write_inputs(box.root)
        started = time.monotonic()
        box.boot()
        box.boot_seconds = time.monotonic() - started
        box.run("update-ca-certificates")  # pip reaches PyPI through this machine's extra CAs
        started = time.monotonic()
        box.run("sh", INSTALL, timeout=600)
        box.install_seconds = time.monotonic() - started
        box.metrics_port, box.luigid_port = free_port(), free_port()
        (box.root / "etc/irisflow/luigi.cfg").write_text(config(box.metrics_port, box.luigid_port))
        (box.root / "etc/systemd/system/luigid.service.d").mkdir()
        (box.root / "etc/systemd/system/luigid.service.d/port.conf").write_text(luigid_port_drop_in(box.luigid_port))
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "enable", "--now", "luigid")
        started = time.monotonic()
        box.run("systemctl", "enable", "--now", "irisflow")  # Type=notify: returns once READY=1 came
        box.ready_seconds = time.monotonic() - started
        yield box
    finally:
        box.terminate()


def test_enable_now_brings_both_units_up_ready_and_the_start_up_pass_catches_up(machine, capsys):
    figure(capsys, "container booted", machine.boot_seconds)
    figure(capsys, "install.sh (venv from PyPI)", machine.install_seconds)
    figure(capsys, "time to ready (systemctl enable --now irisflow)", machine.ready_seconds)
    assert machine.out("systemctl", "is-active", "irisflow", "luigid").split() == ["active", "active"]
    # READY=1 came with /metrics up: systemctl returned only then.
    assert scrape(machine.metrics_port) is not None
    status = machine.wait_pass()
    assert re.fullmatch(rf"last pass \S+ \d\d:\d\d UTC: 2 built, 1 FAILED \({days_ago(1)} validation\); "
                        rf"next run {days_ago(-1)} 00:00 UTC; 1 of 3 dates missing \({days_ago(1)}\)", status), status
    assert f'Status: "{status}"' in machine.out("systemctl", "status", "--no-pager", "irisflow", check=False)
    samples = scrape(machine.metrics_port)
    assert (scraped_runs(samples, "success"), scraped_runs(samples, "failure")) == (2, 1)


def test_status_as_the_service_user(machine):
    shown = machine.out("runuser", "-u", "irisflow", "--", CLI, "status")
    assert re.search(rf"{days_ago(0)}\s+complete", shown) and re.search(rf"{days_ago(2)}\s+complete", shown), shown
    assert re.search(rf"{days_ago(1)}\s+failed", shown), shown


def test_runs_went_through_luigid_into_its_task_history(machine):
    assert "IrisPipeline" in history_page(machine.luigid_port)  # read through luigid: its history is written
    with sqlite3.connect(machine.root / "var/lib/luigid/task-history.db") as db:
        done = {row[0] for row in db.execute(
            "SELECT p.value FROM tasks t JOIN task_parameters p ON p.task_id = t.id JOIN task_events e "
            "ON e.task_id = t.id WHERE t.name = 'IrisPipeline' AND p.name = 'date' AND e.event_name = 'DONE'")}
    assert {days_ago(0), days_ago(2)} <= done


def test_journal_priorities_separate_warnings_and_errors_from_info(machine):
    warnings = machine.journal("irisflow", "-p", "warning")
    info_only = machine.journal("irisflow", "-p", "info..info")
    assert re.search(rf"ERROR irisflow\.daemon: {days_ago(1)}: FAILED \(validation\)", warnings), warnings
    assert "ERROR: " in warnings  # Luigi's own error, logged in the run process
    assert not re.search(r"^INFO", warnings, re.M), warnings
    assert "INFO irisflow.daemon: irisflow daemon: schedule" in info_only
    assert not re.search(r"^(ERROR|WARNING)", info_only, re.M), info_only
    entries = [json.loads(line) for line in machine.out("journalctl", "--no-pager", "-o", "json", "-u", "irisflow",
                                                        "-g", "FAILED \\(validation\\)").splitlines()]
    assert entries and {entry["PRIORITY"] for entry in entries} == {"3"}


def test_the_live_security_rating_is_ok(machine):
    for unit in ("irisflow.service", "luigid.service", f"irisflow-backfill@{BACKFILL}.service"):
        rated = machine.run("systemd-analyze", "security", "--no-pager", unit).stdout
        level = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", rated)
        assert level and float(level.group(1)) <= 2.0 and level.group(2) == "OK", f"{unit}: {rated[-500:]}"


def test_backfill_units_end_with_their_exit_status_and_log_in_the_journal(machine):
    for dates, result, status in ((BACKFILL, "success", "0"), (BAD_BACKFILL, "exit-code", "1")):
        unit = f"irisflow-backfill@{dates}.service"
        machine.run("systemctl", "start", "--no-block", unit)
        poll(f"{unit} to end", lambda: machine.prop(unit, "ActiveState") in ("inactive", "failed"), 180)
        assert (machine.prop(unit, "Result"), machine.prop(unit, "ExecMainStatus")) == (result, status)
    good, bad = (machine.journal(f"irisflow-backfill@{dates}") for dates in (BACKFILL, BAD_BACKFILL))
    assert "[2/2] 2026-01-02 success" in good, good
    assert "FAILED (validation) in Validate: 2026-01-04" in bad, bad
    machine.run("systemctl", "reset-failed", f"irisflow-backfill@{BAD_BACKFILL}")


def restarted_after(machine, signal, timeout):
    """Seconds from `signal` to the daemon's main process until a new one is ready."""
    old = machine.main_pid()
    started = time.monotonic()
    machine.run("systemctl", "kill", "--kill-who=main", f"--signal={signal}", "irisflow")
    machine.wait_ready_again(old, timeout)
    return time.monotonic() - started


def test_sigkill_is_restarted(machine, capsys):
    figure(capsys, "time to restart after SIGKILL (RestartSec=30s)", restarted_after(machine, "KILL", 90))


def test_a_hung_scheduler_is_restarted_by_the_watchdog(machine, capsys):
    """SIGSTOP stops every thread, the scheduler's loop with them: its watchdog pings stop."""
    figure(capsys, "time to restart after a hang (WatchdogSec=30s, RestartSec=30s)",
           restarted_after(machine, "STOP", 120))
    log = machine.journal("irisflow", "--since=-3min")
    assert "Watchdog timeout" in log and "Fatal Python error: Aborted" in log, log[-3000:]
    assert 'File "' in log  # faulthandler's stacks of the hung threads


def test_stop_exits_0_in_time_and_start_is_ready_again(machine, capsys):
    machine.wait_pass()
    started = time.monotonic()
    machine.run("systemctl", "stop", "irisflow")
    figure(capsys, "systemctl stop irisflow (idle)", time.monotonic() - started)
    assert time.monotonic() - started < 30
    assert (machine.prop("irisflow", "Result"), machine.prop("irisflow", "ExecMainStatus")) == ("success", "0")
    machine.run("systemctl", "start", "irisflow")
    assert machine.prop("irisflow", "ActiveState") == "active"


def test_restart_during_a_run_lets_the_run_finish_and_the_date_completes(machine):
    # Stopped first, so no pass of the running daemon builds the date before the one this test restarts.
    machine.run("systemctl", "stop", "irisflow")
    since = f"--after-cursor={machine.cursor()}"
    today = days_ago(0)
    # Today's input 1,000 times over (150,000 rows): after its snapshot, the rest of its rebuild (validation,
    # split, training, summary) lasts seconds, long enough for the restart below to land in it.
    header, *rows = IRIS_CSV.read_text().splitlines(keepends=True)
    (machine.root / f"srv/iris/{today}.csv").write_text(header + "".join(rows * 1000))
    machine.run("rm", "-rf", f"/var/lib/irisflow/output/{today}")
    machine.run("systemctl", "start", "irisflow")  # its start-up pass rebuilds today
    snapshot = machine.root / f"var/lib/irisflow/output/{today}/input.csv"
    poll(f"the rebuild of {today} to have taken its snapshot", snapshot.exists, 60)
    old = machine.main_pid()
    machine.run("systemctl", "restart", "irisflow")  # SIGTERM mid-run: the date is finished, then exit 0
    assert machine.main_pid() != old and machine.prop("irisflow", "ActiveState") == "active"
    assert (machine.root / f"var/lib/irisflow/output/{today}/summary.json").is_file()
    log = machine.journal("irisflow", since)
    assert "did not finish within" not in log and "Failed with result" not in log, log[-3000:]
    # The old daemon had the SIGTERM mid-run, finished the date, then stopped cleanly, before the new one started.
    assert log.count(f"{today}: success") == 1, log[-3000:]
    assert log.index("SIGTERM") < log.index(f"{today}: success") < log.rindex("Deactivated successfully") \
        < log.rindex("Started irisflow"), log[-3000:]


def test_six_restarts_in_a_row_leave_the_unit_running(machine, capsys):
    started = time.monotonic()
    for _ in range(6):
        machine.run("systemctl", "restart", "irisflow")
    figure(capsys, "six systemctl restart irisflow", time.monotonic() - started)
    assert machine.prop("irisflow", "ActiveState") == "active"
    assert machine.run("systemctl", "is-failed", "irisflow", check=False).stdout.strip() == "active"


def test_a_reboot_brings_both_units_back(machine, capsys):
    started = time.monotonic()
    machine.reboot()
    assert machine.out("systemctl", "is-active", "irisflow", "luigid").split() == ["active", "active"]
    figure(capsys, "reboot to irisflow ready", time.monotonic() - started)
    assert "1 of 3 dates missing" in machine.wait_pass()


def test_rerunning_the_installer_updates_the_app_restarts_the_daemon_and_keeps_the_config(machine):
    marker = "# updated by test_systemd_boot\n"
    (machine.root / CHECKOUT.lstrip("/") / "service/__init__.py").open("a").write(marker)
    edited = (machine.root / "etc/irisflow/luigi.cfg").read_text()
    old = machine.main_pid()
    machine.run("sh", INSTALL, timeout=600)
    installed, = (machine.root / "opt/irisflow/venv/lib").glob("python3*/site-packages/service/__init__.py")
    assert installed.read_text().endswith(marker)
    assert machine.main_pid() != old and machine.prop("irisflow", "ActiveState") == "active"
    assert (machine.root / "etc/irisflow/luigi.cfg").read_text() == edited
    assert (machine.root / "etc/irisflow/luigi.cfg.dist").exists()


def test_the_installer_refuses_shared_folders_and_leaves_them_and_the_units_alone(machine):
    """As root under a real systemd: `--prefix /usr/local --uninstall` (the old installer removed
    /usr/local/bin) and `--prefix /` exit 2 before touching anything; the running units stay up."""
    (machine.root / "usr/local/bin/keep-me").write_text("#!/bin/sh\n")
    before = machine.out("ls", "-la", "--time-style=full-iso", "/usr/local", "/usr/local/bin")
    for args in (("--prefix", "/usr/local", "--uninstall"), ("--prefix", "/usr/local/", "--uninstall", "--purge"),
                 ("--prefix", "/"), ("--prefix", "/", "--uninstall")):
        result = machine.run("sh", INSTALL, *args, check=False)
        assert result.returncode == 2 and "folder other software shares" in result.stderr, result.stdout + result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
    assert machine.out("ls", "-la", "--time-style=full-iso", "/usr/local", "/usr/local/bin") == before
    assert (machine.root / "usr/local/bin/keep-me").exists()
    assert machine.out("systemctl", "is-active", "irisflow", "luigid").split() == ["active", "active"]
    assert (machine.root / "opt/irisflow/.irisflow-install-manifest").is_file()


def test_uninstall_during_a_backfill_then_purge_leaves_nothing_behind(machine):
    unit = f"irisflow-backfill@{LONG_BACKFILL}.service"
    machine.run("systemctl", "start", "--no-block", unit)
    poll(f"{unit} to have built a date", lambda: "success" in machine.journal(unit), 120)
    machine.run("sh", INSTALL, "--uninstall")
    listed = machine.out("systemctl", "list-units", "--all", "--plain", "--no-legend", "irisflow*", "luigid*")
    # A unit whose file is gone and that has ended may stay listed as "not-found inactive dead" until
    # systemd collects it: nothing of it is left.
    assert [line for line in listed.splitlines() if line.split()[1:4] != ["not-found", "inactive", "dead"]] == []
    assert machine.processes_of("irisflow") == []
    assert not (machine.root / "opt/irisflow").exists()
    assert (machine.root / "etc/irisflow/luigi.cfg").exists() and (machine.root / "var/lib/irisflow").exists()

    machine.run("sh", INSTALL, "--uninstall", "--purge")
    assert machine.run("getent", "passwd", "irisflow", check=False).returncode == 2
    left = machine.out("find", "/etc", "/opt", "/var/lib", "/usr/local", "(", "-name", "*irisflow*", "-o",
                       "-name", "*luigid*", ")", check=False)
    assert left == "", left
