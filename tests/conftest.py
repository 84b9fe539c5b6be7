"""Shared fixtures: a per-test luigi.cfg overlay, a way to run the CLI as a real subprocess, a real SMTP
server, a real S3 server, and the daemon's injected clock and paused schedulers."""
import contextlib
import datetime as dt
import email
import email.policy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import luigi.configuration
import luigi.task_register
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import free_port
from bench.seaweedfs import DidNotStart, SeaweedFS
from tasks import partition
from tasks.config import settings as task_settings
from tasks.partition import objects

REPO = Path(__file__).resolve().parents[1]
LANES = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items):
    """Each test carries the marker of its lane, the folder it lives in."""
    for item in items:
        lane = Path(item.fspath).parent.name
        if lane in LANES:
            item.add_marker(lane)
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
        self.write(self.path)
        self._monkeypatch.setenv("LUIGI_CONFIG_PATH", str(self.path))
        _reload_luigi_config([str(self.path)])

    def write(self, path, **overrides):
        """This configuration written to `path`, with the keys of `overrides` ({section: {key: value}})
        replaced, and applied nowhere: for a process that must see settings of its own (another host's
        state_dir) while sharing the rest."""
        lines = []
        for section in {**self.sections, **overrides}:
            lines.append(f"[{section}]")
            values = {**self.sections.get(section, {}), **overrides.get(section, {})}
            lines.extend(f"{key} = {value}" for key, value in values.items())
            lines.append("")
        Path(path).write_text("\n".join(lines))
        return path

    def on_store(self, server, bucket, prefix="output"):
        """Put the output root on object storage: s3://bucket/prefix on `server` (a SeaweedFS), its endpoint
        in [s3] and its keys in the environment, as an operator configures it."""
        self.output_root = partition.location(f"s3://{bucket}/{prefix}")
        for name, value in server.environment().items():
            self._monkeypatch.setenv(name, value)
        self.set("s3", **server.s3_section())
        return self.set("iris", output_root=self.output_root)

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
    task_settings.cache_clear()
    objects._luigi_client_for.cache_clear()  # the store's clients read [s3] once
    objects._client_for.cache_clear()
    # A process reads its configuration once: tasks made under another one (their paths, what they found
    # done) must not be handed out again, as Luigi would from its instance cache.
    luigi.task_register.Register.clear_instance_cache()


@pytest.fixture
def irisflow_config(tmp_path, monkeypatch):
    """Outputs, state and the input source pointed into this test's temp dir."""
    config = IrisflowConfig(tmp_path, monkeypatch)
    yield config
    monkeypatch.undo()
    _reload_luigi_config([])


@pytest.fixture
def store_config(irisflow_config, seaweedfs, s3_bucket):
    """irisflow_config with the output root on object storage: a fresh bucket of the session's SeaweedFS."""
    return irisflow_config.on_store(seaweedfs, s3_bucket)


@pytest.fixture(params=["disk", "store"])
def backend_config(request, irisflow_config):
    """irisflow_config with the output root on a local disk, then on object storage (`store_config`): the
    partition contract must hold the same on both."""
    return request.getfixturevalue("store_config") if request.param == "store" else irisflow_config


