"""Alerts that reach a person, end to end and for real: a real daemon (`python -m service serve`) scraped by
Debian's `prometheus` with the shipped rules, which sends to Debian's `prometheus-alertmanager` with the
shipped config, which mails an SMTP server on loopback (aiosmtpd). Every server listens on a free loopback
port, with its data in the test's temp dir.

Time is compressed, never faked: the rules' `for:` durations, their one-hour windows and the stuck
scheduler's grace become seconds in a temp copy, Prometheus scrapes and evaluates every second, and the
Alertmanager's group waits are a second or two. What a person would see is asserted: which mails arrive,
naming what, and which alerts the Alertmanager holds back (inhibited or silenced) instead of mailing.
"""
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, free_port, poll, tool, write_input
from monitoring import (
    ALERTMANAGER_DIR,
    PROMETHEUS_DIR,
    SYNTHETIC,
    Prometheus,
    dashboard_expressions,
    exported_names,
    fetch,
    metric_names,
    running,
    shipped_config_scraping,
)

pytestmark = pytest.mark.slow

# The shipped rules' durations, compressed. Every `for:` and `keep_firing_for:` of alerts.yml must be
# here, so a new one is chosen deliberately: the alerts of a day or more stay longer than the test runs.
# Their order is kept: the stuck scheduler's grace (3600 s shipped) stays longer than a pass takes (a
# spawned run of one date, some seconds on a loaded machine), and the missing dates (2h) come after the
# stuck scheduler (the next run, at most 2 s ahead, plus the grace) that inhibits them. A cause kept
# firing (5m) outlasts the `for:` of the alert it hands over to (1m) and a few evaluations and scrapes of
# a loaded machine. The one-hour windows outlast a warning's group wait (5m, below), so the rejected
# input is still firing when its group first flushes, inhibited. A target down (5m) outlasts the start of
# Prometheus, which evaluates rules some 5 s before its first scrape (its targets are applied every 5 s):
# in between absent(up) holds, and an IrisflowDaemonDown fired then is re-sent resolved every minute for
# a quarter of an hour: once the daemon is really down, each re-send joins its group and mails it again.
STUCK_GRACE = "12"
FOR = {"1m": "1s", "5m": "10s", "1h": "1h", "2h": "16s", "26h": "1h", "36h": "1h"}
KEEP_FIRING_FOR = {"5m": "6s"}
WINDOW = "8s"  # the one-hour windows of increase() and offset
SCHEDULE = "*/2 * * * * *"  # a pass every 2 seconds (6 cron fields: seconds first)


def compressed_rules(text):
    for key, compressed in (("for", FOR), ("keep_firing_for", KEEP_FIRING_FOR)):
        pattern = rf"^(\s+{key}: )(\w+)$"
        durations = {m.group(2) for m in re.finditer(pattern, text, re.MULTILINE)}
        assert durations <= set(compressed), f"a `{key}:` this test does not compress: {durations - set(compressed)}"
        text = re.sub(pattern, lambda m, c=compressed: m.group(1) + c[m.group(2)], text, flags=re.MULTILINE)
    text = text.replace("[1h]", f"[{WINDOW}]").replace("offset 1h", f"offset {WINDOW}")
    stuck = 'time() - irisflow_next_run_timestamp_seconds{job="irisflow"} > 3600'
    assert stuck in text
    return text.replace(stuck, stuck.replace("3600", STUCK_GRACE))


# The Alertmanager's waits, compressed in the same order as the rules' durations: a warning waits longer
# (5m) than a critical alert takes to fire (`for: 1m`), so the critical alert is there to inhibit it.
GROUP_WAIT = {"30s": "1s", "5m": "4s"}
GROUP_INTERVAL = {"5m": "2s", "30m": "3s"}


