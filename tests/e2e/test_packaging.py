"""irisflow as an installed package: the packaged defaults, and a wheel that runs in a clean venv outside
the checkout, as `pip install .` or deploy/install.sh would have it."""

import datetime as dt
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from service import __version__
from tasks import partition

DATE = dt.date(2026, 1, 1)


def clean_env(**extra):
    """The environment of a user with no irisflow settings: no overlay, nothing on PYTHONPATH."""
    env = {key: value for key, value in os.environ.items() if key not in ("LUIGI_CONFIG_PATH", "PYTHONPATH")}
    return {**env, **extra}


def run(*args, cwd, env=None, timeout=600):
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


SHOW_SETTINGS = (
    "from service.defaults import use_packaged_defaults; print(use_packaged_defaults());"
    "from tasks.config import iris; import json;"
    "print(json.dumps({'source': iris().source, 'output_root': iris().output_root,"
    " 'hyperparameters': iris().hyperparameters}, default=dict))"
)


def test_without_a_local_luigi_cfg_the_packaged_one_is_read_before_the_overlay(tmp_path):
    """From a source tree the packaged defaults are the checkout's: its luigi.cfg, with `[iris] source`
    made absolute; the file LUIGI_CONFIG_PATH names still overrides them, and a local luigi.cfg replaces them."""
    env = clean_env(PYTHONPATH=str(REPO))
    used, settings = run(sys.executable, "-c", SHOW_SETTINGS, cwd=tmp_path, env=env).splitlines()
    assert used == str(REPO / "luigi.cfg")
    assert json.loads(settings) == {
        "source": str(REPO / "data" / "iris.csv"),
        "output_root": "output",
        "hyperparameters": {"random_forest": {"n_estimators": 50}, "knn": {"n_neighbors": 5}},
    }

    overlay = tmp_path / "overlay.cfg"
    overlay.write_text("[iris]\nsource = /srv/{date}.csv\noutput_root = /srv/out\n")
    _, settings = run(
        sys.executable, "-c", SHOW_SETTINGS, cwd=tmp_path, env={**env, "LUIGI_CONFIG_PATH": str(overlay)}
    ).splitlines()
    assert json.loads(settings)["source"] == "/srv/{date}.csv"
    assert json.loads(settings)["output_root"] == "/srv/out"

    (tmp_path / "luigi.cfg").write_text('[iris]\nmodels = ["knn"]\n')
    used, settings = run(sys.executable, "-c", SHOW_SETTINGS, cwd=tmp_path, env=env).splitlines()
    assert used == "None" and json.loads(settings)["source"] == "data/iris.csv"


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """A wheel built as `python -m build` builds it (sdist first, the wheel from the sdist), installed into
    a fresh venv as deploy/install.sh does (the lock, then the wheel): (the venv's bin folder, the wheel)."""
    tmp = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "build", "--outdir", tmp / "dist", REPO, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("irisflow-*.whl")
    assert wheel.name.startswith(f"irisflow-{__version__}-py3-none-any")
    run(sys.executable, "-m", "venv", tmp / "venv", cwd=tmp)
    bin_dir = tmp / "venv" / "bin"
    run(bin_dir / "pip", "install", "--quiet", "--require-hashes", "-r", REPO / "requirements.txt", cwd=tmp)
    run(bin_dir / "pip", "install", "--quiet", "--no-deps", wheel, cwd=tmp)
    run(bin_dir / "pip", "check", cwd=tmp)  # the lock holds every dependency the wheel declares
    return bin_dir, wheel


@pytest.mark.slow
def test_wheel_carries_the_code_the_defaults_and_the_templates(installed_wheel):
    import zipfile

    names = set(zipfile.ZipFile(installed_wheel[1]).namelist())
    assert {
        "service/cli/__init__.py",
        "service/state.py",
        "service/daemon/serve.py",
        "tasks/iris.py",
        "tasks/partition/__init__.py",
        "service/_defaults/luigi.cfg",
        "service/_defaults/data/iris.csv",
        "service/view/templates/base.html",
    } <= names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
    assert (installed_wheel[1].parent / f"irisflow-{__version__}.tar.gz").exists()


@pytest.mark.slow
def test_installed_wheel_runs_a_date_from_any_directory_with_the_packaged_defaults(installed_wheel, tmp_path):
    bin_dir, _ = installed_wheel
    assert run(bin_dir / "irisflow", "--version", cwd=tmp_path).strip() == f"irisflow {__version__}"
    where = run(bin_dir / "python", "-c", "import service; print(service.__file__)", cwd=tmp_path)
    assert where.startswith(str(bin_dir.parent)), "the installed package runs, not the checkout"

    out = run(bin_dir / "irisflow", "run", "--date", DATE.isoformat(), cwd=tmp_path)
    assert "best:" in out
    assert partition.is_complete(tmp_path / "output", DATE, verify=True)
    settings = partition.read_summary(tmp_path / "output", DATE)["settings"]
    assert settings["hyperparameters"]["random_forest"] == {"n_estimators": 50}, "the packaged luigi.cfg was read"
    assert not (tmp_path / "data").exists(), "the input was the packaged Iris CSV"

    assert f"{DATE}  complete" in run(bin_dir / "irisflow", "status", cwd=tmp_path)
    run(bin_dir / "irisflow", "report", "--start", DATE, "--end", DATE, "--out", tmp_path / "report", cwd=tmp_path)
    assert DATE.isoformat() in (tmp_path / "report" / "index.html").read_text()


@pytest.mark.slow
def test_installer_puts_the_lock_and_the_wheel_into_its_own_venv(installed_wheel, tmp_path):
    """deploy/install.sh makes PREFIX/venv from the lock and the wheel; the installed CLI (the units'
    working directory, the installed overlay) runs a date."""
    _, wheel = installed_wheel
    prefix, sysconfdir = tmp_path / "opt/irisflow", tmp_path / "etc/irisflow"
    run(
        "sh",
        REPO / "deploy/install.sh",
        "--prefix",
        prefix,
        "--sysconfdir",
        sysconfdir,
        "--unitdir",
        tmp_path / "units",
        "--wheel",
        wheel,
        "--no-user",
        "--no-systemctl",
        cwd=tmp_path,
    )
    assert not (prefix / "app" / "service").exists() and (prefix / "venv/bin/irisflow").exists()
    config = sysconfdir / "luigi.cfg"
    text = re.sub(r"^output_root = .*$", f"output_root = {tmp_path}/output", config.read_text(), flags=re.M)
    config.write_text(re.sub(r"^state_dir = .*$", f"state_dir = {tmp_path}/state", text, flags=re.M))

    assert run(prefix / "bin/irisflow", "--version", cwd="/").strip() == f"irisflow {__version__}"
    run(prefix / "bin/irisflow", "run", "--date", DATE.isoformat(), cwd="/")
    assert partition.is_complete(tmp_path / "output", DATE, verify=True)
