"""The shipped monitoring files and the real Prometheus and Alertmanager the e2e tests run them in:
where the files are, how a Prometheus is started on loopback, and what a dashboard's queries name."""
import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest
from conftest import REPO, free_port, poll, tool

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"


ALERTMANAGER_DIR = REPO / "deploy" / "alertmanager"


ALERTMANAGER_DEFAULT = "127.0.0.1:9093"  # where the shipped prometheus.yml sends alerts


DASHBOARD = REPO / "deploy" / "grafana" / "irisflow.json"


# Series Prometheus itself adds to every target; the only names not exported by the service.
SYNTHETIC = {"up"}


# What Grafana substitutes into an expression before Prometheus parses it.
GRAFANA_VARIABLES = {"$__interval": "1h", "$__rate_interval": "2m", "$instance": ".*", "$job": "irisflow"}


PROMQL_WORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
                "group_right", "offset", "inf", "nan"}


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def get_json(url):
    return json.loads(fetch(url))


def running(process, log_path):
    """True while a server under test runs; a failure with its log as soon as it has exited."""
    if process.poll() is not None:
        pytest.fail(f"{process.args[0]} exited with {process.returncode}:\n{log_path.read_text()}")
    return True


class Prometheus:
    """A real prometheus server on a free loopback port, with its data in a temp dir."""

    def __init__(self, config_dir):
        self.url = f"http://127.0.0.1:{free_port()}"
        log_path = config_dir / "prometheus.log"
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                [tool("prometheus"), "--config.file=prometheus.yml", f"--storage.tsdb.path={config_dir / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}"],
                cwd=config_dir, stdout=log, stderr=subprocess.STDOUT)
        poll("prometheus to be ready", lambda: running(self.process, log_path) and fetch(self.url + "/-/ready"),
             timeout=30.0, retry_on=(OSError,))

    def api(self, path, **params):
        body = get_json(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert body["status"] == "success", body
        return body["data"]

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def dashboard_expressions():
    """Every PromQL expression of the dashboard, with Grafana's variables substituted."""
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(SELECTOR, label): the selector is PromQL
            expressions.append(re.fullmatch(r"label_values\((.*), *\w+\)", variable["definition"]).group(1))
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expressions = [expr.replace(name, value) for expr in expressions]
    assert not [expr for expr in expressions if "$" in expr], "a Grafana variable this test does not expand"
    return expressions


def metric_names(expr):
    """The metric names an expression selects: identifiers left after strings, label matchers,
    ranges, grouping clauses and offsets are removed, that are neither keywords nor function calls."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\boffset\s+-?\w+", " ", expr)
    return set(re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()", expr)) - PROMQL_WORDS


def exported_names(exposition):
    """Series names a scrape yields, from its # TYPE lines (which stand even for a labelled metric
    with no child yet): histograms expand to _bucket/_sum/_count, counters end in _total."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count"),
                "counter": ("_total",)}
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        if kind == "counter":
            name = name.removesuffix("_total")
        names.update(name + suffix for suffix in suffixes.get(kind, ("",)))
    return names


def shipped_config_scraping(config_dir, irisflow_target, luigid_target, alertmanager_target=None):
    """The shipped prometheus.yml and alerts.yml, pointed at this test's servers (alerts to a free port
    unless an Alertmanager is given), every second."""
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    text = text.replace("127.0.0.1:9733", irisflow_target).replace("127.0.0.1:8082", luigid_target)
    text = text.replace(ALERTMANAGER_DEFAULT, alertmanager_target or f"127.0.0.1:{free_port()}")
    (config_dir / "prometheus.yml").write_text(re.sub(r"(scrape|evaluation)_interval: \w+", r"\1_interval: 1s", text))
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", config_dir / "alerts.yml")
