"""Secrets and untrusted files: the SMTP password comes from the environment and shows nowhere, a config
value that cannot be read is named without its value, and no code unpickles a file it was handed."""
import datetime as dt
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import IRIS_CSV, Mailbox, REPO, free_port, stop

DAY = "2026-11-24"
SECRET = "hunter2-Zq8%wL"


@pytest.fixture
def authenticating_mailbox(irisflow_config, monkeypatch):
    """A real SMTP server on loopback that accepts only user 'irisflow' with SECRET; the password reaches
    irisflow only through the environment, as systemd's EnvironmentFile= would pass it."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box, box.logins = Mailbox(), []

    def authenticate(server, session, envelope, mechanism, credentials):
        box.logins.append(isinstance(credentials, LoginPassword) and credentials.login == b"irisflow"
                          and credentials.password == SECRET.encode())
        return AuthResult(success=box.logins[-1])

    controller = Controller(box, hostname="127.0.0.1", port=box.port, authenticator=authenticate,
                            auth_require_tls=False)
    controller.start()
    monkeypatch.setenv("IRISFLOW_SMTP_PASSWORD", SECRET)
    irisflow_config.set("email", receiver="ops@example.com", sender="irisflow@example.com", force_send="true")
    irisflow_config.set("smtp", host="127.0.0.1", port=box.port, timeout=10, username="irisflow",
                        password="${IRISFLOW_SMTP_PASSWORD}")
    yield box
    controller.stop()


def _everything_written_under(root):
    return "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_the_smtp_password_comes_from_the_environment_and_appears_nowhere(
        irisflow_config, cli, authenticating_mailbox, tmp_path):
    bad_input = tmp_path / f"{DAY}.csv"  # fails validation, so Luigi mails the failure
    bad_input.write_text(IRIS_CSV.read_text().replace("setosa", "dandelion", 1))
    irisflow_config.set("iris", source=tmp_path / "{date}.csv")

    result = cli("--verbose", "run", "--date", DAY)
    assert result.returncode == 1, result.stderr
    mail = authenticating_mailbox.wait_for(1)[0]
    assert authenticating_mailbox.logins == [True], "the password did not reach the mail server"

    luigi_cli = os.path.join(os.path.dirname(sys.executable), "luigi")
    helps = [cli("--help").stdout, cli("run", "--help").stdout,
             subprocess.run([luigi_cli, "--module", "tasks.iris", "IrisPipeline", "--help-all"], cwd=REPO,
                            env=irisflow_config.env(), capture_output=True, text=True, timeout=120).stdout]
    assert "--smtp-password" in helps[2]  # Luigi names the setting, never its value
    for where, text in {"CLI output": result.stdout + result.stderr, "mail": mail.as_string(),
                        "outputs": _everything_written_under(irisflow_config.output_root),
                        "--help": "".join(helps)}.items():
        assert SECRET not in text, f"the SMTP password appears in the {where}"


@pytest.mark.parametrize("password, environment, words", [
    ("${IRISFLOW_SMTP_PASSWORD}", {}, "environment variable IRISFLOW_SMTP_PASSWORD is not set"),
    ("pa%ss-" + SECRET, {}, "write a literal '%' as '%%'"),
])
def test_an_unreadable_config_value_is_named_without_its_value(irisflow_config, cli, monkeypatch, password,
                                                               environment, words):
    monkeypatch.delenv("IRISFLOW_SMTP_PASSWORD", raising=False)
    irisflow_config.set("smtp", host="127.0.0.1", username="irisflow", password=password)
    result = cli("run", "--date", DAY)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"irisflow: error: luigi.cfg [smtp] password: cannot be read: {words} ({irisflow_config.path} line "
        f"{irisflow_config.path.read_text().splitlines().index(f'password = {password}') + 1})"
    )
    assert SECRET not in result.stderr + result.stdout


def test_only_the_champion_loader_unpickles_and_only_sealed_bytes(irisflow_config):
    """Model files are pickles, which run code when loaded: one function loads them (`predict`), and only
    bytes a complete date's manifest sealed. A new loader must come with the same check."""
    loaders = re.compile(r"\b(joblib\.load|pickle\.loads?|cloudpickle|dill\.load|pd\.read_pickle|read_pickle)\b")
    found = [f"{path.relative_to(REPO)}" for folder in ("tasks", "service")
             for path in (REPO / folder).rglob("*.py")
             for line in path.read_text().splitlines() if loaders.search(line)]
    assert found == ["service/champion/rule.py"]
    source = (REPO / "service" / "champion" / "rule.py").read_text()
    loader = source[source.index("def load_model("):]
    loader = loader[:loader.index("\ndef ") if "\ndef " in loader else None]
    assert "read_summary" in loader and 'sealed["sha256"]' in loader and "pickle.loads(content)" in loader


@pytest.mark.slow
def test_the_daemon_serves_metrics_on_loopback_only_and_shows_the_password_nowhere(
        irisflow_config, authenticating_mailbox, start_daemon, tmp_path):
    port = free_port()
    irisflow_config.set("iris", source=tmp_path / "{date}.csv", models='["knn"]')
    irisflow_config.set("service", schedule="*/2 * * * * *", catchup_days=1, metrics_port=port)
    today = dt.datetime.now(dt.timezone.utc).date()
    (tmp_path / f"{today}.csv").write_text(IRIS_CSV.read_text().replace("setosa", "dandelion", 1))
    daemon = start_daemon()
    authenticating_mailbox.wait_for(1)
    assert _listening_addresses(port) == ["127.0.0.1"]  # [service] metrics_address must be set to bind elsewhere
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        exposed = response.read().decode()
    assert stop(daemon) == 0
    assert authenticating_mailbox.logins == [True]
    for where, text in {"/metrics": exposed, "daemon log": (tmp_path / "daemon.err").read_text()}.items():
        assert SECRET not in text, f"the SMTP password appears in the {where}"


def _listening_addresses(port):
    """The local IPv4 addresses with a socket listening on `port`, from the kernel's own table."""
    addresses = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # TCP_LISTEN
            addresses.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return addresses
