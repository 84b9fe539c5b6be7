"""Run reports become Prometheus metrics; one-shot runs hand them over as a textfile or a push."""
import datetime as dt
import json
import socket
import subprocess
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, poll, tool, write_input
from service.reporting import metrics
from service.cli import main
from service.runner import run_dates

DAY = dt.date(2026, 11, 24)
BAD_DAY = DAY + dt.timedelta(days=1)
SPECIES_CHECK = "isin(('setosa', 'versicolor', 'virginica'))"


def sample(name, **labels):
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot():
    """Every sample of the registry, by (name, labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics.REGISTRY.collect() for s in family.samples}


def test_a_run_report_updates_every_metric_and_a_skipped_date_counts_nothing(irisflow_config, tmp_path):
    irisflow_config.set("iris", source=str(tmp_path / "in" / "{date}.csv"), models='["knn", "svc"]')
    write_input(tmp_path / "in", BAD_DAY, bad=True)
    write_input(tmp_path / "in", DAY)
    metrics.LAST_PARTITION.set(0)  # the registry is per process: forget dates other tests completed
    before = snapshot()
    report = run_dates([DAY, BAD_DAY])
    metrics.record(report, now=1_800_000_000)

    def delta(name, **labels):
        return sample(name, **labels) - before.get((name, tuple(sorted(labels.items()))), 0.0)

    assert delta("irisflow_pipeline_runs_total", outcome="success") == 1
    assert delta("irisflow_pipeline_runs_total", outcome="failure") == 1
    assert delta("irisflow_run_duration_seconds_count") == 1
    assert sample("irisflow_last_run_success") == 0
    assert delta("irisflow_task_duration_seconds_count", task_family="TrainModel") == 2
    assert delta("irisflow_task_failures_total", task_family="Validate") == 1
    assert delta("irisflow_rows_validated_total") == 150 and delta("irisflow_rows_rejected_total") == 150
    assert delta("irisflow_validation_failures_total", check=SPECIES_CHECK) == 1
    assert sample("irisflow_last_success_timestamp_seconds") == 1_800_000_000
    assert sample("irisflow_last_completed_partition_timestamp_seconds") == \
        dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc).timestamp()
    summary = json.loads((irisflow_config.output_root / str(DAY) / "summary.json").read_text())
    assert sample("irisflow_model_accuracy_ratio", model="svc") == summary["models"]["svc"]["accuracy"]

    before = snapshot()
    metrics.record(run_dates([DAY]))
    assert snapshot() == before


def test_names_follow_prometheus_conventions_and_no_series_has_a_date_label():
    families = list(text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()))
    assert families and all(f.name.startswith("irisflow_") for f in families)
    for family in families:
        assert family.type != "counter" or all(s.name.endswith("_total") for s in family.samples)
        assert all("date" not in s.labels for s in family.samples)
    assert sample("irisflow_build_info", version="0.1.0", python=__import__("platform").python_version(),
                  luigi=__import__("luigi").__version__) == 1


def test_run_writes_a_node_exporter_textfile_atomically(irisflow_config, tmp_path):
    folder = tmp_path / "textfiles"
    folder.mkdir()
    assert main(["run", "--date", str(DAY), "--metrics-textfile", str(folder / "irisflow.prom")]) == 0
    assert [p.name for p in folder.iterdir()] == ["irisflow.prom"]  # no temporary file left beside it
    families = {f.name: f for f in text_string_to_metric_families((folder / "irisflow.prom").read_text())}
    runs = {s.labels["outcome"]: s.value for s in families["irisflow_pipeline_runs"].samples}
    assert runs["success"] >= 1
    assert families["irisflow_last_success_timestamp_seconds"].samples[0].value > 0


@pytest.fixture
def pushgateway(tmp_path):
    """Debian's prometheus-pushgateway on a free loopback port (`make tools` installs it): its URL."""
    port = free_port()
    server = subprocess.Popen([tool("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        poll("the Pushgateway to be ready", lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=5).status == 200,
             retry_on=(OSError,))
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_run_pushes_its_metrics_to_a_pushgateway(irisflow_config, pushgateway):
    assert main(["run", "--date", str(DAY), "--pushgateway", pushgateway]) == 0
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    group = {"job": "irisflow_batch", "instance": socket.gethostname()}
    runs = [s for s in families["irisflow_pipeline_runs"].samples
            if s.name == "irisflow_pipeline_runs_total" and s.labels.items() >= {**group, "outcome": "success"}.items()]
    assert len(runs) == 1 and runs[0].value >= 1
    pushed = [s for s in families["push_time_seconds"].samples if s.labels.items() >= group.items()]
    assert len(pushed) == 1 and pushed[0].value > 0


def test_unusable_metrics_destinations_are_refused_before_any_work(irisflow_config, tmp_path, capsys):
    assert main(["run", "--date", str(DAY), "--pushgateway", "ftp://example.invalid"]) == 2
    assert main(["run", "--date", str(DAY), "--metrics-textfile", str(tmp_path / "nowhere" / "x.prom")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(line.startswith("irisflow: error: --") for line in errors)
    assert not irisflow_config.output_root.exists()


def test_an_unreachable_pushgateway_fails_the_run_with_one_line(irisflow_config, capsys):
    assert main(["run", "--date", str(DAY), "--pushgateway", f"http://127.0.0.1:{free_port()}"]) == 1
    said = capsys.readouterr()
    error, = said.err.splitlines()
    assert error.startswith("irisflow: error: metrics not delivered:")
    assert said.out.startswith(f"{DAY}: done in")  # the run itself is still told
    assert (irisflow_config.output_root / str(DAY) / "summary.json").is_file()
