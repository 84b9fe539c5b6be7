"""The systemd units and deploy/install.sh, checked on installed copies with the real systemd-analyze.

`systemd-analyze verify` needs each ExecStart binary to exist, so the units are installed with a
prefix in the test's temp dir and `--venv` naming the venv running these tests (it has luigid). It
exits 0 on unknown keys and bad values and only warns on stderr, so any stderr fails the test.
"""
import hashlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, tool

INSTALL_SH = REPO / "deploy" / "install.sh"
UNITS = ("irisflow.service", "luigid.service", "irisflow-backfill@.service", "irisflow-worker.service")
BACKFILL_RANGE = "2026-01-01..2026-01-02"


def install(*args):
    result = subprocess.run(["sh", str(INSTALL_SH), *map(str, args)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


class Installation:
    """install.sh run with every path in a temp dir, the test's venv, no user and no systemctl."""

    def __init__(self, root):
        self.prefix, self.sysconfdir, self.unitdir = root / "opt/irisflow", root / "etc/irisflow", root / "units"
        install("--prefix", self.prefix, "--sysconfdir", self.sysconfdir, "--unitdir", self.unitdir,
                "--venv", sys.prefix, "--no-user", "--no-systemctl")

    def unit(self, name):
        return self.unitdir / name

    def point_data_at(self, var):
        """Edit the installed config as an operator would: output and state under a directory that
        the environment file names (as it would name a secret)."""
        (self.sysconfdir / "environment").write_text(f"# test data\nIRISFLOW_TEST_DATA={var}\n")
        config = self.sysconfdir / "luigi.cfg"
        text = re.sub(r"^output_root = .*$", "output_root = ${IRISFLOW_TEST_DATA}/output", config.read_text(), flags=re.M)
        config.write_text(re.sub(r"^state_dir = .*$", "state_dir = ${IRISFLOW_TEST_DATA}/state", text, flags=re.M))


def unit_environment(unit_text):
    """What systemd hands the unit's process: Environment= and the EnvironmentFile= lines, and its PATH."""
    env = dict(item.split("=", 1) for item in shlex.split(re.search(r"^Environment=(.*)$", unit_text, re.M).group(1)))
    env_file = Path(re.search(r"^EnvironmentFile=-?(.*)$", unit_text, re.M).group(1))
    env.update(line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#"))
    return {**env, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    assert (Path(sys.prefix) / "bin" / "luigid").exists(), "the test venv lacks luigid (pip install luigi)"
    return Installation(tmp_path_factory.mktemp("install"))


def analyze(*args):
    return subprocess.run([tool("systemd-analyze"), *map(str, args)], capture_output=True, text=True, timeout=60)


def unit_paths(installed):
    """The installed units, plus an instance of the backfill template as systemctl would load it."""
    instance = installed.unit(f"irisflow-backfill@{BACKFILL_RANGE}.service")
    if not instance.exists():
        instance.symlink_to("irisflow-backfill@.service")
    return [installed.unit(name) for name in UNITS] + [instance]


def hardening(unit_text):
    """The sandboxing lines of a unit: from its `# Hardening` comment to the next section or the end."""
    block = unit_text.split("\n# Hardening", 1)[1].split("\n[", 1)[0]
    return [line for line in block.splitlines()[1:] if line and not line.startswith("#")]


def tree_digest(root):
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def test_installed_units_verify_without_warnings(installed):
    """Unknown keys, bad values and missing binaries all show on stderr, even with exit status 0."""
    for unit in unit_paths(installed):
        result = analyze("verify", unit)
        assert (result.returncode, result.stderr) == (0, ""), f"{unit.name}: {result.stdout}{result.stderr}"


def test_installed_units_are_rated_ok_by_systemd_security(installed):
    """Exposure at most 2.0 ("OK"): --threshold takes the score times ten."""
    for unit in unit_paths(installed):
        result = analyze("security", "--offline=yes", "--threshold=20", unit)
        assert (result.returncode, result.stderr) == (0, ""), f"{unit.name}: {result.stdout}{result.stderr}"
        exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", result.stdout)
        assert float(exposure.group(1)) <= 2.0 and exposure.group(2) == "OK", exposure.group(0)


def test_units_share_one_hardening_block():
    """The units sandbox alike: a setting dropped from one would go unnoticed otherwise."""
    blocks = [hardening((REPO / "systemd" / name).read_text()) for name in UNITS]
    assert "ProtectSystem=strict" in blocks[0] and "NoNewPrivileges=yes" in blocks[0]
    assert all(block == blocks[0] for block in blocks[1:])


def test_units_follow_the_service_contract():
    """Config overlay, working directory, state directory and clean SIGTERM stop, as the daemon expects."""
    daemon = (REPO / "systemd" / "irisflow.service").read_text()
    for line in ("ExecStart=/opt/irisflow/venv/bin/python -m service serve", "WorkingDirectory=/opt/irisflow/app",
                 "StateDirectory=irisflow", "User=irisflow", "KillSignal=SIGTERM", "Restart=on-failure",
                 "Type=notify", "WatchdogSec=30s", "StartLimitIntervalSec=0",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"):
        assert re.search(f"^{re.escape(line)}$", daemon, re.M), line
    assert "LUIGI_CONFIG_PATH=/etc/irisflow/luigi.cfg" in daemon
    config = (REPO / "deploy" / "etc" / "luigi.cfg").read_text()
    assert "output_root = /var/lib/irisflow/output" in config and "state_dir = /var/lib/irisflow/state" in config
    worker = (REPO / "systemd" / "irisflow-worker.service").read_text()
    for line in ("ExecStart=/opt/irisflow/venv/bin/python -m service worker", "WorkingDirectory=/opt/irisflow/app",
                 "KillSignal=SIGTERM", "Restart=on-failure", "RestartPreventExitStatus=2"):
        assert re.search(f"^{re.escape(line)}$", worker, re.M), line
    assert "LUIGI_CONFIG_PATH=/etc/irisflow/luigi.cfg" in worker
    luigid = (REPO / "systemd" / "luigid.service").read_text()
    assert "--port 8082" in luigid and "StateDirectory=luigid" in luigid and "Restart=on-failure" in luigid
    assert re.search("^ExecStart=/opt/irisflow/venv/bin/irisflow-luigid ", luigid, re.M)


def test_installer_passes_shellcheck():
    result = subprocess.run([tool("shellcheck"), INSTALL_SH, REPO / "deploy" / "irisflow"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_grafana_provisioning_points_at_the_installed_dashboard(installed):
    provider = (installed.prefix / "share/grafana/provisioning/dashboards/irisflow.yml").read_text()
    path = Path(re.search(r"^\s+path: (.+)$", provider, re.M).group(1))
    assert (path / "irisflow.json").is_file()


@pytest.mark.slow
def test_installed_cli_and_backfill_unit_build_dates(installed, tmp_path):
    """The installed app is complete: the backfill unit's command (with systemd's escapes and %i
    substituted, its environment file read) builds the range, and the installed CLI, reading the same
    environment file, reports it."""
    installed.point_data_at(tmp_path)
    unit = installed.unit("irisflow-backfill@.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
    argv = shlex.split(exec_start.replace("%i", BACKFILL_RANGE).replace("%%", "%").replace("$$", "$"))
    workdir = re.search(r"^WorkingDirectory=(.*)$", unit, re.M).group(1)
    backfill = subprocess.run(argv, cwd=workdir, env=unit_environment(unit), capture_output=True, text=True,
                              timeout=300)
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    assert sorted(p.parent.name for p in (tmp_path / "output").glob("*/summary.json")) == ["2026-01-01", "2026-01-02"]
    status = subprocess.run([installed.prefix / "bin/irisflow", "status"], cwd="/", capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert re.search(r"2026-01-02\s+complete", status.stdout), status.stdout


def test_installer_is_idempotent_and_keeps_an_edited_config(tmp_path):
    """DESTDIR staging: a second run changes nothing; an edited config survives an update, with the
    shipped one beside it as .dist; no file names the staging directory."""
    args = ("--destdir", tmp_path, "--no-venv")
    install(*args)
    first = tree_digest(tmp_path)
    install(*args)
    assert tree_digest(tmp_path) == first
    assert {"etc/systemd/system/irisflow.service", "etc/irisflow/luigi.cfg", "opt/irisflow/bin/irisflow",
            "opt/irisflow/app/README.md", "opt/irisflow/share/grafana/irisflow.json",
            "opt/irisflow/share/prometheus/alerts.yml"} <= set(first)
    assert not any(str(tmp_path) in path.read_text(errors="replace") for path in tmp_path.rglob("*") if path.is_file())

    config = tmp_path / "etc/irisflow/luigi.cfg"
    shipped = config.read_text()
    config.write_text(shipped + "\n[email]\nreceiver = oncall@example.org\n")
    edited = config.read_text()
    assert "kept your /etc/irisflow/luigi.cfg" in install(*args).stdout
    assert config.read_text() == edited
    assert (tmp_path / "etc/irisflow/luigi.cfg.dist").read_text() == shipped
    assert oct(config.stat().st_mode & 0o777) == "0o640"


def test_uninstall_keeps_config_and_purge_removes_it(tmp_path):
    install("--destdir", tmp_path, "--no-venv")
    install("--destdir", tmp_path, "--uninstall")
    assert not (tmp_path / "etc/systemd/system/irisflow.service").exists()
    assert not (tmp_path / "opt/irisflow").exists()
    assert (tmp_path / "etc/irisflow/luigi.cfg").exists()
    install("--destdir", tmp_path, "--uninstall", "--purge")
    assert not (tmp_path / "etc/irisflow").exists()


def test_installer_refuses_to_stage_a_venv(tmp_path):
    """A venv's scripts name their own path, so one built under DESTDIR would break once moved."""
    result = subprocess.run(["sh", str(INSTALL_SH), "--destdir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "--venv or --no-venv" in result.stderr


def run_installer(*args):
    return subprocess.run(["sh", str(INSTALL_SH), *map(str, args)], capture_output=True, text=True, timeout=120)


def refused(result, *words):
    """Exit 2 with one line on stderr naming `words`."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("install.sh: "), result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    return result


SHARED = [("--prefix", "/"), ("--prefix", "/usr"), ("--prefix", "/usr/local"), ("--prefix", "/usr/local/"),
          ("--prefix", "/usr//local"), ("--prefix", "/opt/../usr"), ("--prefix", "/usr/local/./bin/.."),
          ("--prefix", "//"), ("--prefix", "/opt"), ("--prefix", "/etc"), ("--prefix", "/var"), ("--prefix", "/home"),
          ("--prefix", "/srv"), ("--prefix", "/bin"), ("--prefix", "/sbin"), ("--prefix", "/lib"), ("--prefix", "/tmp"),
          ("--prefix", "/var/lib"), ("--prefix", "/etc/systemd/system"), ("--sysconfdir", "/etc"),
          ("--sysconfdir", "/etc/"), ("--sysconfdir", "/usr/local/etc"), ("--sysconfdir", "/"),
          ("--sysconfdir", "/etc/systemd/system"), ("--unitdir", "/etc"), ("--unitdir", "/"),
          ("--unitdir", "/usr/lib/../lib")]


@pytest.mark.parametrize(("option", "path"), SHARED)
def test_installer_refuses_shared_system_folders(option, path, tmp_path):
    """Install and uninstall alike; staged in DESTDIR, so that a regression could not harm this machine."""
    for action in ((), ("--uninstall",), ("--uninstall", "--purge")):
        refused(run_installer("--destdir", tmp_path, "--no-venv", option, path, *action), option, "shares")
    assert list(tmp_path.iterdir()) == []


def test_installer_refuses_a_symlink_to_a_shared_folder(tmp_path):
    link = tmp_path / "link"
    link.symlink_to("/usr/local")
    stage = tmp_path / "stage"
    for args in (("--prefix", link), ("--prefix", f"{link}/"), ("--sysconfdir", link)):
        for action in ((), ("--uninstall", "--purge")):
            refused(run_installer("--destdir", stage, "--no-venv", *args, *action), "/usr/local (through symlinks)")
    assert not stage.exists()


@pytest.mark.parametrize("path", ["/opt/iris flow", "/opt/iris\tflow", "/opt/iris\nflow", "/opt/iris%iflow",
                                  "/opt/iris'flow", '/opt/iris"flow', "/opt/iris$flow", "/opt/iris`flow`",
                                  "/opt/iris\\flow", "opt/irisflow"])
def test_installer_refuses_paths_no_unit_can_hold(path, tmp_path):
    for option in ("--prefix", "--sysconfdir", "--venv"):
        refused(run_installer("--destdir", tmp_path, "--no-venv", option, path), option)
    assert list(tmp_path.iterdir()) == []


def test_uninstall_removes_only_what_the_manifest_lists(tmp_path):
    """Files of others in PREFIX, SYSCONFDIR and the unit folder survive --uninstall --purge, as do the
    folders holding them; a manifest line outside PREFIX and UNITDIR is not followed."""
    install("--destdir", tmp_path, "--no-venv")
    prefix, sysconfdir, unitdir = tmp_path / "opt/irisflow", tmp_path / "etc/irisflow", tmp_path / "etc/systemd/system"
    manifest = prefix / ".irisflow-install-manifest"
    listed = manifest.read_text().splitlines()
    assert {"f /opt/irisflow/bin/irisflow", "f /etc/systemd/system/irisflow.service", "d /opt/irisflow/bin"} <= set(listed)
    assert "f /etc/irisflow/luigi.cfg" in (sysconfdir / ".irisflow-config-manifest").read_text().splitlines()
    foreign = [prefix / "bin/foreign", prefix / "share/notes.txt", sysconfdir / "extra.cfg", unitdir / "other.service",
               tmp_path / "etc/hostname"]
    for path in foreign:
        path.write_text("not irisflow's\n")
    manifest.write_text("\n".join(listed + ["f /etc/hostname"]) + "\n")

    result = install("--destdir", tmp_path, "--uninstall", "--purge")
    assert "not removing /etc/hostname" in result.stdout and "kept /opt/irisflow" in result.stdout
    assert all(path.read_text() == "not irisflow's\n" for path in foreign)
    assert not (prefix / "bin/irisflow").exists() and not (prefix / "app").exists()
    assert not (prefix / "share/grafana").exists() and not (sysconfdir / "luigi.cfg").exists()
    assert sorted(path.name for path in unitdir.iterdir()) == ["other.service"]
    # What is left of the installation is still listed: the folders holding the foreign files.
    assert set(manifest.read_text().splitlines()) == {"d /opt/irisflow", "d /opt/irisflow/bin", "d /opt/irisflow/share",
                                                      "d /etc/systemd/system"}
    for path in foreign:
        path.unlink()
    install("--destdir", tmp_path, "--uninstall", "--purge")
    assert not prefix.exists() and not sysconfdir.exists()


def test_uninstall_refuses_a_prefix_without_its_manifest(tmp_path):
    """A folder install.sh did not make (another application's): nothing in it is removed."""
    other = tmp_path / "opt/other"
    for sub in ("app", "bin", "share", "venv"):
        (other / sub).mkdir(parents=True)
        (other / sub / "file").write_text("other's\n")
    for action in (("--uninstall",), ("--uninstall", "--purge")):
        refused(run_installer("--destdir", tmp_path, "--prefix", "/opt/other", *action), "/opt/other",
                ".irisflow-install-manifest", "nothing removed")
    assert all((other / sub / "file").exists() for sub in ("app", "bin", "share", "venv"))
    (tmp_path / "etc/irisflow").mkdir(parents=True)
    (tmp_path / "etc/irisflow/luigi.cfg").write_text("[iris]\n")
    refused(run_installer("--destdir", tmp_path, "--prefix", "/opt/irisflow", "--uninstall", "--purge"),
            "--sysconfdir /etc/irisflow", ".irisflow-config-manifest")
    assert (tmp_path / "etc/irisflow/luigi.cfg").exists()


def test_paths_with_ampersand_and_bar_are_written_literally(tmp_path):
    """& and | mean something to sed and to a shell: the units, the CLI wrapper and the Grafana provider
    name such paths as they are, systemd-analyze takes the units, and the installed CLI runs."""
    venv = tmp_path / "v&e|nv"
    venv.symlink_to(sys.prefix)
    prefix, sysconfdir, unitdir = tmp_path / "a&b|c", tmp_path / "e&t|c", tmp_path / "u&n|its"
    install("--prefix", prefix, "--sysconfdir", sysconfdir, "--unitdir", unitdir, "--venv", venv, "--no-user",
            "--no-systemctl")
    daemon = (unitdir / "irisflow.service").read_text()
    for line in (f"ExecStart={venv}/bin/python -m service serve", f"WorkingDirectory={prefix}/app",
                 f"Environment=LUIGI_CONFIG_PATH={sysconfdir}/luigi.cfg PYTHONUNBUFFERED=1",
                 f"EnvironmentFile=-{sysconfdir}/environment"):
        assert re.search(f"^{re.escape(line)}$", daemon, re.M), line
    backfill = (unitdir / "irisflow-backfill@.service").read_text()
    assert f"""ExecStart=/bin/sh -c 'exec "{venv}/bin/python" -m service backfill""" in backfill
    for unit in UNITS:
        result = analyze("verify", unitdir / unit)
        assert (result.returncode, result.stderr) == (0, ""), f"{unit}: {result.stdout}{result.stderr}"
    provider = (prefix / "share/grafana/provisioning/dashboards/irisflow.yml").read_text()
    assert f"path: {prefix}/share/grafana\n" in provider
    version = subprocess.run([prefix / "bin/irisflow", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("irisflow "), version.stdout + version.stderr
    install("--prefix", prefix, "--sysconfdir", sysconfdir, "--unitdir", unitdir, "--uninstall", "--purge",
            "--no-user", "--no-systemctl")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["v&e|nv"]
