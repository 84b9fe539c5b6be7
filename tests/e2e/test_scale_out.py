"""Several hosts, one luigid, one shared output root: each host a network namespace of its own.

luigid runs in a "scheduler" namespace holding a bridge (10.88.N.1, N picked per test); every host is
another namespace joined to the bridge by a veth pair, with its own address and hostname (its own UTS
namespace), so the runs talk to luigid over real TCP and luigid's task history names the host that ran
each task. The hosts share the output root through the file system (the kernel here has no NFS; a shared
POSIX file system is what production hosts would mount), or, with no folder in common, on object storage:
a SeaweedFS on the machine's own end of the bridge (10.88.N.254). Addresses and port exist only inside
the namespaces this file makes, and on that one link of the machine's.

luigid uses a small worker_disconnect_delay and retry_delay, and prunes every PRUNE_SECONDS (service.central.luigid).
"""
import datetime as dt
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import luigi
import pytest

from conftest import IRIS_CSV, LUIGID, REPO, SeaweedFS, poll
from service.central.luigid import PRUNE_SECONDS
from tasks import partition

pytestmark = pytest.mark.slow

SCHEDULER_PORT = 8082  # inside the test's own namespace, where nothing else listens
DISCONNECT_DELAY = 5
START = dt.date(2026, 3, 1)
LIGHT_MODELS = '["logistic_regression", "decision_tree"]'
LEASE_SECONDS = 5  # [iris] lease_seconds on the store: how long a killed host's leases hold others up


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


class Network:
    """Namespaces on a bridge, on a /24 of 10.88 that the machine routes nowhere (so that a link from the
    machine, `join_machine`, clashes with no other test's); every namespace, link and process it made goes
    on close()."""

    def __init__(self):
        self.tag = uuid.uuid4().hex[:6]
        routed = _ip("-4", "route", "show", "table", "all").stdout
        self.subnet = random.choice([f"10.88.{n}" for n in range(256) if f"10.88.{n}." not in routed])
        self.scheduler = self._namespace("sched")
        self.hosts = {}
        self.processes = []
        self.machine_link = None
        for command in (["link", "add", "br0", "type", "bridge"], ["addr", "add", f"{self.address(1)}/24", "dev", "br0"],
                        ["link", "set", "br0", "up"]):
            self._run_in(self.scheduler, *command)

    def address(self, number):
        """The address `number` on this network: 1 is the scheduler's, 2 on the hosts', 254 the machine's."""
        return f"{self.subnet}.{number}"

    def _namespace(self, role):
        name = f"irisflow-{self.tag}-{role}"
        result = _ip("netns", "add", name)
        if result.returncode != 0:
            raise OSError(result.stderr.strip())
        self._run_in(name, "link", "set", "lo", "up")
        return name

    def _run_in(self, namespace, *command):
        result = _ip("-n", namespace, *command)
        assert result.returncode == 0, f"ip -n {namespace} {' '.join(command)}: {result.stderr}"

    def add_host(self, name):
        """A host: its namespace, a veth pair to the bridge, the next address on 10.88.0.0/24."""
        namespace = self._namespace(name)
        number = len(self.hosts) + 2
        peer = f"to-{name}"[:15]
        result = _ip("link", "add", "eth0", "netns", namespace, "type", "veth", "peer", "name", peer,
                     "netns", self.scheduler)
        assert result.returncode == 0, result.stderr
        self._run_in(self.scheduler, "link", "set", peer, "master", "br0", "up")
        self._run_in(namespace, "addr", "add", f"{self.address(number)}/24", "dev", "eth0")
        self._run_in(namespace, "link", "set", "eth0", "up")
        self.hosts[name] = namespace
        return namespace

    def join_machine(self):
        """A veth pair from the machine's own namespace (the test's) to the bridge, the machine's end at
        address 254, which it returns: a server the test starts on that address (the object store) is
        one that every host reaches, and so does the test."""
        self.machine_link = f"irisflow{self.tag}"  # 14 characters: a link's name has at most 15
        result = _ip("link", "add", self.machine_link, "type", "veth", "peer", "name", "to-machine",
                     "netns", self.scheduler)
        assert result.returncode == 0, result.stderr
        self._run_in(self.scheduler, "link", "set", "to-machine", "master", "br0", "up")
        for command in (["addr", "add", f"{self.address(254)}/24", "dev", self.machine_link],
                        ["link", "set", self.machine_link, "up"]):
            result = _ip(*command)
            assert result.returncode == 0, f"ip {' '.join(command)}: {result.stderr}"
        return self.address(254)

    def start(self, namespace, hostname, argv, env, cwd=REPO, **kwargs):
        """argv in the namespace, under its own hostname (a UTS namespace of its own), in `cwd`."""
        command = ["ip", "netns", "exec", namespace, "unshare", "--uts", "sh", "-c",
                   'hostname "$0" && exec "$@"', hostname, *argv]
        streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
        process = subprocess.Popen(command, cwd=cwd, env=env, text=True, **streams)
        self.processes.append(process)
        return process

    def close(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)
        if self.machine_link is not None:
            _ip("link", "delete", self.machine_link)
        for namespace in [*self.hosts.values(), self.scheduler]:
            _ip("netns", "delete", namespace)


