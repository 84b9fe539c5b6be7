"""Faults injected for real (a full disk, a read-only directory, a dead central scheduler, a concurrent
run, a deleted output): each costs a clear message and nothing else, and the next run recovers."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO, free_port, metric_samples, no_partial_files, task_runs
from tasks import partition

DAY = "2026-11-24"


def _fails_cleanly(result, reason):
    """Exit 1, the date's failure named with its reason, and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{DAY}: FAILED ({reason})" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB tmpfs: (mount point, a function that grows it). Needs root and mount rights."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount_point)], check=True)

    yield mount_point, grow
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def cli_without_root_override(config, *args):
    """The CLI as root but without CAP_DAC_OVERRIDE, so permission bits apply to it as to any user."""
    return subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
                           sys.executable, "-m", "service", *args], cwd=REPO, env=config.env(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_full_disk_fails_the_task_cleanly_and_the_next_run_after_freeing_space_succeeds(
        irisflow_config, cli, small_disk):
    disk, grow = small_disk
    # A 400-tree forest is about 600 KiB: more than the disk holds once the earlier targets are written.
    irisflow_config.set("iris", output_root=disk, models='["random_forest"]',
                        hyperparameters='{"random_forest": {"n_estimators": 400}}')
    full = cli("run", "--date", DAY)
    _fails_cleanly(full, "storage")
    assert "no space left on device" in full.stderr and "model.joblib" in full.stderr
    no_partial_files(disk)
    assert not (disk / DAY / "summary.json").exists()
    status = cli("status", "--start", DAY, "--end", DAY)
    assert status.stdout.split()[:4] == [DAY, "failed", "storage", "in"], status.stdout

    grow()
    again = cli("run", "--date", DAY)
    assert again.returncode == 0, again.stderr
    assert partition.is_complete(disk, partition.parse_date(DAY))
    assert not (disk / "failed" / DAY).exists()


@pytest.mark.slow
def test_an_unwritable_output_root_fails_every_date_with_one_clear_message(irisflow_config):
    root = irisflow_config.output_root
    root.mkdir()
    root.chmod(0o555)
    try:
        result = cli_without_root_override(irisflow_config, "run", "--date", DAY)
    finally:
        root.chmod(0o755)
    _fails_cleanly(result, "storage")
    assert f"permission denied: {root}/.locks" in result.stderr
    assert list(root.iterdir()) == []


@pytest.mark.slow
def test_a_directory_made_read_only_mid_history_fails_that_task_and_recovers(irisflow_config, cli):
    irisflow_config.set("iris", models='["knn", "decision_tree"]')
    assert cli("run", "--date", DAY).returncode == 0
    part = irisflow_config.output_root / DAY
    model = next(part.glob("models/knn-*/model.joblib"))
    model.unlink()
    model.parent.chmod(0o555)
    try:
        result = cli_without_root_override(irisflow_config, "run", "--date", DAY)
    finally:
        model.parent.chmod(0o755)
    _fails_cleanly(result, "storage")
    assert f"permission denied: {model}" in result.stderr
    no_partial_files(irisflow_config.output_root)
    assert json.loads((irisflow_config.output_root / "failed" / DAY / "failure.json").read_text())["step"] == \
        "TrainModel"

    again = cli("run", "--date", DAY)
    assert again.returncode == 0, again.stderr
    assert model.is_file() and not (irisflow_config.output_root / "failed" / DAY).exists()


@pytest.mark.slow
def test_a_central_scheduler_that_is_down_fails_fast_and_clearly_and_the_next_run_uses_it(
        irisflow_config, cli, request):
    irisflow_config.set("core", default_scheduler_host="127.0.0.1", default_scheduler_port=free_port(),
                        rpc_retry_attempts=3, rpc_retry_wait=30)
    started = time.monotonic()
    down = cli("run", "--date", DAY)
    assert time.monotonic() - started < 60, "waited out Luigi's RPC retries"
    _fails_cleanly(down, "scheduler")
    assert "not reachable" in down.stderr and "start luigid" in down.stderr
    record = json.loads((irisflow_config.output_root / "failed" / DAY / "failure.json").read_text())
    assert record["reason"] == "scheduler"

    request.getfixturevalue("luigid")  # a real luigid is up now, and the configuration points at it
    again = cli("run", "--date", DAY)
    assert again.returncode == 0, again.stderr
    assert partition.is_complete(irisflow_config.output_root, partition.parse_date(DAY))


@pytest.mark.slow
def test_two_runs_of_the_same_date_at_once_do_its_work_once(backend_config):
    """On a disk the task locks keep them apart, on a store the leases: one run holds the date's lease, the
    other's tasks wait for it."""
    backend_config.set("iris", models='["random_forest"]',
                       hyperparameters='{"random_forest": {"n_estimators": 300}}')
    prom = {verb: backend_config.path.parent / f"{verb}.prom" for verb in ("run", "backfill")}
    runs = [subprocess.Popen([sys.executable, "-m", "service", verb, *args, "--metrics-textfile", str(prom[verb])],
                             cwd=REPO, env=backend_config.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for verb, args in (("run", ["--date", DAY]), ("backfill", ["--start", DAY, "--end", DAY]))]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    # Each waits for a task the other holds and then finds it done: together they do each task once.
    assert task_runs(*(metric_samples(path.read_text()) for path in prom.values())) == {
        "Extract": 1, "Validate": 1, "Drift": 1, "Split": 1, "TrainModel": 1, "IrisPipeline": 1}
    no_partial_files(backend_config.output_root)
    assert partition.is_complete(backend_config.output_root, partition.parse_date(DAY))


def test_a_deleted_model_shows_in_status_and_only_that_piece_is_rebuilt(irisflow_config, cli):
    irisflow_config.set("iris", models='["knn", "decision_tree"]')
    assert cli("run", "--date", DAY).returncode == 0
    part = irisflow_config.output_root / DAY
    victim = next(part.glob("models/knn-*/model.joblib"))
    untouched = {p: p.stat().st_mtime_ns for p in part.rglob("*")  # all but the model's task and the summary
                 if p.is_file() and victim.parent not in p.parents and p.name != "summary.json"
                 and not (p.parent.name == ".receipts" and victim.parent.name in p.read_text())}
    victim.unlink()

    status = cli("status", "--json", "--start", DAY, "--end", DAY)
    row = json.loads(status.stdout)[0]
    assert row["state"] == "incomplete" and row["problems"] == [f"{victim.relative_to(part).as_posix()}: absent"]

    assert cli("run", "--date", DAY).returncode == 0
    assert victim.is_file()
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    assert json.loads(cli("status", "--json", "--start", DAY, "--end", DAY).stdout)[0]["state"] == "complete"


@pytest.mark.slow
def test_a_fifo_as_input_is_refused_instead_of_blocking_the_run(irisflow_config, cli, tmp_path):
    incoming = tmp_path / "in"
    incoming.mkdir()
    os.mkfifo(incoming / f"{DAY}.csv")
    irisflow_config.set("iris", source=incoming / "{date}.csv")
    result = cli("run", "--date", DAY, timeout=120)
    _fails_cleanly(result, "validation")
    assert "not a regular file" in result.stderr