class PartitionFiles:
    """The files of one date's partition, on either backend, as tests read and damage them: names relative
    to the partition."""

    def __init__(self, root, date):
        self.folder = partition.partition_dir(root, date)
        self.on_store = partition.is_object(self.folder)

    def names(self):
        return sorted(partition.durable.files_in(self.folder))

    def read_all(self):
        return {name: self.read(name) for name in self.names()}

    def read(self, name):
        return partition.durable.read_bytes(self.folder / name)

    def write(self, name, content):
        if self.on_store:
            partition.objects.write_bytes(self.folder / name, content)
        else:
            (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
            (self.folder / name).write_bytes(content)

    def delete(self, name):
        if self.on_store:
            partition.objects.remove([self.folder / name])
        else:
            (self.folder / name).unlink()

    def match(self, pattern):
        """The first name matching a glob pattern (`*` within one path component)."""
        import fnmatch

        return next(name for name in self.names() if fnmatch.fnmatch(name, pattern) and
                    name.count("/") == pattern.count("/"))


def run_cli(config, *args, timeout=300, **kwargs):
    """`python -m service ARGS` in a subprocess from the repo, with the test's configuration."""
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=REPO, env=config.env(),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def cli(irisflow_config):
    return lambda *args, **kwargs: run_cli(irisflow_config, *args, **kwargs)


def write_input(folder, date, bad=False):
    """The day's input file `{folder}/{date}.csv`: the Iris data, or (bad) with one unknown species on line 5,
    which fails the species 'isin' check."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = IRIS_CSV.read_text().splitlines()
    if bad:
        lines[4] = lines[4].replace("setosa", "dandelion")
    path = folder / f"{date.isoformat()}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


# luigid as irisflow ships it (service/luigid.py: Luigi's server with its task history written in batches).
LUIGID = [sys.executable, "-m", "service.central.luigid"]


def poll(what, probe, timeout=60.0, retry_on=(), interval=0.2):
    """probe()'s first truthy result, asked every `interval` seconds; fails naming `what` and the last result
    after `timeout` seconds. Exceptions in `retry_on` (say OSError while a server starts) count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = probe()
            if last:
                return last
        except retry_on as error:
            last = error
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def tool(name):
    """The path of a real tool, or a loud failure that says how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make tools` installs it from Debian's packages")
    return path


class Mailbox:
    """A real SMTP server on loopback (aiosmtpd) and the messages it has received."""

    def __init__(self):
        self.port = free_port()
        self.messages = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's handler hook
        with self._lock:
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    @staticmethod
    def text(message):
        """The plain-text body (Luigi sends multipart/related)."""
        return message.get_body(preferencelist=("plain",)).get_content()

    def wait_for(self, count, timeout=60.0):
        """The messages once there are at least `count` of them (fails after `timeout` seconds)."""
        poll(f"{count} mails (have {len(self.messages)})", lambda: len(self.messages) >= count, timeout)
        return list(self.messages)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """One real S3 server for the whole session (bench/seaweedfs.py's `weed mini`, which the benchmark starts
    too), started when a test first asks for it (under pytest-xdist one in each worker, each on its own
    ports), killed at the end. Its data and weed.log are in the session's temp dir."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except DidNotStart as failure:
        pytest.fail(str(failure), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(seaweedfs, request):
    """A fresh bucket of this test's own on the session's SeaweedFS (its name), deleted after the test. The
    first write into a new bucket takes about 0.2 s (weed makes it a volume); later writes, a few ms."""
    bucket = seaweedfs.bucket(request.node.name)
    yield bucket
    seaweedfs.delete_bucket(bucket)


@pytest.fixture
def mailbox(irisflow_config):
    """Failure mail of this test goes to a real SMTP server on loopback (`[email]` and `[smtp]` set)."""
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    irisflow_config.set("email", receiver="ops@example.com", sender="irisflow@example.com", force_send="true")
    irisflow_config.set("smtp", host="127.0.0.1", port=box.port, timeout=10)
    yield box
    controller.stop()


UTC = dt.timezone.utc


def at(day, hour, minute=0):
    """The instant `hour:minute` UTC on `day`."""
    return dt.datetime.combine(day, dt.time(hour, minute), UTC)


class Clock:
    """The daemon's injected clock: `clock.now = ...` moves time."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def schedulers(irisflow_config):
    """Make real schedulers on the test's state dir, started paused (jobs are stored but never fire)."""
    started = []

    from service.config import time_zone
    from service.daemon.serve import make_scheduler

    def make():
        zone = time_zone(irisflow_config.sections["service"].get("timezone", "UTC"))
        scheduler = make_scheduler(BackgroundScheduler, irisflow_config.state_dir, zone)
        scheduler.start(paused=True)
        started.append(scheduler)
        return scheduler

    irisflow_config.state_dir.mkdir()
    irisflow_config.set("iris", models='["knn"]')
    yield make
    for scheduler in started:
        scheduler.remove_all_jobs()  # a stopping scheduler may still run what is due (an APScheduler race)
        scheduler.shutdown(wait=False)


def metric_samples(text):
    """{(name, sorted labels): value} of every sample in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def task_runs(*samples):
    """{task family: times its work ran}, summed over several processes' metric samples."""
    runs = {}
    for found in samples:
        for (name, labels), value in found.items():
            if name == "irisflow_task_duration_seconds_count":
                family = dict(labels)["task_family"]
                runs[family] = runs.get(family, 0) + int(value)
    return runs


# -- shared by several test modules: the daemon, luigid, and what every run must leave --
SERVE = [sys.executable, "-m", "service", "serve"]


@pytest.fixture
def start_daemon(irisflow_config, tmp_path):
    """Start `python -m service serve` with the test's config, its log in {tmp_path}/{name}.err; any daemon
    still running at the end is killed."""
    started = []

    def start(name="daemon"):
        with open(tmp_path / f"{name}.err", "w") as err:  # stdout is no terminal, as under systemd
            started.append(subprocess.Popen(SERVE, cwd=REPO, env=irisflow_config.env(),
                                            stdout=subprocess.DEVNULL, stderr=err))
        return started[-1]

    yield start
    for daemon in started:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def stop(daemon):
    """SIGTERM, then the daemon's exit status."""
    daemon.send_signal(signal.SIGTERM)
    return daemon.wait(timeout=60)


def scrape(port):
    """{(name, sorted labels): value} of every sample the daemon serves, or None while it is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape_until(port, what, condition, timeout=60.0):
    """The first scrape whose samples satisfy `condition`."""
    def probe():
        samples = scrape(port)
        return samples if samples and condition(samples) else None
    return poll(what, probe, timeout)


def api(port, method, **data):
    query = urllib.parse.urlencode({"data": json.dumps(data)})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{method}?{query}", timeout=10) as response:
        return json.loads(response.read())["response"]


def history_page(port):
    """luigid's history page (Luigi's visualiser). Reading it has luigid write the events it holds
    (it writes them every second), so the database shows every run so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/history", timeout=10) as response:
        return response.read().decode()


def start_luigid(config, port, *options, log=subprocess.DEVNULL, command=LUIGID):
    """irisflow's luigid (or `command`) on loopback with the test's configuration, once it answers."""
    server = subprocess.Popen([*command, "--address", "127.0.0.1", "--port", str(port), *options], env=config.env(),
                              stdout=subprocess.DEVNULL, stderr=log)

    def answers():
        assert server.poll() is None, "luigid exited"
        return api(port, "task_list", status="DONE") is not None

    poll("luigid to answer", answers, retry_on=(OSError,))
    return server


@contextlib.contextmanager
def luigid_on_a_free_port(config, command=LUIGID):
    """irisflow's luigid (or `command`) on a free loopback port for the block, stopped after it."""
    port = free_port()
    server = start_luigid(config, port, command=command)
    try:
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def luigid(irisflow_config, tmp_path):
    """A real central scheduler with task history and Prometheus metrics; runs are pointed at it."""
    port, history = free_port(), tmp_path / "history.sqlite"
    irisflow_config.set("scheduler", record_task_history="true", metrics_collector="prometheus",
                        state_path=str(tmp_path / "luigid-state.pickle"))
    irisflow_config.set("task_history", db_connection=f"sqlite:///{history}")
    logdir = tmp_path / "luigid-logs"
    logdir.mkdir()  # luigid crashes if its --logdir does not exist
    server = start_luigid(irisflow_config, port, "--logdir", str(logdir))
    irisflow_config.set("core", default_scheduler_host="127.0.0.1", default_scheduler_port=port)
    yield port, history
    server.terminate()
    server.wait(timeout=30)


def no_partial_files(root):
    """No temporary left and every file (or object) under the root whole: a half-written JSON or model fails
    to load here."""
    names = partition.durable.files_in(root)
    assert not [name for name in names if partition.TEMPORARY in name], "a temporary file was left behind"
    for name in names:
        if name.endswith(".json"):
            json.loads(partition.durable.read_bytes(partition.location(root) / name))
        elif name.endswith(".joblib"):
            import io

            import joblib

            joblib.load(io.BytesIO(partition.durable.read_bytes(partition.location(root) / name)))


def scraped_runs(samples, outcome):
    """irisflow_pipeline_runs_total{outcome} in a `scrape`."""
    return samples.get(("irisflow_pipeline_runs_total", (("outcome", outcome),)))


def registry_sample(name, **labels):
    """A sample of this process's metrics registry (0 when absent)."""
    from service.reporting import metrics

    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def registry_runs(outcome):
    """irisflow_pipeline_runs_total{outcome} counted in this process."""
    return registry_sample("irisflow_pipeline_runs_total", outcome=outcome)
