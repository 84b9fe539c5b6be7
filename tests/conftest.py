"""Shared fixtures: a per-test luigi.cfg overlay and a way to run the CLI as a real subprocess."""
import os
import subprocess
import sys
from pathlib import Path

import luigi.configuration
import pytest

REPO = Path(__file__).resolve().parents[1]
IRIS_CSV = REPO / "data" / "iris.csv"


class IrisflowConfig:
    """A luigi.cfg overlay in the test's temp dir, applied in-process and exported for subprocesses."""

    def __init__(self, tmp_path, monkeypatch):
        self.path = tmp_path / "luigi.cfg"
        self.output_root = tmp_path / "output"
        self.state_dir = tmp_path / "state"
        self._monkeypatch = monkeypatch
        self.sections = {
            "iris": {"source": str(IRIS_CSV), "output_root": str(self.output_root)},
            "service": {"state_dir": str(self.state_dir)},
        }
        self.apply()

    def set(self, section, **values):
        """Set keys of one section (values are written as they would be in luigi.cfg) and re-apply."""
        self.sections.setdefault(section, {}).update({k: str(v) for k, v in values.items()})
        self.apply()
        return self

    def apply(self):
        lines = []
        for section, values in self.sections.items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {value}" for key, value in values.items())
            lines.append("")
        self.path.write_text("\n".join(lines))
        self._monkeypatch.setenv("LUIGI_CONFIG_PATH", str(self.path))
        _reload_luigi_config([str(self.path)])

    def env(self, **extra):
        """The environment a subprocess needs to see this configuration."""
        return {**os.environ, "LUIGI_CONFIG_PATH": str(self.path), "PYTHONPATH": str(REPO), **extra}


_BASE_PATHS = list(luigi.configuration.LuigiConfigParser._config_paths)


def _reload_luigi_config(extra_paths):
    parser = luigi.configuration.LuigiConfigParser
    parser._config_paths = [p for p in _BASE_PATHS if p != os.environ.get("LUIGI_CONFIG_PATH")] + extra_paths
    config = parser.instance()
    for section in list(config.sections()):
        config.remove_section(section)
    parser.reload()


@pytest.fixture
def irisflow_config(tmp_path, monkeypatch):
    """Outputs, state and the input source pointed into this test's temp dir."""
    config = IrisflowConfig(tmp_path, monkeypatch)
    yield config
    monkeypatch.undo()
    _reload_luigi_config([])


def run_cli(config, *args, timeout=300, **kwargs):
    """`python -m service ARGS` in a subprocess from the repo, with the test's configuration."""
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=REPO, env=config.env(),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def cli(irisflow_config):
    return lambda *args, **kwargs: run_cli(irisflow_config, *args, **kwargs)
