"""A run killed with SIGKILL in the middle of a task leaves nothing that looks complete."""
import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from tasks import partition

DAY = "2026-11-24"


def _whole(path):
    """Parse a target fully: a half-written file fails here."""
    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".csv":
        lines = path.read_text().splitlines()
        assert lines and all(line.count(",") == lines[0].count(",") for line in lines), path
    elif path.suffix == ".joblib":
        import joblib

        joblib.load(path)


@pytest.mark.slow
def test_sigkill_mid_task_leaves_no_complete_looking_target_and_the_next_run_finishes(irisflow_config, cli):
    # A big forest makes TrainModel slow enough to be killed while it runs.
    irisflow_config.set("iris", models='["random_forest", "knn"]',
                        hyperparameters='{"random_forest": {"n_estimators": 3000}}')
    part = irisflow_config.output_root / DAY
    process = subprocess.Popen([sys.executable, "-m", "service", "run", "--date", DAY], cwd=REPO,
                               env=irisflow_config.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (part / "split").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    assert not (part / "summary.json").exists()
    assert not partition.is_complete(irisflow_config.output_root, partition.parse_date(DAY))
    for path in part.rglob("*"):
        if path.is_file() and ".tmp-" not in path.name:
            _whole(path)

    again = cli("run", "--date", DAY)
    assert again.returncode == 0, again.stderr
    assert partition.is_complete(irisflow_config.output_root, partition.parse_date(DAY))
    assert not list(part.rglob("*.tmp-*"))
