"""Prometheus and Grafana files of deploy/, checked with the real promtool and prometheus.

Both come from Debian's `prometheus` package (`make tools`); a missing tool fails the test, since a
config that was never checked is what these tests exist to prevent. The metric names in every alert
and panel are compared with a real scrape of the service's registry, so a renamed metric cannot
leave an alert that silently never fires.
"""
import datetime as dt
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, free_port, poll, tool
from monitoring import (
    ALERTMANAGER_DEFAULT,
    ALERTMANAGER_DIR,
    DASHBOARD,
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
from prometheus_client import start_http_server

from service import __version__


def promtool(*args, cwd=PROMETHEUS_DIR):
    result = subprocess.run([tool("promtool"), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def shipped_prometheus(tmp_path_factory):
    """deploy/prometheus as shipped (config and rules side by side), loaded by a real Prometheus."""
    config_dir = tmp_path_factory.mktemp("prometheus")
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", config_dir / "alerts.yml")
    # Alerts go to a free port where nothing listens, never to a default port some other server may hold.
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    (config_dir / "prometheus.yml").write_text(config.replace(ALERTMANAGER_DEFAULT, f"127.0.0.1:{free_port()}"))
    server = Prometheus(config_dir)
    yield server
    server.stop()


def alert_rules(prometheus):
    return [rule for group in prometheus.api("rules", type="alert")["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def scraped_names():
    """A real HTTP scrape of the service's registry, served as the daemon serves it."""
    from service.reporting.metrics import REGISTRY

    server, thread = start_http_server(0, addr="127.0.0.1", registry=REGISTRY)
    try:
        names = exported_names(fetch(f"http://127.0.0.1:{server.server_port}/metrics"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert "irisflow_pipeline_runs_total" in names and "irisflow_run_duration_seconds_bucket" in names
    return names


def test_prometheus_config_is_valid_and_loads_the_rules():
    """`promtool check config` also checks the rule files the config names, so a wrong path fails."""
    assert "1 rule files found" in promtool("check", "config", "prometheus.yml")


def test_alert_rules_are_valid_without_duplicates():
    promtool("check", "rules", "--lint=all", "--lint-fatal", "alerts.yml")


def test_alert_rule_unit_tests_pass():
    """alerts_test.yml: each alert fires on its failure and stays quiet on healthy or fresh series."""
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_prometheus_scrapes_the_daemon_and_luigid_on_their_default_ports():
    """The targets must match [service] metrics_port's default and luigid.service's port."""
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    jobs = re.findall(r"job_name: (\w+)\n(?:.*\n)*?\s+- targets: \[\"([^\"]+)\"\]", config)
    assert jobs == [("irisflow", "127.0.0.1:9733"), ("luigid", "127.0.0.1:8082")]
    assert re.search(r"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: \[\"127.0.0.1:9093\"\]",
                     config), "alerts go to the Alertmanager on this host, on its default port"


def amtool(*args):
    result = subprocess.run([tool("amtool"), *map(str, args)], cwd=ALERTMANAGER_DIR, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# Where each alert of alerts.yml is mailed: a critical one pages, a warning is batched. A new alert fails
# test_every_alert_reaches_its_receiver until it is added here, with its route checked by amtool.
RECEIVERS = {
    "IrisflowLastRunFailed": "irisflow-page", "IrisflowStale": "irisflow-page",
    "IrisflowNoSuccessSinceStart": "irisflow-page", "IrisflowDaemonDown": "irisflow-page",
    "IrisflowSchedulerStuck": "irisflow-page", "IrisflowValidationRejected": "irisflow-mail",
    "IrisflowCatchupMissingDates": "irisflow-mail", "IrisflowEmailFailing": "irisflow-mail",
    "IrisflowModelAccuracyLow": "irisflow-mail", "IrisflowDataDrift": "irisflow-mail",
    "IrisflowSchedulerUnreachable": "irisflow-mail", "LuigidDown": "irisflow-mail",
    "IrisflowChampionOld": "irisflow-mail",
}


def test_alertmanager_config_is_valid():
    """The real amtool parses the config, its template and its inhibit rules."""
    out = amtool("check-config", "alertmanager.yml")
    assert "SUCCESS" in out and "5 inhibit rules" in out and "1 templates" in out, out


def test_every_alert_reaches_its_receiver(shipped_prometheus):
    """`amtool config routes test` with each alert's labels, as the real Prometheus loaded them from
    alerts.yml: critical alerts page, warnings are mailed in batches, none falls through unrouted."""
    rules = alert_rules(shipped_prometheus)
    assert {rule["name"] for rule in rules} == set(RECEIVERS), "an alert without a route test (or a stale one)"
    for rule in rules:
        job = "luigid" if rule["name"].startswith("Luigid") else "irisflow"
        labels = {**rule["labels"], "alertname": rule["name"], "job": job, "instance": "127.0.0.1:9733"}
        out = amtool("config", "routes", "test", "--config.file=alertmanager.yml",
                     f"--verify.receivers={RECEIVERS[rule['name']]}", *(f"{k}={v}" for k, v in labels.items()))
        assert out.split() == [RECEIVERS[rule["name"]]], (rule["name"], out)
    assert {RECEIVERS[rule["name"]] for rule in rules if rule["labels"]["severity"] == "critical"} == {"irisflow-page"}


def test_alertmanager_reads_the_smtp_password_of_the_environment_file(tmp_path):
    """The drop-in's ExecStartPre, as systemd runs it (`$$` and `%%` unescaped), writes the password of
    an environment file like deploy/etc/environment to the file alertmanager.yml names, readable by the
    service's user only; the config itself holds no password."""
    dropin = (ALERTMANAGER_DIR / "prometheus-alertmanager.service.d" / "irisflow.conf").read_text()
    command = re.search(r"^ExecStartPre=/bin/sh -c '(.*)'$", dropin, re.MULTILINE).group(1)
    assert "EnvironmentFile=/etc/irisflow/environment" in dropin and "RuntimeDirectory=irisflow-alertmanager" in dropin
    environment = (REPO / "deploy" / "etc" / "environment").read_text() + "IRISFLOW_SMTP_PASSWORD=s3cr;t pass\n"
    variables = dict(line.split("=", 1) for line in environment.splitlines() if line and not line.startswith("#"))
    subprocess.run(["/bin/sh", "-c", command.replace("$$", "$").replace("%%", "%")], check=True, timeout=10,
                   env={"PATH": "/usr/bin:/bin", "RUNTIME_DIRECTORY": str(tmp_path), **variables})
    written = tmp_path / "smtp_password"
    assert written.read_text() == "s3cr;t pass" and written.stat().st_mode & 0o077 == 0
    config = (ALERTMANAGER_DIR / "alertmanager.yml").read_text()
    assert "auth_password_file: /run/irisflow-alertmanager/smtp_password" in config
    assert not re.search(r"^\s*(smtp_)?auth_password:", config, re.MULTILINE)
    failed = subprocess.run(["/bin/sh", "-c", command.replace("$$", "$").replace("%%", "%")], timeout=10,
                            env={"PATH": "/usr/bin:/bin", "RUNTIME_DIRECTORY": str(tmp_path)}, capture_output=True)
    assert failed.returncode != 0 and b"missing in /etc/irisflow/environment" in failed.stderr


def test_every_alert_is_tested_firing_and_quiet(shipped_prometheus):
    """A rule without both cases in alerts_test.yml could be always or never firing unnoticed."""
    text = (PROMETHEUS_DIR / "alerts_test.yml").read_text()
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", text)
    names = {rule["name"] for rule in alert_rules(shipped_prometheus)}
    assert names - {name for name, empty in cases if not empty} == set(), "never tested firing"
    assert names - {name for name, empty in cases if empty} == set(), "never tested quiet"


def test_every_alert_tells_the_on_call_what_happened_and_what_to_do(shipped_prometheus):
    """An alert without a summary, a description naming a command, or a severity is not actionable."""
    rules = alert_rules(shipped_prometheus)
    assert {rule["name"] for rule in rules} >= {
        "IrisflowLastRunFailed", "IrisflowStale", "IrisflowValidationRejected", "IrisflowDaemonDown",
        "IrisflowCatchupMissingDates", "IrisflowEmailFailing", "IrisflowModelAccuracyLow"}
    for rule in rules:
        assert rule["annotations"]["summary"].strip(), rule["name"]
        assert "`" in rule["annotations"]["description"], f"{rule['name']}: the description names no command"
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["name"]


def test_dashboard_expressions_parse(tmp_path):
    """Each panel query, as Grafana sends it, through promtool's parser (as recording rules; JSON
    is YAML)."""
    rules = [{"record": f"irisflow:dashboard_check:{i}", "expr": expr}
             for i, expr in enumerate(dashboard_expressions())]
    (tmp_path / "dashboard_rules.yml").write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)


def test_dashboard_shows_what_the_on_call_needs():
    """Run outcomes, durations, freshness, validation, accuracy per model and mail (issue 4)."""
    shown = set().union(*map(metric_names, dashboard_expressions()))
    assert shown >= {"irisflow_pipeline_runs_total", "irisflow_run_duration_seconds_sum",
                     "irisflow_task_duration_seconds_sum", "irisflow_last_success_timestamp_seconds",
                     "irisflow_rows_validated_total", "irisflow_rows_rejected_total",
                     "irisflow_model_accuracy_ratio", "irisflow_emails_sent_total",
                     "irisflow_email_failures_total"}


def test_alerts_and_dashboard_name_only_metrics_the_service_exports(shipped_prometheus, scraped_names):
    """A misspelt or renamed metric makes an alert that never fires and a panel with no data."""
    expressions = {f"alert {rule['name']}": rule["query"] for rule in alert_rules(shipped_prometheus)}
    expressions.update((f"dashboard: {expr}", expr) for expr in dashboard_expressions())
    unknown = {where: sorted(metric_names(expr) - scraped_names - SYNTHETIC)
               for where, expr in expressions.items()}
    assert {where: names for where, names in unknown.items() if names} == {}
    assert all(metric_names(expr) for expr in expressions.values()), "an expression names no metric"


def test_dashboard_layout_is_valid():
    """Grafana drops or overlaps panels with duplicate ids or clashing grid positions."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = [(panel["gridPos"]["x"] + dx, panel["gridPos"]["y"] + dy) for panel in panels
             for dx in range(panel["gridPos"]["w"]) for dy in range(panel["gridPos"]["h"])]
    assert len(cells) == len(set(cells)), "panels overlap"
    assert all(x < 24 for x, _ in cells), "a panel is wider than the 24-column grid"
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in panels)
    assert dashboard["uid"] == "irisflow"


@pytest.mark.slow
def test_prometheus_scrapes_the_running_daemon(irisflow_config, tmp_path):
    """A real Prometheus with the shipped config and rules scrapes a real `python -m service serve`
    whose start-up pass builds one date: the series the daemon exports arrive, the dashboard's queries
    run and show the run, every alert rule evaluates without error on real data with the daemon-down
    alert quiet; SIGTERM then stops the daemon with status 0."""
    port = free_port()
    irisflow_config.set("service", metrics_address="127.0.0.1", metrics_port=port, schedule="0 3 1 1 *",
                        catchup_days=1)
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO, env=irisflow_config.env(),
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        poll("the daemon's /metrics", lambda: running(daemon, log_path) and fetch(metrics_url), timeout=30.0,
             retry_on=(OSError,))
        config_dir = tmp_path / "prometheus"
        config_dir.mkdir()
        shipped_config_scraping(config_dir, f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
        prometheus = Prometheus(config_dir)
        try:
            check_prometheus_sees_the_daemon(prometheus, lambda: running(daemon, log_path) and fetch(metrics_url))
        finally:
            prometheus.stop()
    finally:
        daemon.send_signal(signal.SIGTERM)
        status = daemon.wait(timeout=60)
    assert status == 0, log_path.read_text()


def check_prometheus_sees_the_daemon(prometheus, scrape):
    def query(expr):
        return prometheus.api("query", query=expr)["result"]

    def run_recorded():
        """The pass's last update (the missing-dates gauge) scraped together with its first (accuracy)."""
        return query('count(irisflow_model_accuracy_ratio{job="irisflow"}) == 5 '
                     'and on () irisflow_catchup_missing_dates{job="irisflow"} == 0')

    poll("the start-up run's results in Prometheus", run_recorded, timeout=60, retry_on=(OSError,))
    exported = set(re.findall(r"^(irisflow_\w+)[{ ]", scrape(), re.MULTILINE))
    assert {"irisflow_task_duration_seconds_bucket", "irisflow_rows_validated_total"} <= exported

    def ingested():
        names = {series["metric"]["__name__"] for series in query('{job="irisflow", __name__=~"irisflow_.+"}')}
        return names if names >= exported else None

    poll("every series the daemon exports in Prometheus", ingested, timeout=30.0, retry_on=(OSError,))
    assert [series["metric"]["version"] for series in query("irisflow_build_info")] == [__version__]
    assert [series["value"][1] for series in query('irisflow_pipeline_runs_total{outcome="success"}')] == ["1"]

    results = {expr: query(expr) for expr in dashboard_expressions()}  # a bad query fails in api()
    shown = {name for expr, result in results.items() if result for name in metric_names(expr)}
    assert {"irisflow_last_run_success", "irisflow_last_success_timestamp_seconds", "irisflow_model_accuracy_ratio",
            "irisflow_last_completed_partition_timestamp_seconds", "irisflow_next_run_timestamp_seconds", "up",
            "irisflow_build_info"} <= shown

    seen_run = time.time()

    def evaluated_rules():
        """The rules, once all were evaluated after Prometheus had the run's results."""
        rules = {rule["name"]: rule for rule in alert_rules(prometheus)}
        return rules if min(map(unix_time, (rule["lastEvaluation"] for rule in rules.values()))) > seen_run else None

    rules = poll("every alert rule evaluated on the run's results", evaluated_rules, timeout=30.0,
                 retry_on=(OSError,))
    assert {name: rule["lastError"] for name, rule in rules.items() if rule["health"] != "ok"} == {}
    active = {name: rule["alerts"] for name, rule in rules.items() if rule["state"] != "inactive"}
    assert set(active) <= {"LuigidDown"}, active


def unix_time(rfc3339):
    """Prometheus' timestamps (nanoseconds, Z) as Unix time."""
    seconds, _, fraction = rfc3339.removesuffix("Z").partition(".")
    return dt.datetime.fromisoformat(seconds).replace(tzinfo=dt.timezone.utc).timestamp() + float(f"0.{fraction or 0}")
