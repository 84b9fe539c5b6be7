"""Every file of a partition × every kind of damage: `status` never calls the date complete (with --verify
for same-size damage), one run (--verify where needed) repairs it, and the repaired files equal a clean
build (byte for byte, but for model pickles: see `_comparable`). Then what a killed run leaves, and
summary.json of every wrong shape, for `status`, `run` and the daemon.

Each test runs on both backends (`backend_config`): a local disk and object storage (a real SeaweedFS).
On the store the damage matrix takes every kind of damage to a representative file of each kind (a data
file, a model, a receipt, the summary: `STORE_VICTIMS`) rather than to every file, and the wrong summaries
are one of each way to be wrong (`STORE_SHAPES`): the store reads and lists objects where the disk stats
files, and what it does with what it read is the same code on both, so the rest of the matrix would add
minutes to the fast lane and no new path."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, Clock, PartitionFiles, at
from service.daemon import Daemon
from service.runner import run_dates
from service.state import configured
from tasks import partition


DAY = partition.parse_date("2026-11-24")
MODELS = '["knn", "decision_tree"]'


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """A clean partition of DAY, built once by the CLI in its own output root: {relative path: bytes}."""
    folder = tmp_path_factory.mktemp("golden")
    config = folder / "luigi.cfg"
    config.write_text(f"[iris]\nsource = {REPO / 'data' / 'iris.csv'}\noutput_root = {folder / 'output'}\n"
                      f"models = {MODELS}\n")
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "service", "run", "--date", str(DAY)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    part = partition.partition_dir(folder / "output", DAY)
    return {p.relative_to(part).as_posix(): p.read_bytes() for p in part.rglob("*") if p.is_file()}



def _comparable(name, content):
    """A file as it is compared with the clean build: byte for byte, except a model pickle, compared as the
    predictions it makes (pickle's memo shares a string only where the writing process happened to hold one
    object for it, so the same model can be written with other bytes), and the model's receipt and the
    summary, which record the pickle's size and sha256, compared without sizes and hashes."""
    if content is None:
        return None
    if name.endswith("model.joblib"):
        import io

        import joblib
        import pandas as pd

        frame = pd.read_csv(REPO / "data" / "iris.csv")
        return joblib.load(io.BytesIO(content)).predict(frame.drop(columns="species")).tolist()
    if name == "summary.json" or name.startswith(".receipts/TrainModel-"):
        return _without_hashes(json.loads(content))
    return content


def _without_hashes(value):
    if isinstance(value, dict):
        return {key: _without_hashes(item) for key, item in value.items() if key not in ("size", "sha256")}
    return value


def _restore(root, golden):
    """The clean partition, written into the test's empty output root."""
    files = PartitionFiles(root, DAY)
    for name, content in golden.items():
        files.write(name, content)
    return files


def _differences(files, golden):
    """The names whose content differs from the clean build's (or that only one of the two has)."""
    repaired = files.read_all()
    return sorted(name for name in repaired.keys() | golden.keys()
                  if _comparable(name, repaired.get(name)) != _comparable(name, golden.get(name)))


def _no_leftovers(root, files):
    """No temporary file in the partition and no forced rebuild's staging folder."""
    assert not [name for name in files.names() if partition.TEMPORARY in name]
    assert partition.durable.files_in(partition.location(root) / partition.STAGING) == {}


