"""With Luigi's `[email] format = html` the failure mail is sent as text/html: whatever in it came from the
input (a rejected species value) is escaped there, and a plain mail stays as it was."""
import datetime as dt

import pytest

from conftest import write_input

DAY = dt.date(2026, 3, 14)
SCRIPT, BOLD = "<script>alert(1)</script>", "<b>x</b>"


@pytest.fixture
def rejected(irisflow_config, tmp_path):
    """The day's input with SCRIPT and BOLD as species (lines 5 and 6): a validation failure."""
    incoming = tmp_path / "in"
    irisflow_config.set("iris", source=str(incoming / "{date}.csv"), models='["knn"]')
    path = write_input(incoming, DAY)
    lines = path.read_text().splitlines()
    lines[4], lines[5] = lines[4].replace("setosa", SCRIPT), lines[5].replace("setosa", BOLD)
    path.write_text("\n".join(lines) + "\n")
    return irisflow_config


def test_an_html_mail_has_the_inputs_markup_only_escaped(rejected, mailbox, cli):
    rejected.set("email", format="html")
    assert cli("run", "--date", str(DAY)).returncode == 1
    message, = mailbox.messages  # the CLI has exited: every mail it sent has been received
    body = message.get_body(preferencelist=("html",)).get_content()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "&lt;b&gt;x&lt;/b&gt;" in body
    assert "<script" not in body and "<b>" not in body
    assert body.startswith("<html><body><pre>") and f"FAILED (validation) in Validate: {DAY}" in body


def test_a_plain_mail_is_the_text_as_it_is(rejected, mailbox, cli):
    assert cli("run", "--date", str(DAY)).returncode == 1
    message, = mailbox.messages
    body = mailbox.text(message)
    assert SCRIPT in body and BOLD in body and "&lt;" not in body and "<html>" not in body