def local_alertmanager_config(text, smtp_port, password_file):
    """The shipped alertmanager.yml, mailing the test's SMTP server (no STARTTLS on loopback), with short
    group waits; routes, receivers, inhibit rules and templates as shipped."""
    replacements = [
        (r"smtp_smarthost: \S+", f"smtp_smarthost: 127.0.0.1:{smtp_port}"),
        (r"smtp_require_tls: true", "smtp_require_tls: false"),
        (r"auth_password_file: \S+", f"auth_password_file: {password_file}"),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        assert count, f"alertmanager.yml has no {pattern}"
    for key, durations in (("group_wait", GROUP_WAIT), ("group_interval", GROUP_INTERVAL)):
        found = set(re.findall(rf"{key}: (\w+)", text))
        assert found <= set(durations), f"a {key} this test does not compress: {found - set(durations)}"
        text = re.sub(rf"{key}: (\w+)", lambda m, k=key, d=durations: f"{k}: {d[m.group(1)]}", text)
    return text


class Alertmanager:
    """Debian's prometheus-alertmanager on a free loopback port, clustering off, state in a temp dir, logging
    each flush of a group (debug)."""

    def __init__(self, config_dir):
        self.address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.address}"
        log_path = config_dir / "alertmanager.log"
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                [tool("prometheus-alertmanager"), f"--config.file={config_dir / 'alertmanager.yml'}",
                 f"--storage.path={config_dir / 'data'}", f"--web.listen-address={self.address}",
                 "--cluster.listen-address=", "--log.level=debug"],
                cwd=config_dir, stdout=log, stderr=subprocess.STDOUT)
        self.log_path = log_path
        poll("alertmanager to be ready", lambda: running(self.process, log_path) and fetch(self.url + "/-/ready"),
             timeout=30.0, retry_on=(OSError,))

    def alerts(self):
        """{alertname: alert} of what the Alertmanager holds, with status.state, inhibitedBy, silencedBy."""
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=5) as response:
            return {alert["labels"]["alertname"]: alert for alert in json.loads(response.read())}

    def flushes(self, alertname):
        """How often the groups of that alert name have flushed (its log). A flush sends what the inhibitions
        and silences let through, and a group's next flush begins after its last one has sent: two flushes
        after an alert arrived, a mail it caused is in the mailbox."""
        group = f'alertname=\\"{alertname}\\"}}"'
        return sum("msg=flushing" in line and group in line for line in self.log_path.read_text().splitlines())

    def amtool(self, *args):
        result = subprocess.run([tool("amtool"), f"--alertmanager.url={self.url}", *args], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def run_child(daemon):
    """The daemon's run process (multiprocessing's spawn child, not its resource tracker), if one runs."""
    for children in Path(f"/proc/{daemon.pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
            except OSError:
                continue
    return None


def test_alerts_reach_a_person_once_per_cause(irisflow_config, mailbox, tmp_path):
    # Only the Alertmanager mails here: the daemon's own failure mail is another path (tests/test_notifications.py).
    for section in ("email", "smtp"):
        irisflow_config.sections.pop(section)
    now = dt.datetime.now(dt.UTC)
    if (now + dt.timedelta(minutes=10)).date() != now.date():
        pytest.skip("the date must not move while the test runs")
    incoming = tmp_path / "incoming"
    today = now.date()  # the one date of the window (UTC schedule, a pass every 2 s)
    write_input(incoming, today, bad=True)
    port = free_port()
    irisflow_config.set("service", metrics_address="127.0.0.1", metrics_port=port, schedule=SCHEDULE,
                        catchup_days=1, stop_timeout="10s")
    irisflow_config.set("iris", source=str(incoming / "{date}.csv"), models='["knn"]')

    am_dir = tmp_path / "alertmanager"
    am_dir.mkdir()
    password_file = am_dir / "smtp_password"
    password_file.write_text("not-used-on-a-server-without-auth")
    shutil.copy(ALERTMANAGER_DIR / "irisflow.tmpl", am_dir / "irisflow.tmpl")
    (am_dir / "alertmanager.yml").write_text(local_alertmanager_config(
        (ALERTMANAGER_DIR / "alertmanager.yml").read_text(), mailbox.port, password_file))
    alertmanager = Alertmanager(am_dir)
    stops = [alertmanager.stop]
    daemon = None
    try:
        # Planned work on luigid: silenced before it fires, with the operator's command.
        silence = alertmanager.amtool("silence", "add", "--comment=luigid moves to another host", "--author=test",
                                      "--duration=1h", "alertname=LuigidDown")
        assert re.fullmatch(r"[0-9a-f-]{36}", silence), silence

        log_path = tmp_path / "daemon.log"
        with log_path.open("w") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO,
                                      env=irisflow_config.env(), stdout=log, stderr=subprocess.STDOUT)
        # A run that hangs (as on an input file on a hung mount): its process stopped before it gets anywhere
        # (it spends its first second or so importing, polled every 20 ms).
        child = poll("the start-up pass's run process", lambda: running(daemon, log_path) and run_child(daemon),
                     timeout=30.0, interval=0.02)
        os.kill(child, signal.SIGSTOP)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        poll("the daemon's /metrics", lambda: running(daemon, log_path) and fetch(metrics_url), timeout=30.0,
             retry_on=(OSError,))

        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        shipped_config_scraping(prom_dir, f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}", alertmanager.address)
        (prom_dir / "alerts.yml").write_text(compressed_rules((PROMETHEUS_DIR / "alerts.yml").read_text()))
        prometheus = Prometheus(prom_dir)
        stops.insert(0, prometheus.stop)

        def subjects():
            return [message["Subject"] for message in mailbox.messages]

        def mail_about(alertname, status, count=1):
            """Waits until `count` mails about the alert in that status have arrived; returns the last."""
            tag = f"{status.upper()}{':' if status == 'firing' else ''}"
            found = lambda: [m for m in mailbox.messages  # noqa: E731
                             if tag in m["Subject"] and m["Subject"].endswith(f"] {alertname}")]
            poll(f"{count} {status} mail(s) about {alertname}; have {subjects()}", lambda: len(found()) >= count,
                 timeout=30.0)
            return found()[-1]

        def held_back(alertname, by, causes):
            """Waits until the Alertmanager holds the firing alert back, inhibited or silenced by one of `causes`
            (alert fingerprints or silence ids; it names the first rule that matches)."""
            def probe():
                alert = alertmanager.alerts().get(alertname)
                return (alert and alert["status"]["state"] == "suppressed"
                        and set(alert["status"][by]) and set(alert["status"][by]) <= set(causes))
            poll(f"{alertname} {by} {causes} in the Alertmanager; it holds {alertmanager.alerts()}", probe,
                 timeout=30.0, retry_on=(OSError,))

        # 1. Nothing happens: the daemon answers, its next run is overdue past the grace. One page; the date
        #    missing from the window is a consequence and is inhibited; luigid is down but silenced.
        page = mail_about("IrisflowSchedulerStuck", "firing")
        assert "[irisflow critical FIRING:1]" in page["Subject"]
        assert "is stuck, its next run is" in mailbox.text(page) and "systemctl restart irisflow" in mailbox.text(page)
        stuck = alertmanager.alerts()["IrisflowSchedulerStuck"]["fingerprint"]
        held_back("IrisflowCatchupMissingDates", "inhibitedBy", [stuck])
        held_back("LuigidDown", "silencedBy", [silence])
        assert len(mailbox.messages) == 1, subjects()

        # 2. The run goes on and rejects the date: one page naming it; the rejected rows and the missing date
        #    are the same incident, inhibited; the stuck scheduler resolves (kept firing a while, so the
        #    missing date is handed over to the failure without a gap).
        os.kill(child, signal.SIGCONT)
        page = mail_about("IrisflowLastRunFailed", "firing")
        assert f"newest failed date {today.isoformat()}" in mailbox.text(page)
        failed = alertmanager.alerts()["IrisflowLastRunFailed"]["fingerprint"]
        held_back("IrisflowValidationRejected", "inhibitedBy", [failed])
        rejected = alertmanager.alerts()["IrisflowValidationRejected"]["fingerprint"]
        mail_about("IrisflowSchedulerStuck", "resolved")
        held_back("IrisflowCatchupMissingDates", "inhibitedBy", [failed, rejected])
        assert sum(f"failed date {today.isoformat()}" in mailbox.text(m) for m in mailbox.messages) == 1, subjects()
        # (The rejection leaves the compressed one-hour window before the fix, as it would in an hour.)
        poll("IrisflowValidationRejected to end in Prometheus",
             lambda: not [a for a in prometheus.api("alerts")["alerts"]
                          if a["labels"]["alertname"] == "IrisflowValidationRejected"], timeout=30.0)

        # 3. A corrected file: the next pass builds the date, the failure resolves, a resolved mail says so.
        good = write_input(tmp_path / "fixed", today)
        os.replace(good, incoming / good.name)
        resolved = mail_about("IrisflowLastRunFailed", "resolved")
        assert "RESOLVED at" in mailbox.text(resolved)
        poll("the date's success in Prometheus",
             lambda: prometheus.api("query", query='irisflow_pipeline_runs_total{outcome="success"} == 1')["result"],
             timeout=30.0)

        # The dashboard's queries, as Grafana sends them, to this Prometheus: each parses and runs, and
        # names only series the daemon exports.
        exported = exported_names(fetch(metrics_url)) | SYNTHETIC
        shown = set()
        for expr in dashboard_expressions():
            result = prometheus.api("query", query=expr)["result"]  # a query that does not parse fails here
            assert metric_names(expr) <= exported, expr
            shown |= metric_names(expr) if result else set()
        assert {"irisflow_last_run_success", "irisflow_next_run_timestamp_seconds", "up"} <= shown

        # 4. The silence held LuigidDown back all along: expired, it mails.
        alertmanager.amtool("silence", "expire", silence)
        assert "[irisflow warning FIRING:1]" in mail_about("LuigidDown", "firing")["Subject"]

        # 5. The daemon stops: IrisflowDaemonDown pages once. Its series end with it, so Prometheus itself
        #    fires nothing else from them; what the daemon's outage means for the data (stale results,
        #    missing dates), posted for its target as Prometheus would, is inhibited.
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, log_path.read_text()
        down = mail_about("IrisflowDaemonDown", "firing")
        assert f"instance=127.0.0.1:{port}" in mailbox.text(down)
        firing = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"}
        assert firing == {"IrisflowDaemonDown", "LuigidDown"}, firing
        consequences = ("IrisflowStale", "IrisflowCatchupMissingDates")
        flushed = {consequence: alertmanager.flushes(consequence) for consequence in consequences}
        for consequence in consequences:
            alertmanager.amtool("alert", "add", f"alertname={consequence}", "severity=critical", "job=irisflow",
                                f"instance=127.0.0.1:{port}", "--annotation=summary=after the daemon stopped")
        daemon_down = alertmanager.alerts()["IrisflowDaemonDown"]["fingerprint"]
        held_back("IrisflowStale", "inhibitedBy", [daemon_down])
        held_back("IrisflowCatchupMissingDates", "inhibitedBy", [daemon_down])

        # A mail that must not arrive: each consequence's group has flushed twice since it was posted, so
        # whatever its first flush let through has arrived. One mail for each cause and its resolution,
        # none for a consequence.
        for consequence in consequences:
            poll(f"two flushes of {consequence}'s group in {alertmanager.log_path}",
                 lambda c=consequence: alertmanager.flushes(c) >= flushed[c] + 2, timeout=30.0)
        got = sorted(f"{s.rsplit('] ', 1)[1]} {'firing' if 'FIRING' in s else 'resolved'}" for s in subjects())
        assert got == sorted(["IrisflowSchedulerStuck firing", "IrisflowSchedulerStuck resolved",
                              "IrisflowLastRunFailed firing", "IrisflowLastRunFailed resolved",
                              "LuigidDown firing", "IrisflowDaemonDown firing"]), "\n".join(subjects())
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=30)
        for stop in stops:
            stop()
