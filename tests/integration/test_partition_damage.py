"""Every file of a partition × every kind of damage: `status` never calls the date complete (with --verify
for same-size damage), one run (--verify where needed) repairs it, and the repaired files equal a clean
build (byte for byte, but for model pickles: see `_comparable`). Then summary.json of every wrong
shape, for `status`, `run` and the daemon."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, Clock, at
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
    part = partition.partition_dir(root, DAY)
    shutil.rmtree(root, ignore_errors=True)
    for name, content in golden.items():
        (part / name).parent.mkdir(parents=True, exist_ok=True)
        (part / name).write_bytes(content)
    return part


DAMAGE = {
    "deleted": lambda path: path.unlink(),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "emptied": lambda path: path.write_bytes(b""),
    "same-size garbage": lambda path: path.write_bytes(bytes(b ^ 0x5A for b in path.read_bytes())),
    "a directory instead": lambda path: (path.unlink(), path.mkdir(), (path / "stray").write_text("x")),
}
NEEDS_VERIFY = {"same-size garbage"}


def pytest_generate_tests(metafunc):
    if "victim" in metafunc.fixturenames:
        names = ["input.csv", "validated.csv", "validation.json", "split/*/train.csv", "split/*/test.csv",
                 "models/knn-*/model.joblib", "models/knn-*/metrics.json", "models/decision_tree-*/model.joblib",
                 "summary.json", ".receipts/Extract-*", ".receipts/Validate-*", ".receipts/Split-*",
                 ".receipts/TrainModel-*"]
        metafunc.parametrize("victim", names)


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_every_damaged_file_is_detected_and_repaired(irisflow_config, golden, victim, damage):
    irisflow_config.set("iris", models=MODELS)
    root = irisflow_config.output_root
    part = _restore(root, golden)
    assert partition.is_complete(root, DAY, verify=True)
    path = sorted(part.glob(victim))[0]
    DAMAGE[damage](path)
    verify = damage in NEEDS_VERIFY

    assert configured().of(DAY, verify=verify).state != "complete"
    if verify and victim != "summary.json":  # same-size damage passes the cheap check a no-op run relies on
        assert configured().of(DAY).state == "complete"
    report = run_dates([DAY], verify=verify)
    assert [o.status for o in report.outcomes] == ["success"], report.outcomes
    assert partition.is_complete(root, DAY, verify=True)
    repaired = {p.relative_to(part).as_posix(): p.read_bytes() for p in part.rglob("*") if p.is_file()}
    assert sorted(name for name in repaired.keys() | golden.keys()
                  if _comparable(name, repaired.get(name)) != _comparable(name, golden.get(name))) == []
    assert not list(root.rglob(f"*{partition.TEMPORARY}*")) and not (root / partition.STAGING).exists()


@pytest.mark.slow
def test_leftovers_of_a_killed_run_are_removed_and_the_date_completed(irisflow_config, golden):
    irisflow_config.set("iris", models=MODELS)
    root = irisflow_config.output_root
    part = _restore(root, golden)
    (part / "summary.json").unlink()
    (part / "validated.csv.tmp-0123abcd").write_text("half a file")
    (part / "models" / "stray.tmp-89abcdef").write_text("half a file")
    assert run_dates([DAY]).outcomes[0].status == "success"
    assert {p.relative_to(part).as_posix(): p.read_bytes() for p in part.rglob("*") if p.is_file()} == golden


WRONG_SHAPES = {
    "empty object": "{}", "a list": "[]", "a string": '"summary"', "null": "null", "a number": "7",
    "unparsable": "{\"date\": ", "not UTF-8": b"\xff\xfe\x00garbage", "old list manifest": None,
    "another date": None, "models not a dict": None, "best model unknown": None,
}


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
@pytest.mark.parametrize("shape", sorted(WRONG_SHAPES))
def test_a_summary_of_every_wrong_shape_is_damage_for_status_run_and_the_daemon(irisflow_config, golden, cli,
                                                                                 schedulers, shape):
    irisflow_config.set("iris", models=MODELS)
    irisflow_config.set("service", catchup_days=1)
    root = irisflow_config.output_root
    part = _restore(root, golden)
    (part / "summary.json").write_bytes(_wrong_summary(golden, shape))

    status = cli("status", "--start", str(DAY), "--end", str(DAY))
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "damaged" in status.stdout and "summary.json" in status.stdout

    daemon = Daemon(schedulers(), now=Clock(at(DAY, 3)), in_process=True)
    assert daemon.due(daemon.now()) == [DAY]  # the daemon's window sees it too, and its pass repairs it
    daemon.tick()
    assert partition.is_complete(root, DAY, verify=True)

    (part / "summary.json").write_bytes(_wrong_summary(golden, shape))
    run = cli("run", "--date", str(DAY))
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert partition.read_summary(root, DAY) is not None
