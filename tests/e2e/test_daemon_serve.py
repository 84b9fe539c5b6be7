"""`python -m service serve` end to end: a real subprocess daemon, real /metrics scrapes, real SMTP on loopback."""
import datetime as dt
import subprocess
import time

import pytest

from conftest import REPO, SERVE, free_port, poll, scrape_until, scraped_runs, stop, write_input

SPECIES_CHECK = "isin(('setosa', 'versicolor', 'virginica'))"


@pytest.mark.slow
def test_the_daemon_runs_on_schedule_reports_metrics_mails_one_failure_and_stops_cleanly(
        irisflow_config, mailbox, tmp_path, start_daemon):
    now = dt.datetime.now(dt.timezone.utc)
    if (now + dt.timedelta(seconds=60)).date() != now.date():  # the window must not move during the test
        time.sleep(61 - now.second)
    today = dt.datetime.now(dt.timezone.utc).date()
    incoming = tmp_path / "incoming"
    write_input(incoming, today - dt.timedelta(days=1))
    write_input(incoming, today, bad=True)
    port = free_port()
    irisflow_config.set("iris", source=str(incoming / "{date}.csv"), models='["knn"]')
    irisflow_config.set("service", schedule="*/2 * * * * *", catchup_days=2, metrics_port=port)
    irisflow_config.set("email", force_send="false")  # no terminal here, as under systemd
    daemon = start_daemon()
    message, = mailbox.wait_for(1, timeout=90)
    assert message["Subject"] == f"irisflow: 1 date FAILED ({today})"
    assert f"1 date FAILED (validation) in Validate: {today}" in mailbox.text(message)
    assert f"check '{SPECIES_CHECK}'" in mailbox.text(message)

    first = scrape_until(port, "a scrape counting both dates", lambda m: scraped_runs(m, "failure"))
    assert scraped_runs(first, "success") == 1 and scraped_runs(first, "failure") == 1
    assert first[("irisflow_last_success_timestamp_seconds", ())] > time.time() - 120
    assert first[("irisflow_validation_failures_total", (("check", SPECIES_CHECK),))] == 1
    assert first[("irisflow_catchup_missing_dates", ())] == 1
    assert first[("irisflow_emails_sent_total", ())] == 1
    next_run = first[("irisflow_next_run_timestamp_seconds", ())]

    # Three more scheduled runs: the rejected date is not run (or mailed) again, the daemon lives on.
    later = scrape_until(port, "three more scheduled runs",
                         lambda m: m[("irisflow_next_run_timestamp_seconds", ())] >= next_run + 6, timeout=30)
    assert scraped_runs(later, "failure") == 1
    assert len(mailbox.messages) == 1 and daemon.poll() is None

    second = subprocess.run(SERVE, cwd=REPO, env=irisflow_config.env(), capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert second.stderr.strip().startswith("irisflow: error: another irisflow daemon (pid ")

    assert stop(daemon) == 0
    log = (tmp_path / "daemon.err").read_text()
    assert log.count("Traceback") == log.count("tasks.schema.InputRejected:") == 1  # Luigi's report of the bad input
    assert "SIGTERM: no new runs" in log and "irisflow daemon stopped" in log


@pytest.mark.slow
def test_sigterm_mid_run_stops_after_the_stop_timeout_and_a_restart_finishes_the_dates(
        irisflow_config, mailbox, tmp_path, start_daemon):
    port = free_port()
    irisflow_config.set("service", catchup_days=12, metrics_port=port, stop_timeout="0 seconds")
    first = start_daemon("first")
    poll("the first date of the start-up pass", lambda: list(irisflow_config.output_root.glob("*/summary.json")))
    assert stop(first) == 0
    complete = list(irisflow_config.output_root.glob("*/summary.json"))
    assert 1 <= len(complete) < 12
    assert not (irisflow_config.output_root / "failed").exists() and mailbox.messages == []
    assert "did not finish within 0:00:00; stopping it" in (tmp_path / "first.err").read_text()

    second = start_daemon("second")
    metrics = scrape_until(port, "the restarted daemon to complete the window",
                           lambda m: m[("irisflow_catchup_missing_dates", ())] == 0 and scraped_runs(m, "success"))
    assert scraped_runs(metrics, "success") == 12 - len(complete) and scraped_runs(metrics, "failure") == 0
    assert stop(second) == 0