@pytest.fixture
def network(request):
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        pytest.skip("network namespaces need root, iproute2 and unshare")
    try:
        made = Network()
    except OSError as exc:
        pytest.skip(f"the kernel refuses network namespaces: {exc}")
    request.addfinalizer(made.close)
    return made


class Luigid:
    """luigid in the scheduler namespace, with task history in SQLite; restartable on its saved state."""

    def __init__(self, network, tmp_path):
        self.network, self.history = network, tmp_path / "history.sqlite"
        self.state, self.logs = tmp_path / "luigid-state.pickle", tmp_path / "luigid-logs"
        self.logs.mkdir()
        self.config = tmp_path / "luigid.cfg"
        self.config.write_text(
            "[scheduler]\nrecord_task_history = true\nremove_delay = 600\n"
            f"worker_disconnect_delay = {DISCONNECT_DELAY}\nretry_delay = 1\n"
            f"[task_history]\ndb_connection = sqlite:///{self.history}\n")
        self.process = None
        self.start()

    def start(self):
        self.process = self.network.start(
            self.network.scheduler, "scheduler",
            [*LUIGID, "--address", self.network.address(1), "--port", str(SCHEDULER_PORT), "--logdir", str(self.logs),
             "--state-path", str(self.state)],
            {**os.environ, "LUIGI_CONFIG_PATH": str(self.config)})
        poll("luigid to listen", lambda: f"{SCHEDULER_PORT:04X}" in self._listening(), timeout=60)

    def _listening(self):
        assert self.process.poll() is None, self.process.communicate()[1][-2000:]
        result = subprocess.run(["ip", "netns", "exec", self.network.scheduler, "cat", "/proc/net/tcp"],
                                capture_output=True, text=True, timeout=30)
        return " ".join(line.split()[1] for line in result.stdout.splitlines()[1:] if line.split()[3] == "0A")

    def restart(self):
        """SIGTERM (luigid saves its state) and start again at once, on the same address and state."""
        self.process.terminate()
        self.process.communicate(timeout=60)
        self.start()

    def runs(self):
        """[(task_id, host)] of every RUNNING event in the task history (luigid writes it every second)."""
        with sqlite3.connect(self.history) as db:
            return db.execute("SELECT t.task_id, t.host FROM task_events e JOIN tasks t ON t.id = e.task_id "
                              "WHERE e.event_name = 'RUNNING'").fetchall()


@pytest.fixture
def luigid(network, irisflow_config, tmp_path):
    """luigid up, and the hosts' luigi.cfg pointed at it (light models, so the runs are short)."""
    scheduler = Luigid(network, tmp_path)
    irisflow_config.set("core", default_scheduler_host=network.address(1), default_scheduler_port=SCHEDULER_PORT)
    irisflow_config.set("iris", models=LIGHT_MODELS)
    return scheduler


