"""The daemon's scheduling, catch-up, late data and deadlines, on an injected clock: no test waits for 2 a.m.

Passes run in this process (`in_process=True`) on a real, paused APScheduler scheduler whose job store
is real SQLite under the test's state dir; the subprocess daemon is tested in test_daemon_serve.py.
"""
import datetime as dt
import fcntl
import json
import socket

import pytest

from conftest import Clock, at, free_port, registry_runs, registry_sample, write_input
from service.cli import main
from service.daemon import DAILY_JOB, Daemon
from tasks import partition

UTC = dt.timezone.utc
DAY = dt.date(2026, 11, 24)


@pytest.fixture
def daemon(schedulers):
    """A daemon on a clock the test sets; `daemon.now.now = ...` moves time."""
    return Daemon(schedulers(), now=Clock(at(DAY, 3)), in_process=True)


@pytest.fixture
def incoming(irisflow_config, tmp_path):
    """The daily input is `{incoming}/{date}.csv`, absent until the test writes it."""
    folder = tmp_path / "incoming"
    irisflow_config.set("iris", source=str(folder / "{date}.csv"))
    return folder


def utc_fire_times(daemon, start, count):
    times, now = [], start
    for _ in range(count):
        now = daemon.schedule.next_run(now).astimezone(UTC)
        times.append(now.strftime("%m-%d %H:%M"))
        now += dt.timedelta(seconds=1)
    return times


def test_the_next_run_follows_the_cron_in_its_time_zone_across_dst_changes(irisflow_config, schedulers):
    irisflow_config.set("service", schedule="30 6 * * *", timezone="America/New_York")
    new_york = Daemon(schedulers(), in_process=True)
    # 06:30 local every day; clocks go forward on 8 March 2026, so UTC moves from 11:30 to 10:30.
    assert utc_fire_times(new_york, at(dt.date(2026, 3, 6), 12), 3) == ["03-07 11:30", "03-08 10:30", "03-09 10:30"]

    irisflow_config.set("service", schedule="0 2 * * *", timezone="Europe/Berlin")
    berlin = Daemon(schedulers(), in_process=True)
    # 02:00 does not exist on 29 March: that day runs once, at 03:00 CEST (01:00 UTC).
    assert utc_fire_times(berlin, at(dt.date(2026, 3, 27), 12), 3) == ["03-28 01:00", "03-29 01:00", "03-30 00:00"]
    assert berlin.schedule.scheduled_time(dt.date(2026, 3, 29)) == at(dt.date(2026, 3, 29), 1)
    # 02:00 happens twice on 25 October and the cron fires at both; the second pass finds the date complete.
    assert utc_fire_times(berlin, at(dt.date(2026, 10, 24), 12), 3) == ["10-25 00:00", "10-25 01:00", "10-26 01:00"]


@pytest.mark.parametrize("section, key, value, words", [
    ("service", "schedule", "61 2 * * *", "[service] schedule"),
    ("service", "schedule", "daily at two", "expected 5 cron fields"),
    ("service", "schedule", "0 0 31 2 *", "never fires"),
    ("service", "timezone", "Mars/Olympus_Mons", "unknown time zone"),
    ("service", "catchup_days", "0", "catchup_days must be at least 1"),
    ("service", "metrics_port", "70000", "metrics_port"),
])
def test_invalid_configuration_stops_serve_with_one_line_and_status_2(irisflow_config, capsys, section, key,
                                                                       value, words):
    irisflow_config.set(section, **{key: value})
    assert main(["serve"]) == 2
    error, = capsys.readouterr().err.splitlines()
    assert error.startswith("irisflow: error: luigi.cfg") and words in error


