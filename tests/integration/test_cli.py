"""The CLI as a user meets it: exit statuses, one-line errors, backfill ranges, status, validate, --force."""
import datetime as dt
import json

import pytest

from conftest import IRIS_CSV, PartitionFiles, free_port
from tasks import partition

DAY = "2026-11-24"


def _one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("irisflow: error:"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["run", "--date", "2026-02-30"], "no such day"),
    (["run", "--date", "../../etc"], "expected YYYY-MM-DD"),
    (["backfill", "--start", "2026-11-24", "--end", "2026-11-01"], "after end"),
    (["backfill", "--start", "2026-11-01"], "--end"),
    (["run", "--workers", "0"], "at least 1"),
    (["frobnicate"], "invalid choice"),
    (["validate", "/nonexistent.csv"], "no such file"),
])
def test_bad_usage_exits_2_with_one_line(cli, args, words):
    result = cli(*args)
    assert result.returncode == 2
    assert words in _one_line_error(result)


def test_worker_without_a_central_scheduler_exits_2_and_with_luigid_down_exits_1(irisflow_config, cli):
    """Exit 2 is bad configuration, which systemd does not restart; exit 1 (luigid down) it restarts."""
    alone = cli("worker")
    assert alone.returncode == 2
    assert "worker needs a central scheduler" in _one_line_error(alone)
    irisflow_config.set("core", default_scheduler_host="127.0.0.1", default_scheduler_port=free_port())
    down = cli("worker")
    assert down.returncode == 1
    assert "not reachable" in _one_line_error(down)


def test_unknown_model_in_config_exits_2(irisflow_config, cli):
    irisflow_config.set("iris", models='["knn", "deep_magic"]')
    result = cli("run", "--date", DAY)
    assert result.returncode == 2
    assert "deep_magic" in _one_line_error(result)
    assert not irisflow_config.output_root.exists()


def test_unparsable_config_value_exits_2(irisflow_config, cli):
    irisflow_config.set("iris", test_size="a third")
    result = cli("run", "--date", DAY)
    assert result.returncode == 2 and "test_size" in _one_line_error(result)


def test_run_prints_models_and_where_outputs_are(irisflow_config, cli):
    result = cli("run", "--date", DAY)
    assert result.returncode == 0, result.stderr
    assert str(irisflow_config.output_root / DAY) in result.stdout
    for model in ("logistic_regression", "random_forest", "svc", "knn", "decision_tree"):
        assert model in result.stdout
    again = cli("run", "--date", DAY)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_backfill_exit_1_lists_failed_dates_and_other_dates_complete(irisflow_config, cli, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for day in ("2026-11-01", "2026-11-03"):
        (incoming / f"{day}.csv").write_bytes(IRIS_CSV.read_bytes())
    (incoming / "2026-11-02.csv").write_text(IRIS_CSV.read_text().replace("setosa", "setosaa", 3))
    irisflow_config.set("iris", source=f"{incoming}/{{date}}.csv")
    result = cli("backfill", "--start", "2026-11-01", "--end", "2026-11-04")
    assert result.returncode == 1
    assert "1 date FAILED (validation) in Validate: 2026-11-02" in result.stderr
    assert "1 date FAILED (missing_input) in IrisData: 2026-11-04" in result.stderr
    assert "isin" in result.stderr and "species" in result.stderr  # the failing check and column
    assert "input not found" in result.stderr
    root = irisflow_config.output_root
    assert partition.is_complete(root, dt.date(2026, 11, 1)) and partition.is_complete(root, dt.date(2026, 11, 3))
    status = json.loads(cli("status", "--json").stdout)
    states = {row["date"]: (row["state"], row.get("reason")) for row in status}
    assert states == {"2026-11-01": ("complete", None), "2026-11-02": ("failed", "validation"),
                      "2026-11-03": ("complete", None), "2026-11-04": ("failed", "missing_input")}
    # The input arrives and is corrected: the next backfill runs only the two failed dates.
    (incoming / "2026-11-02.csv").write_bytes(IRIS_CSV.read_bytes())
    (incoming / "2026-11-04.csv").write_bytes(IRIS_CSV.read_bytes())
    again = cli("backfill", "--start", "2026-11-01", "--end", "2026-11-04")
    assert again.returncode == 0 and "2 ran, 2 already complete, 0 failed" in again.stdout
    assert not (root / "failed" / "2026-11-02").exists()


def test_status_names_what_is_missing(irisflow_config, cli):
    assert cli("run", "--date", DAY).returncode == 0
    victim = next((irisflow_config.output_root / DAY).glob("models/knn-*/metrics.json"))
    victim.unlink()
    result = cli("status", "--start", "2026-11-23", "--end", DAY)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["2026-11-23", "missing"]
    assert lines[1].startswith("2026-11-24  incomplete") and victim.parent.name in lines[1]


def test_validate_reports_pass_and_rejection(cli, tmp_path):
    ok = cli("validate", str(IRIS_CSV))
    assert ok.returncode == 0 and "validation passed: 150 of 150 rows valid" in ok.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(IRIS_CSV.read_text().replace("5.1,3.5", "-5.1,3.5", 1))
    rejected = cli("validate", str(bad))
    assert rejected.returncode == 1
    assert str(bad) in rejected.stdout and "sepal_length" in rejected.stdout
    assert "greater_than(0)" in rejected.stdout and "line 2" in rejected.stdout


def test_force_replaces_outputs_only_once_new_ones_are_complete(backend_config, cli, tmp_path):
    root = backend_config.output_root
    files = PartitionFiles(root, DAY)
    assert cli("run", "--date", DAY).returncode == 0
    old_summary = files.read(partition.SUMMARY)
    # A forced run whose input is now broken fails and leaves the old, complete outputs in place.
    broken = tmp_path / "broken.csv"
    broken.write_text("sepal_length,species\n1.0,setosa\n")
    backend_config.set("iris", source=str(broken))
    failed = cli("run", "--date", DAY, "--force")
    assert failed.returncode == 1
    assert files.read(partition.SUMMARY) == old_summary and partition.is_complete(root, DAY)
    # A forced run with other parameters replaces the partition as a whole.
    backend_config.set("iris", source=str(IRIS_CSV), models='["knn"]')
    forced = cli("run", "--date", DAY, "--force")
    assert forced.returncode == 0, forced.stderr
    summary = json.loads(files.read(partition.SUMMARY))
    assert list(summary["models"]) == ["knn"]
    assert {name.split("/")[1].split("-")[0] for name in files.names() if name.startswith("models/")} == {"knn"}
    assert partition.durable.files_in(partition.location(root) / partition.STAGING) == {}


def test_status_shows_a_failure_record_without_an_error_text(irisflow_config, cli):
    """A failure record written by another version (no error text) is shown, never a traceback."""
    record = irisflow_config.output_root / "failed" / DAY / "failure.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"date": DAY, "step": "Split", "reason": "error", "error": None}))
    result = cli("status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{DAY}  failed     error in Split", "dates: 1 failed", f"output root: {irisflow_config.output_root}"
    ]
