"""Failure mail goes through Luigi's notifications and luigi.cfg [email]/[smtp], to a real SMTP server."""
import datetime as dt
import logging

from conftest import free_port, write_input
from service import notifications
from service.runner import run_dates

DAY = dt.date(2026, 11, 24)


def test_a_daemon_failure_is_mailed_with_luigis_settings(irisflow_config, mailbox):
    irisflow_config.set("email", prefix="[irisflow]")
    assert notifications.send_failure("irisflow: 2026-11-24 FAILED in IrisData", "input not found") == \
        {"sent": 1, "failed": 0}
    message, = mailbox.wait_for(1)
    assert message["Subject"] == "[irisflow] irisflow: 2026-11-24 FAILED in IrisData"
    assert message["To"] == "ops@example.com" and message["From"] == "irisflow@example.com"
    assert "input not found" in mailbox.text(message)


def test_an_unreachable_mail_server_is_logged_and_counted_never_raised(irisflow_config, caplog):
    irisflow_config.set("email", receiver="ops@example.com", force_send="true")
    irisflow_config.set("smtp", host="127.0.0.1", port=free_port(), timeout=5)
    luigi_log = logging.getLogger("luigi-interface")
    level = luigi_log.level
    luigi_log.setLevel(logging.CRITICAL)  # as a quiet CLI run leaves it: the failure must still be seen
    try:
        with caplog.at_level(logging.ERROR, logger="irisflow.mail"):
            assert notifications.send_failure("irisflow: test", "body") == {"sent": 0, "failed": 1}
    finally:
        luigi_log.setLevel(level)
    assert any("Not able to connect to smtp server" in r.getMessage() for r in caplog.records)


def test_without_a_receiver_nothing_is_sent_or_counted(irisflow_config):
    assert notifications.send_failure("irisflow: test", "body") == {"sent": 0, "failed": 0}


def test_luigi_mails_a_rejected_date_once_naming_the_date_the_step_and_the_check(irisflow_config, mailbox,
                                                                                   tmp_path):
    irisflow_config.set("iris", source=str(tmp_path / "in" / "{date}.csv"), models='["knn"]')
    write_input(tmp_path / "in", DAY, bad=True)
    report = run_dates([DAY])
    assert report.outcomes[0].reason == "validation"
    assert (report.emails_sent, report.email_failures) == (1, 0)
    message, = mailbox.wait_for(1)
    assert "Validate(" in message["Subject"] and f"date={DAY}" in message["Subject"]
    body = mailbox.text(message)
    assert "check 'isin(" in body and "line 5: 'dandelion'" in body and f"{DAY}.csv" in body


def test_mails_sent_by_worker_processes_are_counted_in_the_report(irisflow_config, mailbox, tmp_path):
    irisflow_config.set("iris", source=str(tmp_path / "in" / "{date}.csv"), models='["knn"]')
    days = [DAY, DAY + dt.timedelta(days=1)]
    for day in days:
        write_input(tmp_path / "in", day, bad=True)
    report = run_dates(days, workers=2)
    assert [o.reason for o in report.outcomes] == ["validation", "validation"]
    assert (report.emails_sent, report.email_failures) == (2, 0)
    subjects = sorted(m["Subject"] for m in mailbox.wait_for(2))
    assert all(f"date={day}" in subject for day, subject in zip(days, subjects))