def _dates(count):
    return [START + dt.timedelta(days=i) for i in range(count)]


def _backfill(network, host, config, count, workers=1, cwd=REPO):
    """`backfill` of the first `count` dates on the host, seeing `config` (its env()), in `cwd`."""
    return network.start(network.hosts[host], host,
                         [sys.executable, "-m", "service", "backfill", "--start", str(START),
                          "--end", str(_dates(count)[-1]), "--workers", str(workers)], config.env(), cwd)


def _finished_cleanly(process, timeout=180):
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stdout + stderr
    assert "FAILED" not in stdout + stderr, stdout + stderr
    return stdout


def _complete_count(config, count):
    return sum(partition.is_complete(config.output_root, date) for date in _dates(count))


def _all_complete(config, count):
    return _complete_count(config, count) == count


def _task_ids(count):
    """The id of every task that builds the first `count` dates (not the external input), as any entry
    point builds them."""
    from luigi.task import flatten

    from tasks.iris import IrisPipeline

    found, pending = set(), [IrisPipeline(date=date) for date in _dates(count)]
    while pending:
        task = pending.pop()
        if task.task_id not in found and not isinstance(task, luigi.ExternalTask):
            found.add(task.task_id)
            pending.extend(flatten(task.requires()))
    return found


def _ran_each_once(runs, count):
    """True when luigid's history shows each of the dates' tasks run exactly once (and nothing else)."""
    ran = [task_id for task_id, _ in runs]
    return len(ran) == len(set(ran)) and set(ran) == _task_ids(count)


def _runs_a_task(pid):
    """True while the process holds a task's exclusive lock (tasks.partition.task_lock), i.e. is inside a
    task's run: read from the kernel's lock table, which names the holder's pid."""
    with open("/proc/locks") as locks:
        return any(fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[4] == str(pid)
                   for fields in (line.split() for line in locks) if len(fields) > 4)


def _history_of_each_task_once(luigid, count, timeout=10):
    """luigid's RUNNING events once they show each of the dates' tasks run exactly once; luigid writes its
    history every second, so a run just finished may take that long to appear."""
    deadline = time.monotonic() + timeout
    while not _ran_each_once(runs := luigid.runs(), count) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ran_each_once(runs, count), runs
    return runs


def test_two_hosts_backfilling_one_range_run_each_task_once_and_both_succeed(network, luigid, irisflow_config):
    for host in ("host-a", "host-b"):
        network.add_host(host)
    count = 12
    backfills = [_backfill(network, host, irisflow_config, count) for host in ("host-a", "host-b")]
    for backfill in backfills:
        _finished_cleanly(backfill)
    assert _all_complete(irisflow_config, count)
    runs = _history_of_each_task_once(luigid, count)
    assert {host for _, host in runs} == {"host-a", "host-b"}, "the work did not spread over the hosts"


def test_an_assistant_worker_on_another_host_takes_a_share_and_stops_cleanly(network, luigid, irisflow_config,
                                                                           tmp_path):
    """`python -m service worker` on host-b runs tasks host-a's backfill scheduled; a stock `luigi`
    command for one of the dates (same task ids) on host-c adds no second run; SIGTERM ends the worker 0."""
    for host in ("host-a", "host-b", "host-c"):
        network.add_host(host)
    log = tmp_path / "worker.log"
    with open(log, "w") as stderr:
        worker = network.start(network.hosts["host-b"], "host-b", [sys.executable, "-m", "service", "worker"],
                               irisflow_config.env(), stderr=stderr)
    poll("the worker to start", lambda: "irisflow worker: assistant of" in log.read_text(), timeout=60)
    count = 10
    backfill = _backfill(network, "host-a", irisflow_config, count)
    stock = network.start(network.hosts["host-c"], "host-c",
                          [os.path.join(os.path.dirname(sys.executable), "luigi"), "--module", "tasks.iris",
                           "IrisPipeline", "--date", str(_dates(count)[-1])], irisflow_config.env())
    _finished_cleanly(backfill)
    stock.communicate(timeout=180)
    assert stock.returncode == 0
    assert _all_complete(irisflow_config, count)
    runs = _history_of_each_task_once(luigid, count)
    assert "host-b" in {host for _, host in runs}, "the assistant ran nothing"
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=60)
    assert worker.returncode == 0, log.read_text()
    assert "finished in" in log.read_text() and "irisflow worker stopped" in log.read_text()