def _halved(files, name):
    content = files.read(name)
    files.write(name, content[: len(content) // 2])


# Each kind of damage to the file `name` of a partition (`PartitionFiles`). On a store "a directory instead"
# is the object replaced by keys under its name as a prefix: what a folder is there.
DAMAGE = {
    "deleted": lambda files, name: files.delete(name),
    "truncated": _halved,
    "emptied": lambda files, name: files.write(name, b""),
    "same-size garbage": lambda files, name: files.write(name, bytes(b ^ 0x5A for b in files.read(name))),
    "a directory instead": lambda files, name: (files.delete(name), files.write(f"{name}/stray", b"x")),
}
NEEDS_VERIFY = {"same-size garbage"}
VICTIMS = ["input.csv", "validated.csv", "validation.json", "split/*/train.csv", "split/*/test.csv",
           "models/knn-*/model.joblib", "models/knn-*/metrics.json", "models/decision_tree-*/model.joblib",
           "summary.json", ".receipts/Extract-*", ".receipts/Validate-*", ".receipts/Split-*",
           ".receipts/TrainModel-*"]
STORE_VICTIMS = ["validated.csv", "models/knn-*/model.joblib", ".receipts/Split-*", "summary.json"]


# The damage matrix's victims per backend: every file on disk, one of each kind on the store.
MATRIX = [("disk", victim) for victim in VICTIMS] + [("store", victim) for victim in STORE_VICTIMS]


@pytest.mark.slow
@pytest.mark.parametrize(("backend_config", "victim"), MATRIX, indirect=["backend_config"],
                         ids=[f"{backend}-{victim}" for backend, victim in MATRIX])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_every_damaged_file_is_detected_and_repaired(backend_config, golden, victim, damage):
    backend_config.set("iris", models=MODELS)
    root = backend_config.output_root
    files = _restore(root, golden)
    assert partition.is_complete(root, DAY, verify=True)
    name = files.match(victim)
    DAMAGE[damage](files, name)
    verify = damage in NEEDS_VERIFY

    assert configured().of(DAY, verify=verify).state != "complete"
    if verify and victim != "summary.json":  # same-size damage passes the cheap check a no-op run relies on
        assert configured().of(DAY).state == "complete"
    report = run_dates([DAY], verify=verify)
    assert [o.status for o in report.outcomes] == ["success"], report.outcomes
    assert partition.is_complete(root, DAY, verify=True)
    # On a store the repaired object and keys under its name as a prefix stand side by side: the run may
    # leave the stray keys, which no manifest names and nothing reads as the date's.
    strays = {f"{name}/stray"} if files.on_store and damage == "a directory instead" else set()
    assert set(_differences(files, golden)) <= strays
    _no_leftovers(root, files)


@pytest.mark.slow
def test_what_a_killed_run_leaves_is_cleaned_up_and_the_date_completed(backend_config, golden):
    """A run killed between its writes leaves outputs without their receipt (its old receipt deleted, the
    new outputs in place, on a store each one whole) and receipts without the summary; on a disk also
    the temporaries it was writing. The next run rebuilds what no receipt vouches for, removes the
    temporaries and seals the date as a clean build does."""
    backend_config.set("iris", models=MODELS)
    root = backend_config.output_root
    files = _restore(root, golden)
    files.delete("summary.json")
    knn = files.match("models/knn-*/model.joblib")
    files.delete(next(name for name in files.names() if name.startswith(".receipts/TrainModel-")
                      and knn.split("/")[1] in files.read(name).decode()))
    files.write(knn, golden[files.match("models/decision_tree-*/model.joblib")])
    if not files.on_store:
        files.write("validated.csv.tmp-0123abcd", b"half a file")
        files.write("models/stray.tmp-89abcdef", b"half a file")
    assert partition.inspect(root, DAY).state == "incomplete"
    assert run_dates([DAY]).outcomes[0].status == "success"
    assert partition.is_complete(root, DAY, verify=True)
    assert _differences(files, golden) == []
    _no_leftovers(root, files)


WRONG_SHAPES = {
    "empty object": "{}", "a list": "[]", "a string": '"summary"', "null": "null", "a number": "7",
    "unparsable": "{\"date\": ", "not UTF-8": b"\xff\xfe\x00garbage", "old list manifest": None,
    "another date": None, "models not a dict": None, "best model unknown": None,
}
# On the store: bytes that are no text, JSON that is no object, and a well-formed summary of another date
# (the matrix above already gives it a truncated, an empty and a garbled summary).
STORE_SHAPES = ["not UTF-8", "a list", "another date"]
SHAPES = [("disk", shape) for shape in sorted(WRONG_SHAPES)] + [("store", shape) for shape in STORE_SHAPES]


def _wrong_summary(golden, shape):
    summary = json.loads(golden["summary.json"])
    if shape == "old list manifest":
        summary["manifest"] = sorted(summary["manifest"])
    elif shape == "another date":
        summary["date"] = "2026-11-23"
    elif shape == "models not a dict":
        summary["models"] = ["knn"]
    elif shape == "best model unknown":
        summary["best_model"] = "oracle"
    else:
        value = WRONG_SHAPES[shape]
        return value if isinstance(value, bytes) else value.encode()
    return json.dumps(summary).encode()


@pytest.mark.slow
@pytest.mark.parametrize(("backend_config", "shape"), SHAPES, indirect=["backend_config"],
                         ids=[f"{backend}-{shape}" for backend, shape in SHAPES])
def test_a_summary_of_every_wrong_shape_is_damage_for_status_run_and_the_daemon(backend_config, golden, cli,
                                                                                 schedulers, shape):
    backend_config.set("iris", models=MODELS)
    backend_config.set("service", catchup_days=1)
    root = backend_config.output_root
    files = _restore(root, golden)
    files.write("summary.json", _wrong_summary(golden, shape))

    status = cli("status", "--start", str(DAY), "--end", str(DAY))
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "damaged" in status.stdout and "summary.json" in status.stdout

    daemon = Daemon(schedulers(), now=Clock(at(DAY, 3)), in_process=True)
    assert daemon.due(daemon.now()) == [DAY]  # the daemon's window sees it too, and its pass repairs it
    daemon.tick()
    assert partition.is_complete(root, DAY, verify=True)

    files.write("summary.json", _wrong_summary(golden, shape))
    run = cli("run", "--date", str(DAY))
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert partition.read_summary(root, DAY) is not None
