"""Faults around the real daemon (`python -m service serve`): SIGKILL mid-run and restart, a backfill of the
date it is running, a mail server that is down and comes back, a central scheduler that is down, and a
corrupt job store or state file. Each costs a message and a count, never the schedule or a date."""
import contextlib
import datetime as dt
import pickle
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import IRIS_CSV, Mailbox, free_port, metric_samples, no_partial_files, poll, scrape_until, stop, task_runs

SLOW_FOREST = {"models": '["random_forest", "knn"]', "hyperparameters": '{"random_forest": {"n_estimators": 3000}}'}


def _today():
    """Today (UTC, the default time zone), after waiting out midnight if it is less than 5 minutes away."""
    now = dt.datetime.now(dt.timezone.utc)
    if (now + dt.timedelta(minutes=5)).date() != now.date():
        time.sleep((dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
                    - now).total_seconds() + 1)
    return dt.datetime.now(dt.timezone.utc).date()


def _children(pid):
    """Process ids whose parent is pid, from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def _alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _count(metrics, name, **labels):
    return metrics.get((name, tuple(sorted(labels.items()))), 0)


def _every_two_seconds(irisflow_config, **service):
    port = free_port()
    irisflow_config.set("service", schedule="*/2 * * * * *", catchup_days=1, metrics_port=port, **service)
    return port


@pytest.mark.slow
def test_a_daemon_killed_mid_run_and_restarted_completes_the_date_once(irisflow_config, start_daemon, tmp_path):
    irisflow_config.set("iris", **SLOW_FOREST)
    port = _every_two_seconds(irisflow_config)
    part = irisflow_config.output_root / _today().isoformat()
    first = start_daemon("first")
    poll("the daemon's run to reach TrainModel", lambda: (part / "split").exists(), timeout=120)
    time.sleep(0.5)
    run_processes = _children(first.pid)
    assert run_processes, "the daemon runs its dates in a child process"
    first.kill()
    first.wait(timeout=30)
    poll("the run process to end with the daemon", lambda: not any(_alive(pid) for pid in run_processes),
         timeout=30)
    assert not (part / "summary.json").exists(), "the run finished before it could be killed"

    second = start_daemon("second")
    scrape_until(port, "the restarted daemon to complete the date",
                 lambda m: _count(m, "irisflow_catchup_missing_dates") == 0, timeout=300)
    written = (part / "summary.json").stat().st_mtime_ns
    time.sleep(5)  # two more ticks find the date complete and leave it alone
    assert (part / "summary.json").stat().st_mtime_ns == written
    assert second.poll() is None and stop(second) == 0
    assert len(list(part.glob("models/random_forest-*"))) == 1
    no_partial_files(irisflow_config.output_root)
    assert not (irisflow_config.output_root / "failed").exists()
    assert "another irisflow daemon" not in (tmp_path / "second.err").read_text()


@pytest.mark.slow
def test_a_backfill_of_the_date_the_daemon_is_running_waits_and_does_no_work_twice(
        irisflow_config, start_daemon, cli):
    irisflow_config.set("iris", **SLOW_FOREST)
    port = _every_two_seconds(irisflow_config)
    today = _today().isoformat()
    part = irisflow_config.output_root / today
    daemon = start_daemon()
    poll("the daemon's run to reach TrainModel", lambda: (part / "split").exists(), timeout=120)

    textfile = irisflow_config.path.parent / "backfill.prom"
    backfill = cli("backfill", "--start", today, "--end", today, "--metrics-textfile", str(textfile))
    assert backfill.returncode == 0, backfill.stderr
    assert "0 failed" in backfill.stdout
    metrics = scrape_until(port, "the daemon's run", lambda m: _count(m, "irisflow_catchup_missing_dates") == 0)
    assert _count(metrics, "irisflow_pipeline_runs_total", outcome="success") == 1
    assert stop(daemon) == 0
    # The two processes may share the date's tasks (each waits for a task the other holds, then finds it
    # done), but together they do each task's work exactly once.
    assert task_runs(metrics, metric_samples(textfile.read_text())) == {
        "Extract": 1, "Validate": 1, "Drift": 1, "Split": 1, "TrainModel": 2, "IrisPipeline": 1}
    assert len(list(part.glob("models/random_forest-*/model.joblib"))) == 1
    no_partial_files(irisflow_config.output_root)


@pytest.mark.slow
def test_a_mail_server_that_is_down_is_logged_and_counted_and_the_next_mail_goes_out_once_it_is_back(
        irisflow_config, start_daemon, tmp_path):
    from aiosmtpd.controller import Controller

    smtp_port = free_port()
    irisflow_config.set("email", receiver="ops@example.com", sender="irisflow@example.com", force_send="false")
    irisflow_config.set("smtp", host="127.0.0.1", port=smtp_port, timeout=5)
    bad_input = tmp_path / f"{_today().isoformat()}.csv"
    bad_input.write_text(IRIS_CSV.read_text().replace("setosa", "dandelion", 1))
    irisflow_config.set("iris", source=tmp_path / "{date}.csv", models='["knn"]')
    port = _every_two_seconds(irisflow_config)
    daemon = start_daemon()
    scrape_until(port, "a failed mail", lambda m: _count(m, "irisflow_email_failures_total") >= 1)
    assert "ERROR irisflow.mail: Not able to connect to smtp server" in (tmp_path / "daemon.err").read_text()
    assert daemon.poll() is None

    box = Mailbox()
    box.port = smtp_port
    controller = Controller(box, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        bad_input.write_text(IRIS_CSV.read_text().replace("virginica", "dandelion", 1))  # new input, still bad
        mail = box.wait_for(1)[0]
        assert "dandelion" in Mailbox.text(mail)
        metrics = scrape_until(port, "the sent mail", lambda m: _count(m, "irisflow_emails_sent_total") >= 1)
        assert _count(metrics, "irisflow_email_failures_total") >= 1
        assert stop(daemon) == 0
    finally:
        controller.stop()


@pytest.mark.slow
def test_a_central_scheduler_that_is_down_is_counted_each_tick_and_used_once_it_is_up(
        irisflow_config, start_daemon, request):
    irisflow_config.set("iris", models='["knn"]')
    irisflow_config.set("core", default_scheduler_host="127.0.0.1", default_scheduler_port=free_port())
    port = _every_two_seconds(irisflow_config)
    daemon = start_daemon()
    metrics = scrape_until(port, "two ticks that found no scheduler",
                           lambda m: _count(m, "irisflow_scheduler_errors_total") >= 2, timeout=120)
    assert _count(metrics, "irisflow_pipeline_runs_total", outcome="success") == 0
    assert daemon.poll() is None, "the daemon exited"

    request.getfixturevalue("luigid")  # a real luigid is up now, and luigi.cfg points at it
    scrape_until(port, "a run through luigid", lambda m: _count(m, "irisflow_catchup_missing_dates") == 0,
                 timeout=120)
    assert stop(daemon) == 0


@pytest.mark.slow
def test_a_corrupt_job_store_stops_serve_with_one_line_and_moving_it_away_restores_the_schedule(
        irisflow_config, start_daemon, tmp_path):
    irisflow_config.set("iris", models='["knn"]')
    port = _every_two_seconds(irisflow_config)
    state = irisflow_config.state_dir
    state.mkdir()
    store = state / "jobs.sqlite"
    store.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    (state / "settled.json").write_text('{"2026-01-01": [1, 2')  # cut off mid-write

    refused = start_daemon("refused")
    assert refused.wait(timeout=60) == 2  # systemd's RestartPreventExitStatus=2: no restart loop
    said = (tmp_path / "refused.err").read_text().strip().splitlines()
    assert said[-1].startswith(f"irisflow: error: luigi.cfg [service] state_dir: the job store {store} cannot be used")
    assert said[-1].endswith("move it away to start afresh") and "Traceback" not in "".join(said)

    store.rename(state / "jobs.sqlite.corrupt")  # the recovery the message names
    daemon = start_daemon()
    metrics = scrape_until(port, "the schedule running from a fresh job store",
                           lambda m: _count(m, "irisflow_catchup_missing_dates") == 0
                           and _count(m, "irisflow_next_run_timestamp_seconds") > 0)
    assert _count(metrics, "irisflow_pipeline_runs_total", outcome="success") == 1
    assert stop(daemon) == 0
    assert f"ignoring unreadable {state / 'settled.json'}" in (tmp_path / "daemon.err").read_text()


@pytest.mark.slow
def test_a_job_from_an_old_version_is_dropped_with_a_message_and_the_daily_job_comes_back(
        irisflow_config, start_daemon, tmp_path):
    irisflow_config.set("iris", models='["knn"]')
    port = _every_two_seconds(irisflow_config)
    first = start_daemon("first")
    scrape_until(port, "the first daemon's schedule", lambda m: _count(m, "irisflow_next_run_timestamp_seconds") > 0)
    assert stop(first) == 0
    store = irisflow_config.state_dir / "jobs.sqlite"
    _rewrite_daily_job(store, lambda state: {**state, "func": "service.scheduler_v0:daily"})  # gone since

    second = start_daemon("second")
    scrape_until(port, "the second daemon's schedule", lambda m: _count(m, "irisflow_next_run_timestamp_seconds") > 0)
    assert stop(second) == 0
    assert "the job store's daily job cannot be restored" in (tmp_path / "second.err").read_text()
    assert _rewrite_daily_job(store, lambda state: state)["func"] == "service.daemon:scheduled_run"


def _rewrite_daily_job(store, change):
    """Apply `change` to the pickled state of the daily job in the SQLite job store; returns the new state."""
    with contextlib.closing(sqlite3.connect(store)) as db:
        state = change(pickle.loads(db.execute("SELECT job_state FROM apscheduler_jobs WHERE id = 'daily'").fetchone()[0]))
        db.execute("UPDATE apscheduler_jobs SET job_state = ? WHERE id = 'daily'", (pickle.dumps(state),))
        db.commit()
    return state
