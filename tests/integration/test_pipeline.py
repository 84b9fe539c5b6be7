"""The pipeline for a date: every target, idempotence, and the stock Luigi command."""
import datetime as dt
import json
import os
import subprocess
import sys

import luigi
import pytest

from conftest import REPO
from service.runner import run_dates
from tasks import partition
from tasks.iris import IrisPipeline

DAY = dt.date(2026, 11, 24)


def _tree(root):
    """Every file under root with its size and modification time."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def test_a_date_produces_every_target(irisflow_config):
    report = run_dates([DAY])
    assert [o.status for o in report.outcomes] == ["success"]
    part = irisflow_config.output_root / DAY.isoformat()
    summary = json.loads((part / "summary.json").read_text())
    assert set(summary["models"]) == {"logistic_regression", "random_forest", "svc", "knn", "decision_tree"}
    assert summary["best_model"] in summary["models"]
    for name in summary["manifest"]:
        assert (part / name).is_file(), name
    assert {"input.csv", "validated.csv", "validation.json"} <= set(summary["manifest"])
    assert sum(name.endswith("model.joblib") for name in summary["manifest"]) == 5
    metrics = json.loads(next(part.glob("models/svc-*/metrics.json")).read_text())
    assert 0.8 <= metrics["accuracy"] <= 1 and len(metrics["confusion_matrix"]) == 3
    assert metrics["settings"]["features"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert not list(irisflow_config.output_root.rglob("*.tmp-*"))


def test_a_second_run_executes_no_task_and_changes_no_file(irisflow_config):
    run_dates([DAY])
    before = _tree(irisflow_config.output_root / DAY.isoformat())
    report = run_dates([DAY])
    assert report.outcomes[0].status == "skipped" and report.outcomes[0].tasks == []
    assert _tree(irisflow_config.output_root / DAY.isoformat()) == before
    # Luigi itself, asked directly, also finds nothing to do.
    result = luigi.build([IrisPipeline(date=DAY)], local_scheduler=True, detailed_summary=True,
                         log_level="WARNING")
    assert "1 complete ones were encountered" in result.summary_text
    assert "ran successfully" not in result.summary_text
    assert _tree(irisflow_config.output_root / DAY.isoformat()) == before


def test_model_parameters_never_collide(irisflow_config):
    run_dates([DAY])
    irisflow_config.set("iris", models='["knn"]', hyperparameters='{"knn": {"n_neighbors": 3}}')
    report = run_dates([DAY], force=True)
    assert report.outcomes[0].status == "success"
    knn_dirs = sorted(p.name for p in (irisflow_config.output_root / DAY.isoformat() / "models").iterdir())
    assert len(knn_dirs) == 1 and knn_dirs[0].startswith("knn-")
    metrics = json.loads(next((irisflow_config.output_root / DAY.isoformat()).glob("models/knn-*/metrics.json"))
                         .read_text())
    assert metrics["settings"]["hyperparameters"] == {"n_neighbors": 3}


def test_deleting_one_model_makes_the_date_incomplete_and_only_that_piece_reruns(irisflow_config):
    run_dates([DAY])
    part = irisflow_config.output_root / DAY.isoformat()
    victim = next(part.glob("models/svc-*/model.joblib"))
    victim.unlink()
    assert partition.inspect(irisflow_config.output_root, DAY).problems == [f"{victim.relative_to(part).as_posix()}: absent"]
    report = run_dates([DAY])
    # The rebuilt model has the same bytes (seeded), so the summary still seals the partition as it is.
    assert sorted(family for family, _, _ in report.outcomes[0].tasks) == ["TrainModel"]
    assert victim.is_file() and partition.is_complete(irisflow_config.output_root, DAY)


def test_the_stock_luigi_command_runs_the_pipeline(irisflow_config):
    luigi_cli = os.path.join(os.path.dirname(sys.executable), "luigi")
    result = subprocess.run([luigi_cli, "--module", "tasks.iris", "IrisPipeline", "--date", DAY.isoformat(),
                             "--local-scheduler"], cwd=REPO, env=irisflow_config.env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert partition.is_complete(irisflow_config.output_root, DAY)


def test_a_task_found_done_stays_done_for_its_instance_and_a_fresh_instance_looks_again(irisflow_config):
    run_dates([DAY])
    extract = IrisPipeline(date=DAY).requires()["drift"].requires().requires()
    assert extract.complete()
    (irisflow_config.output_root / DAY.isoformat() / "input.csv").unlink()
    assert extract.complete()  # remembered for the rest of the build, as Luigi's own completion cache does
    luigi.task_register.Register.clear_instance_cache()  # the runner does this after each build
    fresh = IrisPipeline(date=DAY).requires()["drift"].requires().requires()
    assert fresh is not extract and not fresh.complete()


def test_the_assistant_worker_asks_for_work_with_fresh_task_instances(irisflow_config):
    from service.central.worker import _AssistantWorker

    before = IrisPipeline(date=DAY)
    with _AssistantWorker(scheduler=luigi.scheduler.Scheduler(), assistant=True) as worker:
        assert IrisPipeline(date=DAY) is before
        worker._get_work()
        assert IrisPipeline(date=DAY) is not before


def test_the_rehearsal_runs_every_configured_model_and_a_bad_setting_is_left_to_the_task(irisflow_config):
    from tasks import config
    from tasks.rehearsal import made_up_rows, rehearse

    thresholds = config.quality().thresholds()
    assert len(made_up_rows()) == 30
    rehearse(config.settings(), thresholds)  # raises if any step or model fails on valid rows
    irisflow_config.set("iris", models='["knn"]', hyperparameters='{"knn": {"n_neighbors": 1000}}')
    config.settings.cache_clear()
    with pytest.raises(ValueError, match="n_neighbors"):
        rehearse(config.settings(), thresholds)
    # A process forking task processes rehearses before its first fork: its failure is no task's; TrainModel's is.
    luigi_cli = os.path.join(os.path.dirname(sys.executable), "luigi")
    result = subprocess.run([luigi_cli, "--module", "tasks.iris", "IrisPipeline", "--date", DAY.isoformat(),
                             "--local-scheduler", "--workers", "2"], cwd=REPO, env=irisflow_config.env(),
                            capture_output=True, text=True, timeout=300)
    assert "n_neighbors" in result.stderr and "failed tasks" in result.stderr
    done = {path.name for path in (irisflow_config.output_root / DAY.isoformat() / ".receipts").iterdir()}
    assert {name.split("-")[0] for name in done} == {"Extract", "Validate", "Drift", "Split"}


def test_the_rehearsal_runs_before_a_first_fork_only_and_the_child_inherits_what_it_loaded(irisflow_config):
    """A process that runs its tasks itself never rehearses; one that forks task processes rehearses once,
    just before its first fork, so the child finds the modules the steps load on first use already there."""
    probe = """
import os, sys
from tasks.warmup import import_heavy_libraries
import_heavy_libraries()
lazy = "narwhals._pandas_like.dataframe"  # loaded on a DataFrame's first validation, not on import
print("before fork:", "tasks.rehearsal" in sys.modules, lazy in sys.modules)
reader, writer = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(writer, str(lazy in sys.modules).encode())
    os._exit(0)
os.waitpid(pid, 0)
print("child had it:", os.read(reader, 10).decode())
"""
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=irisflow_config.env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["before fork: False False", "child had it: True"]
