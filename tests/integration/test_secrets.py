"""Secrets are never repeated: a password in the scheduler URL, in a --pushgateway URL or in [smtp] shows in
no output, file, page or mail of a run that fails because of the very URL that holds it; where the URL is
shown, its password is `***`."""

import datetime as dt
import json

from conftest import free_port

from service.cli import EXIT_FAILED
from service.secrets import mask

DAY = dt.date(2024, 3, 1)
SCHEDULER_PASSWORD = "s3cret-Sched-7Qx"
PUSH_PASSWORD = "pushPW-4Lm"
SMTP_PASSWORD = "smtpPW-9Kd"
SECRETS = (SCHEDULER_PASSWORD, PUSH_PASSWORD, SMTP_PASSWORD)


def _files_under(*folders):
    """{path: text} of every file under the folders."""
    return {
        path: path.read_text(errors="replace") for folder in folders if folder.exists()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


def test_no_secret_of_any_url_setting_shows_anywhere(irisflow_config, cli, mailbox, tmp_path):
    closed = free_port()
    irisflow_config.set(
        "core",
        default_scheduler_url=f"http://irisflow:{SCHEDULER_PASSWORD}@127.0.0.1:{closed}/",
        rpc_retry_attempts=1,
        rpc_retry_wait=0,
    )
    irisflow_config.set("smtp", password=SMTP_PASSWORD)  # no username: the loopback server takes no login
    pushgateway = f"http://metrics:{PUSH_PASSWORD}@127.0.0.1:{free_port()}"

    run = cli("--verbose", "run", "--date", DAY.isoformat(), "--pushgateway", pushgateway)
    assert run.returncode == EXIT_FAILED
    assert f"http://irisflow:***@127.0.0.1:{closed}/ not reachable" in run.stdout + run.stderr
    [message] = mailbox.wait_for(1)
    mail = "\n".join([message.as_string(), *(part.get_content() for part in message.walk()
                                             if part.get_content_maintype() == "text")])  # headers and decoded parts
    assert "http://irisflow:***@127.0.0.1" in mail

    report = tmp_path / "report"
    shown = {
        "run": run,
        "status": cli("status"),
        "status --json": cli("status", "--json"),
        "report": cli("report", "--start", DAY.isoformat(), "--end", DAY.isoformat(), "--out", str(report)),
    }
    assert all(result.returncode == 0 for name, result in shown.items() if name != "run"), shown
    texts = {f"{name} {stream}": getattr(result, stream) for name, result in shown.items()
             for stream in ("stdout", "stderr")}
    files = _files_under(irisflow_config.output_root, irisflow_config.state_dir, report)
    texts.update({str(path): text for path, text in files.items()})
    texts["the mail"] = mail

    failure = json.loads((irisflow_config.output_root / "failed" / DAY.isoformat() / "failure.json").read_text())
    assert "http://irisflow:***@127.0.0.1" in failure["error"]
    assert any("irisflow:***@" in text for path, text in files.items() if path.is_relative_to(report))
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} shows in {where}"


def test_mask_keeps_the_user_and_hides_the_password_wherever_it_shows_again(irisflow_config):
    irisflow_config.set("smtp", password=SMTP_PASSWORD)
    text = f"cannot reach http://ops:p%40ss@host:1/api: nonnumeric port: 'p%40ss@host:1'; login {SMTP_PASSWORD} refused"
    assert mask(text) == "cannot reach http://ops:***@host:1/api: nonnumeric port: '***@host:1'; login *** refused"
    assert mask("no secret in http://host:8082/ or user@example.com") == "no secret in http://host:8082/ or user@example.com"