def test_a_metrics_port_in_use_or_a_second_daemon_stops_serve_with_status_2(irisflow_config, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        irisflow_config.set("service", metrics_port=taken.getsockname()[1])
        assert main(["serve"]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err
    with open(irisflow_config.state_dir / "daemon.lock", "w") as lock:  # the first daemon's lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert main(["serve"]) == 2
    error, = capsys.readouterr().err.splitlines()
    assert "another irisflow daemon" in error and str(irisflow_config.state_dir) in error


def test_after_an_outage_the_missing_dates_run_once_oldest_first(irisflow_config, schedulers):
    irisflow_config.set("service", catchup_days=4)
    daemon = Daemon(schedulers(), now=Clock(at(DAY, 3)), in_process=True)
    daemon.tick()
    summaries = {DAY - dt.timedelta(days=n): irisflow_config.output_root / str(DAY - dt.timedelta(days=n)) /
                 "summary.json" for n in range(4)}
    assert all(path.is_file() for path in summaries.values())
    before = {day: path.stat().st_mtime_ns for day, path in summaries.items()}

    daemon.now.now = at(DAY + dt.timedelta(days=3), 3)  # down for three days
    missed = [DAY + dt.timedelta(days=n) for n in (1, 2, 3)]
    assert daemon.due(daemon.now()) == missed
    succeeded = registry_runs("success")
    daemon.tick()
    assert registry_runs("success") - succeeded == 3
    finished = [(irisflow_config.output_root / str(day) / "summary.json").stat().st_mtime_ns for day in missed]
    assert finished == sorted(finished)  # oldest first
    assert {day: path.stat().st_mtime_ns for day, path in summaries.items()
            if day <= DAY and day > DAY - dt.timedelta(days=3)} == \
        {day: ns for day, ns in before.items() if day > DAY - dt.timedelta(days=3)}  # nothing ran twice
    assert registry_sample("irisflow_catchup_missing_dates") == 0

    daemon.tick()
    assert registry_runs("success") - succeeded == 3
    # At 01:00 the day's 02:00 run has not come yet, so the window still ends the day before.
    daemon.now.now = at(DAY + dt.timedelta(days=4), 1)
    assert daemon.due(daemon.now()) == []


def test_data_arriving_late_is_picked_up_by_a_retry_without_any_failure(irisflow_config, daemon, incoming,
                                                                        mailbox):
    irisflow_config.set("service", catchup_days=1)
    daemon = Daemon(daemon.scheduler, now=Clock(at(DAY, 2)), in_process=True)
    failed, succeeded = registry_runs("failure"), registry_runs("success")
    daemon.tick()
    retry = daemon.scheduler.get_job(f"retry-{DAY}")
    assert retry.next_run_time == at(DAY, 2, 15)
    assert registry_runs("failure") == failed and registry_sample("irisflow_catchup_missing_dates") == 1

    write_input(incoming, DAY)
    daemon.now.now = at(DAY, 2, 15)
    daemon.retry(str(DAY))
    assert registry_runs("success") - succeeded == 1 and registry_runs("failure") == failed
    assert daemon.scheduler.get_job(f"retry-{DAY}") is None
    assert mailbox.messages == []


def test_the_data_deadline_turns_missing_input_into_one_failure_mail(irisflow_config, daemon, incoming, mailbox):
    irisflow_config.set("service", catchup_days=1, data_deadline="1 hour", retry_interval="45 minutes")
    daemon = Daemon(daemon.scheduler, now=Clock(at(DAY, 2)), in_process=True)
    failed = registry_runs("failure")
    daemon.tick()
    daemon.now.now = at(DAY, 2, 45)
    daemon.retry(str(DAY))
    assert daemon.scheduler.get_job(f"retry-{DAY}").next_run_time == at(DAY, 3)  # not past the deadline
    assert registry_runs("failure") == failed and mailbox.messages == []

    daemon.now.now = at(DAY, 3)
    daemon.retry(str(DAY))
    assert registry_runs("failure") - failed == 1
    assert daemon.scheduler.get_job(f"retry-{DAY}") is None
    message, = mailbox.messages
    assert message["Subject"] == f"irisflow: 1 date FAILED ({DAY})"
    body = mailbox.text(message)
    assert f"1 date FAILED (missing_input) in IrisData: {DAY}" in body and f"{incoming / str(DAY)}.csv" in body
    assert "data deadline" in body and f"rerun: python -m service backfill --dates {DAY}" in body

    restarted = Daemon(daemon.scheduler, now=Clock(at(DAY, 9)), in_process=True)
    restarted.tick()  # the settled date is not run (or mailed) again while its input is still absent
    assert registry_runs("failure") - failed == 1 and len(mailbox.messages) == 1

    write_input(incoming, DAY)
    restarted.tick()
    assert (irisflow_config.output_root / str(DAY) / "summary.json").is_file()
    assert json.loads((irisflow_config.state_dir / "settled.json").read_text()) == {}


def test_a_rejected_date_is_mailed_once_and_rerun_only_when_its_input_changes(irisflow_config, daemon, incoming,
                                                                              mailbox):
    irisflow_config.set("service", catchup_days=1)
    daemon = Daemon(daemon.scheduler, now=Clock(at(DAY, 3)), in_process=True)
    write_input(incoming, DAY, bad=True)
    failed = registry_runs("failure")
    daemon.tick()
    daemon.tick()
    assert registry_runs("failure") - failed == 1
    message, = mailbox.wait_for(1)
    assert message["Subject"] == f"irisflow: 1 date FAILED ({DAY})" and "check 'isin(" in mailbox.text(message)

    write_input(incoming, DAY)  # the corrected file
    daemon.tick()
    assert (irisflow_config.output_root / str(DAY) / "summary.json").is_file() and len(mailbox.messages) == 1


def test_a_pass_with_several_failed_dates_sends_one_mail_and_a_recovered_date_is_named_in_the_next(
        irisflow_config, daemon, incoming, mailbox):
    irisflow_config.set("service", catchup_days=3)
    daemon = Daemon(daemon.scheduler, now=Clock(at(DAY, 3)), in_process=True)
    days = [DAY - dt.timedelta(days=n) for n in (2, 1, 0)]
    for day in days:
        write_input(incoming, day, bad=True)
    daemon.tick()
    message, = mailbox.messages
    assert message["Subject"] == f"irisflow: 3 dates FAILED ({days[0]}..{days[2]})"
    assert f"3 dates FAILED (validation) in Validate: {days[0]}..{days[2]}" in mailbox.text(message)

    write_input(incoming, days[0])  # corrected: it recovers on the next pass, which mails nothing
    daemon.tick()
    assert partition.is_complete(irisflow_config.output_root, days[0]) and len(mailbox.messages) == 1
    write_input(incoming, days[1], bad=True)  # new input, rejected again: mailed, naming the recovered date
    (incoming / f"{days[1]}.csv").write_text((incoming / f"{days[1]}.csv").read_text() + "\n")
    daemon.tick()
    assert [m["Subject"] for m in mailbox.messages][1] == f"irisflow: 1 date FAILED ({days[1]}), 1 recovered"
    assert f"complete now): {days[0]}" in mailbox.text(mailbox.messages[1])


def test_the_daemon_leaves_stale_dates_alone(irisflow_config, daemon, incoming, cli):
    irisflow_config.set("service", catchup_days=2)
    daemon = Daemon(daemon.scheduler, now=Clock(at(DAY, 3)), in_process=True)
    for day in (DAY - dt.timedelta(days=1), DAY):
        write_input(incoming, day)
    daemon.tick()
    summary = irisflow_config.output_root / str(DAY) / "summary.json"
    built = summary.stat().st_mtime_ns
    irisflow_config.set("iris", models='["knn", "decision_tree"]')  # every date is now stale
    succeeded = registry_runs("success")
    Daemon(daemon.scheduler, now=Clock(at(DAY, 9)), in_process=True).tick()
    assert registry_runs("success") == succeeded and summary.stat().st_mtime_ns == built
    assert "stale" in cli("status", "--start", str(DAY), "--end", str(DAY)).stdout


def test_an_error_outside_any_task_is_mailed_and_the_next_pass_tries_again(irisflow_config, daemon, mailbox):
    irisflow_config.set("service", catchup_days=1)
    daemon = Daemon(daemon.scheduler, now=Clock(at(DAY, 3)), in_process=True)
    irisflow_config.set("iris", models='["no_such_model"]')  # luigi.cfg broken after start-up
    failed = registry_runs("failure")
    daemon.tick()
    assert registry_runs("failure") - failed == 1
    message, = mailbox.messages
    assert message["Subject"] == f"irisflow: 1 date FAILED ({DAY})"
    assert "(error) in the run" in mailbox.text(message) and "no_such_model" in mailbox.text(message)

    irisflow_config.set("iris", models='["knn"]')
    daemon.tick()
    assert (irisflow_config.output_root / str(DAY) / "summary.json").is_file()


def test_a_restart_keeps_a_missed_firing_due_and_a_changed_schedule_takes_effect(irisflow_config, schedulers):
    first = Daemon(schedulers(), in_process=True)
    first.start_schedule()
    missed = dt.datetime(2020, 1, 1, 2, tzinfo=UTC)
    first.scheduler.modify_job(DAILY_JOB, jobstore="default", next_run_time=missed)

    again = Daemon(schedulers(), in_process=True)  # a restart: a new scheduler on the same job store
    again.start_schedule()
    job = again.scheduler.get_job(DAILY_JOB)
    assert job.next_run_time == missed and job.func_ref == "service.daemon:scheduled_run"

    irisflow_config.set("service", schedule="30 4 * * *")
    changed = Daemon(schedulers(), in_process=True)
    changed.start_schedule()
    next_run = changed.scheduler.get_job(DAILY_JOB).next_run_time
    assert (next_run.hour, next_run.minute) == (4, 30) and next_run > dt.datetime.now(UTC)


def test_a_stop_request_ends_a_pass_between_dates(irisflow_config, daemon):
    irisflow_config.set("service", catchup_days=3)
    daemon = Daemon(daemon.scheduler, now=Clock(at(DAY, 3)), in_process=True)
    reports = daemon.run(daemon.due(daemon.now()))
    first = next(reports)
    assert [o.date for o in first.outcomes] == [str(DAY - dt.timedelta(days=2))]
    daemon.stopping.set()
    assert list(reports) == []
    assert not (irisflow_config.output_root / str(DAY - dt.timedelta(days=1))).exists()


def test_an_unusable_job_store_stops_serve_with_one_line_and_status_2(irisflow_config, capsys):
    irisflow_config.set("service", metrics_port=free_port())  # never the default port: a daemon may hold it
    irisflow_config.state_dir.mkdir()
    (irisflow_config.state_dir / "jobs.sqlite").write_text("not a database\n")
    assert main(["serve"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("irisflow: error: luigi.cfg [service] state_dir: the job store ")
    assert "file is not a database" in error