def test_a_host_killed_mid_backfill_loses_nothing(network, luigid, irisflow_config):
    """host-a is SIGKILLed while it runs a task: host-b finishes every date, including the one host-a held,
    without reporting a date failed, within worker_disconnect_delay and a prune period plus the time its
    share of the range takes (far less than Luigi's own 60 s between prunes); host-a's next backfill finds
    the range complete."""
    for host in ("host-a", "host-b"):
        network.add_host(host)
    count = 16
    doomed = _backfill(network, "host-a", irisflow_config, count)
    survivor = _backfill(network, "host-b", irisflow_config, count)
    # Progress is read from the shared disk, not luigid's history (written a second late); a task's run
    # lasts tens of milliseconds, so the lock table is read every 10 ms while half the range remains.
    poll("host-a to be in a task after some progress",
         lambda: _runs_a_task(doomed.pid) and _complete_count(irisflow_config, count) >= 4,
         timeout=120, interval=0.01)
    doomed.kill()
    killed = time.monotonic()
    doomed.communicate(timeout=30)
    _finished_cleanly(survivor, timeout=DISCONNECT_DELAY + PRUNE_SECONDS + 120)
    assert time.monotonic() - killed < DISCONNECT_DELAY + PRUNE_SECONDS + 30
    assert _all_complete(irisflow_config, count)
    again = _finished_cleanly(_backfill(network, "host-a", irisflow_config, count))
    assert "already complete (16 dates)" in again
    assert not list(irisflow_config.output_root.rglob("*.tmp-*")), "temporaries of the killed host remain"


def test_luigid_restarted_mid_backfill_fails_no_date(network, luigid, irisflow_config):
    for host in ("host-a", "host-b"):
        network.add_host(host)
    count = 16
    backfills = [_backfill(network, host, irisflow_config, count) for host in ("host-a", "host-b")]
    poll("some progress", lambda: len(luigid.runs()) >= 20, timeout=120)
    luigid.restart()
    for backfill in backfills:
        _finished_cleanly(backfill)
    assert _all_complete(irisflow_config, count)


# -- hosts with no folder in common: the output root and the input on object storage --


@pytest.fixture
def store(network, irisflow_config, tmp_path):
    """A SeaweedFS of this test's on the machine's end of the network, which every host reaches, holding
    the input (`[iris] source`) and the output root; leases last LEASE_SECONDS, so that a killed host's
    hold the others up that long at most."""
    (tmp_path / "seaweedfs").mkdir()
    server = SeaweedFS(tmp_path / "seaweedfs", ip=network.join_machine())
    server.start()
    try:
        bucket = server.bucket("scale-out")
        server.client().put_object(Bucket=bucket, Key="input/iris.csv", Body=IRIS_CSV.read_bytes())
        irisflow_config.on_store(server, bucket)
        irisflow_config.set("iris", source=f"s3://{bucket}/input/iris.csv", lease_seconds=LEASE_SECONDS)
        yield server
    finally:
        server.stop()


