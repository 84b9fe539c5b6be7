"""What every figure needs: a throw-away workspace with its own configuration, and timed processes.

A Workspace is a temp directory with its own output root and a LUIGI_CONFIG_PATH overlay (over the
repo's luigi.cfg, so the defaults under test are the shipped ones). `run` starts a command there as a
real process and measures its wall time and the peak memory of its whole process tree, children
included, by sampling /proc.
"""

import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IRIS_CSV = REPO / "data" / "iris.csv"
# The reference loop runs with one BLAS/OpenMP thread, as the runner's worker processes do: on these
# tiny fits extra threads only contend, so this is the faster, stricter baseline.
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


class BenchError(RuntimeError):
    """A benchmarked command failed; the figure would be meaningless."""


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float  # user + system time of the process and its descendants
    system_seconds: float  # the system (kernel) part of it: forks, exits, page faults, file system calls
    page_faults: int  # minor page faults of the process and its descendants (copy-on-write after fork, ...)
    peak_rss: int  # bytes, summed over the process and every descendant alive at the same moment
    peak_pss: int  # the same in proportional set size: pages shared between them counted once
    stdout: str
    stderr: str


class Workspace:
    """A temp directory holding one benchmark's outputs, state and luigi.cfg overlay."""

    def __init__(self, parent, name, iris=None, service=None, core=None, sections=None, env=None):
        """`iris`, `service` and `core`: luigi.cfg keys over the workspace's own, as written in luigi.cfg
        (`iris={"output_root": "s3://…"}` puts the outputs on a store); `sections`: other luigi.cfg
        sections (a store's [s3]); `env`: variables every command here gets (a store's credentials)."""
        self.path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
        self.output_root = (iris or {}).get("output_root", self.path / "output")
        self.config = self.path / "luigi.cfg"
        self.extra_env = env or {}
        sections = {
            "iris": {"source": IRIS_CSV, "output_root": self.output_root, **(iris or {})},
            "service": {"state_dir": self.path / "state", **(service or {})},
            # Drift against a pinned reference: against recent dates it would depend on the order
            # dates were built in, and outputs could not be compared byte for byte.
            "quality": {"reference": IRIS_CSV},
            "core": core or {},
            **(sections or {}),
        }
        self.config.write_text(
            "".join(
                f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                for section, keys in sections.items()
            )
        )

    def env(self, **extra):
        return {
            **os.environ,
            "LUIGI_CONFIG_PATH": str(self.config),
            "PYTHONPATH": str(REPO),
            **self.extra_env,
            **extra,
        }

    def run(self, *args, python=True, **env):
        """Run `python ARGS` (or, with python=False, the command ARGS) from the repo with this workspace's
        configuration; BenchError if it fails."""
        return self.run_together([args], python, **env)

    def run_together(self, commands, python=True, **env):
        """Start every command at once and measure until the last ends: wall time, CPU, the peak memory
        of the first one's process tree; BenchError if one fails."""
        started, before = time.perf_counter(), _children_usage()
        processes = [
            subprocess.Popen(
                [sys.executable, *args] if python else list(args),
                cwd=REPO,
                env=self.env(**env),
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for args in commands
        ]
        with TreeMemory(processes[0].pid) as memory:
            outputs = [process.communicate() for process in processes]
        seconds = time.perf_counter() - started
        cpu, system, faults = (after - earlier for after, earlier in zip(_children_usage(), before, strict=True))
        for args, process, (_, stderr) in zip(commands, processes, outputs, strict=True):
            if process.returncode != 0:
                raise BenchError(f"{' '.join(map(str, args))} exited {process.returncode}:\n{stderr[-3000:]}")
        return Measured(
            seconds, cpu, system, faults, memory.peak_rss, memory.peak_pss, *map("".join, zip(*outputs, strict=True))
        )


def process_cpu_seconds(pid):
    """CPU time (user + system) a running process, not a child of ours, has used so far: a server's."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_usage():
    """(CPU seconds, system CPU seconds, minor page faults) of every child process this process has waited
    for (each includes its own children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime, usage.ru_minflt


class TreeMemory:
    """Peak resident memory of a process and all its descendants, sampled from /proc in a thread."""

    def __init__(self, pid, interval=0.25):  # more often would take CPU from the processes measured
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while not self._stop.is_set():
            sizes = [_memory(pid) for pid in tree(self.pid)]
            self.peak_rss = max(self.peak_rss, sum(rss for rss, _ in sizes))
            self.peak_pss = max(self.peak_pss, sum(pss for _, pss in sizes))
            self._stop.wait(self.interval)


def tree(root):
    """root and every live descendant of it."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # the process ended while we looked
            children.setdefault(ppid, []).append(int(entry))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def _memory(pid):
    """(RSS, PSS) of one process in bytes; zeros once it has ended."""
    sizes = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss"):
                    sizes[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return sizes.get("Rss", 0), sizes.get("Pss", 0)


def free_port(address="127.0.0.1"):
    """A TCP port on `address` (one of this machine's) that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def port_is_free(port, address="127.0.0.1"):
    """Whether nothing listens on TCP `port` of `address` right now."""
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
        return True


def alternate(repeats, *measures):
    """Measure each of `measures` (callables of the repeat's index) in turns, so load from other processes
    hits them alike.

    Returns one list of results per measure, in order."""
    rounds = [[measure(i) for measure in measures] for i in range(repeats)]
    return [[results[k] for results in rounds] for k in range(len(measures))]


def median_seconds(results):
    return statistics.median(r.seconds for r in results)


def median_ratio(numerators, denominators, field="seconds"):
    """The median of the per-repeat ratios of a field: each ratio compares runs taken side by side."""
    return statistics.median(
        getattr(n, field) / getattr(d, field) for n, d in zip(numerators, denominators, strict=True)
    )


def imported_modules(importtime_log):
    """Top-level module names in the stderr of `python -X importtime …`."""
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in importtime_log.splitlines()
        if line.startswith("import time:") and "|" in line
    }
