"""Failure mail goes through Luigi's notifications and luigi.cfg [email]/[smtp], to a real SMTP server: one
mail per run naming every failed date grouped by reason and step, and once each date that recovered."""
import datetime as dt
import logging
import re
import subprocess
import sys

from conftest import REPO, free_port, write_input
from service.reporting import mail
from service.runner import run_dates

DAY = dt.date(2026, 11, 24)


def test_a_daemon_failure_is_mailed_with_luigis_settings(irisflow_config, mailbox):
    irisflow_config.set("email", prefix="[irisflow]")
    assert mail.send_failure("irisflow: 2026-11-24 FAILED in IrisData", "input not found") == \
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
            assert mail.send_failure("irisflow: test", "body") == {"sent": 0, "failed": 1}
    finally:
        luigi_log.setLevel(level)
    assert any("Not able to connect to smtp server" in r.getMessage() for r in caplog.records)


def test_without_a_receiver_nothing_is_sent_or_counted(irisflow_config):
    assert mail.send_failure("irisflow: test", "body") == {"sent": 0, "failed": 0}


def test_runner_builds_send_no_mail_per_task_but_a_stock_luigi_command_does(irisflow_config, mailbox, tmp_path):
    irisflow_config.set("iris", source=str(tmp_path / "in" / "{date}.csv"), models='["knn"]')
    days = [DAY, DAY + dt.timedelta(days=1)]
    for day in days:
        write_input(tmp_path / "in", day, bad=True)
    report = run_dates(days, workers=2)
    assert [o.reason for o in report.outcomes] == ["validation", "validation"]
    assert (report.emails_sent, report.email_failures) == (0, 0) and mailbox.messages == []
    # Luigi's own command keeps Luigi's behaviour: a mail for the failed task.
    subprocess.run([sys.executable, "-m", "luigi", "--module", "tasks.iris", "IrisPipeline", "--date", str(DAY),
                    "--local-scheduler"], cwd=REPO, env=irisflow_config.env(),
                   capture_output=True, timeout=300, check=False)  # Luigi's own exit status is 0 here
    message, = mailbox.wait_for(1)
    assert "Validate(" in message["Subject"] and f"date={DAY}" in message["Subject"]


def test_a_backfill_with_many_failed_dates_sends_exactly_one_mail(irisflow_config, mailbox, cli, tmp_path):
    irisflow_config.set("iris", source=str(tmp_path / "in" / "{date}.csv"), models='["knn"]')
    days = [DAY + dt.timedelta(days=n) for n in range(8)]
    for day in days[:6]:
        write_input(tmp_path / "in", day, bad=True)  # the last two have no input at all
    result = cli("backfill", "--start", str(days[0]), "--end", str(days[-1]), "--workers", "2")
    assert result.returncode == 1
    message, = mailbox.messages  # the CLI has exited: every mail it sent has been received
    assert message["Subject"] == f"irisflow: 8 dates FAILED ({days[0]}..{days[-1]})"
    body = mailbox.text(message)
    assert f"6 dates FAILED (validation) in Validate: {days[0]}..{days[5]}" in body
    assert f"first error ({days[0]}):" in body and "check 'isin(" in body and "line 5: 'dandelion'" in body
    assert f"rerun: python -m service backfill --dates {days[0]}..{days[5]} --workers 2" in body
    assert f"2 dates FAILED (missing_input) in IrisData: {days[6]}..{days[7]}" in body
    assert body.count("first error") == 2  # one paragraph per group, not per date


def test_a_recovered_date_is_named_once_in_the_next_mail(irisflow_config, mailbox, cli, tmp_path):
    irisflow_config.set("iris", source=str(tmp_path / "in" / "{date}.csv"), models='["knn"]')
    first, second = DAY, DAY + dt.timedelta(days=1)
    write_input(tmp_path / "in", first, bad=True)
    assert cli("run", "--date", str(first)).returncode == 1
    write_input(tmp_path / "in", first)  # corrected: the date recovers, which alone sends nothing
    assert cli("run", "--date", str(first)).returncode == 0
    assert len(mailbox.messages) == 1
    write_input(tmp_path / "in", second, bad=True)
    assert cli("backfill", "--start", str(first), "--end", str(second)).returncode == 1
    assert cli("run", "--date", str(second)).returncode == 1
    subjects = [m["Subject"] for m in mailbox.messages]
    assert subjects == [f"irisflow: 1 date FAILED ({first})", f"irisflow: 1 date FAILED ({second}), 1 recovered",
                        f"irisflow: 1 date FAILED ({second})"]
    assert f"Recovered (failed and mailed before, complete now): {first}" in mailbox.text(mailbox.messages[1])
    assert "Recovered" not in mailbox.text(mailbox.messages[2])


def test_a_cli_run_whose_mail_cannot_be_sent_says_so_in_one_line_on_stderr(irisflow_config, cli, tmp_path):
    """The mail server down (a closed port on loopback): `run` and `backfill` still end with the date's
    outcome, and stderr has one line about the mail, without a traceback or the password."""
    irisflow_config.set("iris", source=str(tmp_path / "in" / "{date}.csv"), models='["knn"]')
    irisflow_config.set("email", receiver="ops@example.com", sender="irisflow@example.com", force_send="true")
    irisflow_config.set("smtp", host="127.0.0.1", port=free_port(), timeout=5, username="irisflow",
                        password="hunter2-not-shown")
    write_input(tmp_path / "in", DAY, bad=True)
    write_input(tmp_path / "in", DAY + dt.timedelta(days=1), bad=True)
    for args in (("run", "--date", str(DAY)), ("backfill", "--start", str(DAY), "--end", str(DAY + dt.timedelta(days=1)))):
        result = cli(*args)
        assert result.returncode == 1, result.stderr
        mail_lines = [line for line in result.stderr.splitlines() if str(tmp_path) not in line
                      and re.search(r"mail|smtp", line, re.I)]  # the temp dir is named after this test
        assert mail_lines == ["ERROR irisflow.mail: Not able to connect to smtp server: [Errno 111] Connection refused"], \
            result.stderr
        assert "Traceback" not in result.stderr and "hunter2" not in result.stdout + result.stderr
        assert "FAILED (validation)" in result.stderr
