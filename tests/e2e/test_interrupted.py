"""A run killed with SIGKILL in the middle of a task leaves nothing that looks complete, on a local disk and
on object storage, and the next run finishes the date; on the store the killed run's lease holds the next
run off until it expires."""
import io
import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, PartitionFiles, poll
from service.runner import run_dates
from tasks import partition
from tasks.partition import objects

DAY = "2026-11-24"
# On a store the killed run's lease outlives it by up to this long. Renewed every third of it and stamped to
# the whole second, it may have a third and a second less left at the kill: still more than the next run,
# started at once, takes to reach its first task.
LEASE_SECONDS = 12


def _whole(name, content):
    """Parse a target fully: a half-written file fails here."""
    if name.endswith(".json"):
        json.loads(content)
    elif name.endswith(".csv"):
        lines = content.decode().splitlines()
        assert lines and all(line.count(",") == lines[0].count(",") for line in lines), name
    elif name.endswith(".joblib"):
        import joblib

        joblib.load(io.BytesIO(content))


def _stamps(root):
    """{key: when the store last wrote it} of every object under the root, from one LIST."""
    return {item["Key"]: item["LastModified"] for page in objects.listing(root) for item in page.get("Contents", [])}


@pytest.mark.slow
def test_sigkill_mid_task_leaves_no_complete_looking_target_and_the_next_run_finishes(backend_config):
    # A big forest makes TrainModel slow enough to be killed while it runs.
    backend_config.set("iris", models='["random_forest", "knn"]', lease_seconds=LEASE_SECONDS,
                       hyperparameters='{"random_forest": {"n_estimators": 3000}}')
    root = backend_config.output_root
    files = PartitionFiles(root, DAY)
    process = subprocess.Popen([sys.executable, "-m", "service", "run", "--date", DAY], cwd=REPO,
                               env=backend_config.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    poll("the split", lambda: any(name.startswith("split/") for name in files.names()), timeout=120, interval=0.05)
    time.sleep(0.5)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    assert partition.SUMMARY not in files.names()
    assert not partition.is_complete(root, partition.parse_date(DAY))
    for name in files.names():
        if partition.TEMPORARY not in name:
            _whole(name, files.read(name))
    if files.on_store:  # the killed run's lease (its build's, for the date) is still live
        left = _stamps(root)
        leases = objects.sizes_and_ages(root / partition.LOCKS / DAY)
        assert leases["build.lease-00000001"][1] < LEASE_SECONDS, leases

    again = run_dates([partition.parse_date(DAY)])  # at once: on a store the killed run's lease is still live
    assert [o.status for o in again.outcomes] == ["success"], again.outcomes
    assert partition.is_complete(root, partition.parse_date(DAY))
    assert not [name for name in files.names() if partition.TEMPORARY in name]
    if files.on_store:
        stamps = _stamps(root)
        locks = f"{root.key}/{partition.LOCKS}/{DAY}/"
        dead = f"{locks}build.lease-00000001"
        # A task of the next run asked while the killed run's lease was live and was refused (its lease 1,
        # let go at once), took lease 2 once that had expired, and wrote nothing before.
        refused = [key for key in stamps if key.startswith(locks) and key.endswith(".lease-00000001")
                   and key != dead and (stamps[key] - stamps[dead]).total_seconds() < LEASE_SECONDS]
        assert refused and all(key.replace("-00000001", "-00000002") in stamps for key in refused), stamps
        written = {key: stamp for key, stamp in stamps.items()
                   if key.startswith(f"{root.key}/{DAY}/") and left.get(key) != stamp}
        assert partition.SUMMARY in {key.rsplit("/", 1)[1] for key in written}
        assert all((stamp - stamps[dead]).total_seconds() >= LEASE_SECONDS for stamp in written.values()), written