class HostFolder:
    """A host's own working folder: its luigi.cfg (the test's, with its own state_dir), state_dir and
    TMPDIR, and nothing else, so that hosts on one store have no folder in common."""

    def __init__(self, config, path):
        self.path, self.state, self.tmp = path, path / "state", path / "tmp"
        self.tmp.mkdir(parents=True)
        self.config = config.write(path / "luigi.cfg", service={"state_dir": str(self.state)})
        self._env = config.env(LUIGI_CONFIG_PATH=str(self.config), TMPDIR=str(self.tmp))

    def env(self):
        return self._env

    def writing(self):
        """True while the host's process is inside a task's `publishing` (tasks.partition.receipts), where
        its outputs are local files about to be uploaded: it is mid-task."""
        return any(self.tmp.glob("irisflow-outputs-*"))

    def holds_no_outputs(self):
        """Only what a host keeps of its own is here: its configuration, state and temporaries."""
        return {entry.name for entry in self.path.iterdir()} <= {"luigi.cfg", "state", "tmp"}


def _host_folders(network, config, tmp_path, names):
    """{name: HostFolder} of new hosts on the network."""
    for name in names:
        network.add_host(name)
    return {name: HostFolder(config, tmp_path / name) for name in names}


def _store_backfill(network, folders, host, count):
    return _backfill(network, host, folders[host], count, cwd=folders[host].path)


def _verified_complete(config, count):
    """Every date complete, every file's sha256 the recorded one (read back from the store)."""
    return all(partition.is_complete(config.output_root, date, verify=True) for date in _dates(count))


def _receipts_hold(config, count):
    """Every task receipt on the store seals files that are there, whole, with the content it recorded: a
    task half-done (outputs landed, no receipt yet) reads as not done, never as done."""
    for date in _dates(count):
        folder = partition.partition_dir(config.output_root, date)
        for name in partition.durable.files_in(folder / partition.RECEIPTS):
            sealed = partition.read_sealed(folder, name)
            assert sealed is not None, f"{date}: receipt {name} unreadable"
            problems = partition.files_match(folder, sealed.receipt["outputs"], verify=True)
            assert not problems, f"{date}: {name} seals damaged outputs: {problems}"


def test_two_hosts_with_no_folder_in_common_build_each_task_once_on_one_store(network, luigid, store,
                                                                           irisflow_config, tmp_path):
    folders = _host_folders(network, irisflow_config, tmp_path, ("host-a", "host-b"))
    count = 12
    backfills = [_store_backfill(network, folders, host, count) for host in folders]
    for backfill in backfills:
        _finished_cleanly(backfill)
    assert _verified_complete(irisflow_config, count)
    runs = _history_of_each_task_once(luigid, count)
    assert {host for _, host in runs} == {"host-a", "host-b"}, "the work did not spread over the hosts"
    assert all(folder.holds_no_outputs() for folder in folders.values())


def test_a_host_killed_mid_task_on_one_store_loses_nothing(network, luigid, store, irisflow_config, tmp_path):
    """host-a is SIGKILLed while it uploads a task's outputs: no receipt seals a half-done task, and host-b
    finishes every date (taking over host-a's leases once they expire) without reporting a date failed;
    host-a's next backfill finds the range complete and no lease is left held."""
    folders = _host_folders(network, irisflow_config, tmp_path, ("host-a", "host-b"))
    count = 12
    doomed = _store_backfill(network, folders, "host-a", count)
    survivor = _store_backfill(network, folders, "host-b", count)
    poll("some progress", lambda: _complete_count(irisflow_config, count) >= 3, timeout=120)
    poll("host-a to be in a task", folders["host-a"].writing, timeout=60, interval=0.01)
    doomed.kill()
    killed = time.monotonic()
    doomed.communicate(timeout=30)
    _receipts_hold(irisflow_config, count)
    limit = DISCONNECT_DELAY + PRUNE_SECONDS + LEASE_SECONDS
    _finished_cleanly(survivor, timeout=limit + 120)
    assert time.monotonic() - killed < limit + 30
    assert _verified_complete(irisflow_config, count)
    _receipts_hold(irisflow_config, count)
    again = _finished_cleanly(_store_backfill(network, folders, "host-a", count))
    assert f"already complete ({count} dates)" in again
    assert not any(partition.in_progress(irisflow_config.output_root, date, LEASE_SECONDS) for date in _dates(count))
