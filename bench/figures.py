"""The figures of `make bench`, each timed against a reference measured in the same run.

Every figure runs real processes (`python -m service …`, `python -m bench.reference …`) in throw-away
Workspaces, in turns with its reference so that load from other processes hits both alike, and quotes
medians over `plan.repeats`.
"""

import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from . import outputs
from .harness import (
    ONE_THREAD,
    REPO,
    BenchError,
    Workspace,
    alternate,
    free_port,
    imported_modules,
    median_ratio,
    median_seconds,
    tree,
)

START = dt.date(2001, 1, 1)
HEAVY = ("pandas", "sklearn", "pandera")
LIGHT = {"models": '["decision_tree"]'}  # the light model set of the scaling and daemon figures
MB = 1024 * 1024


DRIFT_HISTORY = 28  # [quality] reference_days: the figure's date is judged against a full reference


@dataclass
class Plan:
    """How much the benchmark does: the default is the issue's; --quick is a smaller, faster run."""

    dates: int = 365
    scale_dates: int = 3650
    repeats: int = 3
    workers: int = 2
    daemon_runs: int = 500
    daemon_first: int = 50
    scale_out_dates: int = 60  # figures 8-11: each run of them builds this many dates

    def end(self, count):
        return START + dt.timedelta(days=count - 1)


@dataclass
class Figure:
    number: str
    label: str
    value: str
    goal: str | None = None
    met: bool | None = None
    notes: tuple = ()

    def lines(self):
        verdict = f"   goal {self.goal}: {'met' if self.met else 'NOT MET'}" if self.goal else "   (no goal)"
        return [f"{self.number}. {self.label}: {self.value}{verdict}", *(f"   {note}" for note in self.notes)]


def run_backfill(workspace, plan, count, workers=None):
    """`python -m service backfill` over `count` dates from START, as a whole process."""
    args = ["-m", "service", "backfill", "--start", str(START), "--end", str(plan.end(count))]
    return workspace.run(*args, *(["--workers", str(workers)] if workers else []))


def _reference(workspace, start, count):
    """The plain reference loop over `count` dates from `start`, as a whole process."""
    end = start + dt.timedelta(days=count - 1)
    return workspace.run("-m", "bench.reference", "--start", str(start), "--end", str(end), **ONE_THREAD)


def _plain_script(workspace, start, count):
    """The plain script a user would write instead (bench.plain_script) over `count` dates, as a whole process."""
    end = start + dt.timedelta(days=count - 1)
    return workspace.run("-m", "bench.plain_script", "--start", str(start), "--end", str(end), **ONE_THREAD)


def backfill_cold(plan, tmp):
    """Figures 1, 1b and 4a, and the output check: a cold backfill over `plan.workers` processes against
    the reference loop and against the plain script, its peak memory, and whether it wrote exactly the
    reference loop's files.

    Returns ([figures 1, 1b, 4a], outputs identical?, a workspace left holding the complete dates)."""
    pair = []

    def fresh(name):
        pair.append(Workspace(tmp, name))
        if len(pair) > 2:  # only the latest pair is kept, for the output check
            shutil.rmtree(pair.pop(0).path)
        return pair[-1]

    def plain(_):
        workspace = Workspace(tmp, "plain")
        measured = _plain_script(workspace, START, plan.dates)
        shutil.rmtree(workspace.path)
        return measured

    references, backfills, plains = alternate(
        plan.repeats,
        lambda _: _reference(fresh("reference"), START, plan.dates),
        lambda _: run_backfill(fresh("backfill"), plan, plan.dates, plan.workers),
        plain,
    )
    reference, backfill = pair
    compared, differing = outputs.differences(reference.output_root, backfill.output_root)
    shutil.rmtree(reference.path)
    identical = bool(compared) and not differing
    ratio = median_ratio(backfills, references)
    plain_ratio = median_ratio(backfills, plains)
    busy = statistics.median(b.cpu_seconds / b.seconds for b in backfills)
    peak_pss = max(b.peak_pss for b in backfills)
    label = f"backfill, cold ({plan.dates} dates, default models, --workers {plan.workers})"
    return (
        [
            Figure(
                "1",
                label,
                f"{median_seconds(backfills):.1f} s = {ratio:.2f}x the plain reference loop "
                f"({median_seconds(references):.1f} s)",
                "<= 0.55x",
                ratio <= 0.55,
                (
                    f"CPU time {median_ratio(backfills, references, 'cpu_seconds'):.2f}x the reference loop's; "
                    f"{busy:.2f} of {os.cpu_count()} cores busy on average",
                    f"outputs equal the reference loop's, byte for byte: {'yes' if identical else 'NO'} "
                    f"({len(compared)} files" + (f"; differing: {', '.join(differing[:5])})" if differing else ")"),
                ),
            ),
            Figure(
                "1b",
                f"{label} against a plain script (bench.plain_script: read, split, fit, pickle; one process)",
                f"{median_seconds(backfills):.1f} s = {plain_ratio:.2f}x the plain script "
                f"({median_seconds(plains):.1f} s)",
                "<= 0.6x",
                plain_ratio <= 0.6,
                (f"CPU time {median_ratio(backfills, plains, 'cpu_seconds'):.2f}x the plain script's",),
            ),
            Figure(
                "4a",
                "memory: peak PSS of that backfill, summed over its process tree (shared pages counted once)",
                f"{peak_pss / MB:.0f} MB (RSS: {max(b.peak_rss for b in backfills) / MB:.0f} MB; "
                f"the reference loop: {max(r.peak_rss for r in references) / MB:.0f} MB RSS)",
                "<= 300 MB",
                peak_pss <= 300 * MB,
            ),
        ],
        identical,
        backfill,
    )


def backfill_nothing_to_do(plan, workspace):
    """Figure 2: the same backfill again with every date complete, as a whole process, against a
    process that only imports the heavy libraries a command with nothing to compute must not load."""
    repeats = max(plan.repeats, 5)
    noops, imports = alternate(
        repeats,
        lambda _: run_backfill(workspace, plan, plan.dates),
        lambda _: workspace.run("-c", "import pandas, sklearn.ensemble, pandera.pandas"),
    )
    traced = workspace.run(
        "-X", "importtime", "-m", "service", "backfill", "--start", str(START), "--end", str(plan.end(plan.dates))
    )
    loaded = sorted(imported_modules(traced.stderr) & set(HEAVY))
    seconds = median_seconds(noops)
    return Figure(
        "2",
        f"backfill, nothing to do ({plan.dates} dates complete, whole process)",
        f"{seconds:.2f} s = {median_ratio(noops, imports):.2f}x a process that only imports "
        f"{', '.join(HEAVY)} ({median_seconds(imports):.2f} s); heavy libraries imported: "
        f"{', '.join(loaded) or 'none'}",
        "<= 0.5 s",
        seconds <= 0.5 and not loaded,
    )


def status_verified(plan, workspace):
    """Figure 2b: `status --verify` over the backfill's complete dates, as a whole process: every file of
    every date read and compared with its recorded sha256."""
    runs = [
        workspace.run("-m", "service", "status", "--start", str(START), "--end", str(plan.end(plan.dates)), "--verify")
        for _ in range(max(plan.repeats, 3))
    ]
    seconds = median_seconds(runs)
    return Figure(
        "2b",
        f"status --verify ({plan.dates} dates complete, whole process)",
        f"{seconds:.2f} s ({seconds / plan.dates * 1000:.1f} ms/date)",
        "<= 2 s",
        seconds <= 2,
    )


def scaling(plan, tmp):
    """Figure 3: seconds per date of a light backfill at scale_dates against the same at dates.

    The large run is made once (it takes a minute; its per-date figure is the steadier one)."""

    def per_date(count):
        workspace = Workspace(tmp, f"scaling-{count}", iris=LIGHT)
        measured = run_backfill(workspace, plan, count, plan.workers)
        shutil.rmtree(workspace.path)
        return measured.seconds / count

    small = statistics.median(per_date(plan.dates) for _ in range(plan.repeats))
    large = per_date(plan.scale_dates)
    return Figure(
        "3",
        f"scaling (decision_tree only, --workers {plan.workers})",
        f"{large * 1000:.1f} ms/date at {plan.scale_dates} dates = {large / small:.2f}x "
        f"{small * 1000:.1f} ms/date at {plan.dates} dates",
        "<= 1.2x",
        large / small <= 1.2,
    )


def one_date_cold(plan, tmp):
    """Figure 5: `python -m service run --date D` as a cold process against the reference loop's."""
    workspace = Workspace(tmp, "one-date")
    days = [START + dt.timedelta(days=i) for i in range(plan.repeats)]
    runs, references = alternate(
        plan.repeats,
        lambda i: workspace.run("-m", "service", "run", "--date", str(days[i])),
        lambda i: _reference(workspace, days[i] + dt.timedelta(days=1000), 1),
    )
    shutil.rmtree(workspace.path)
    return Figure(
        "5",
        "one date, cold process (python -m service run --date D)",
        f"{median_seconds(runs):.2f} s = {median_ratio(runs, references):.2f}x the reference "
        f"loop's cold process for one date ({median_seconds(references):.2f} s)",
    )


def daemon_memory(plan, tmp):
    """Figure 4b: the daemon's RSS after daemon_runs scheduled runs against its RSS after daemon_first."""
    workspace = Workspace(tmp, "daemon", iris=LIGHT)
    measured = json.loads(
        workspace.run(
            "-m",
            "bench.daemon_memory",
            "--runs",
            str(plan.daemon_runs),
            "--first",
            str(plan.daemon_first),
            "--start",
            str(START),
        ).stdout
    )
    shutil.rmtree(workspace.path)
    growth = measured["rss_after_all"] - measured["rss_after_first"]
    return Figure(
        "4b",
        f"memory: daemon RSS growth from run {plan.daemon_first} to run {plan.daemon_runs} "
        "(one day per run on an injected clock, decision_tree only, runs in the daemon's process)",
        f"{growth / MB:+.1f} MB ({measured['rss_after_first'] / MB:.0f} -> {measured['rss_after_all'] / MB:.0f} MB)",
        "< 10 MB",
        growth < 10 * MB,
    )


def drift_per_date(plan, tmp):
    """Figure 6: the Drift task of a date with a full 28-date reference against a whole date's pipeline,
    both from the same workspace (the reference loop's seconds per date over those 29 dates)."""
    workspace = Workspace(tmp, "drift")
    built = _reference(workspace, START, DRIFT_HISTORY + 1)
    per_date = built.seconds / (DRIFT_HISTORY + 1)
    date = START + dt.timedelta(days=DRIFT_HISTORY)
    measured = json.loads(
        workspace.run("-m", "bench.view", "drift", "--date", str(date), "--repeats", str(max(plan.repeats, 5))).stdout
    )
    shutil.rmtree(workspace.path)
    share = measured["seconds"] / per_date
    return Figure(
        "6",
        f"drift per date (4 features and species against {DRIFT_HISTORY} complete dates)",
        f"{measured['seconds'] * 1000:.0f} ms = {share:.2f}x a whole date's pipeline in the reference loop "
        f"({per_date * 1000:.0f} ms/date)",
        "<= 0.25x",
        share <= 0.25,
    )


def view_render(plan, tmp):
    """Figure 7: the partition view over scale_dates dates (hard-linked copies of one complete date)."""
    workspace = Workspace(tmp, "view", iris=LIGHT)
    workspace.run("-m", "service", "run", "--date", str(plan.end(plan.scale_dates)))
    measured = json.loads(workspace.run("-m", "bench.view", "grid", "--copies", str(plan.scale_dates)).stdout)
    shutil.rmtree(workspace.path)
    whole = measured["all_dates_seconds"]
    return Figure(
        "7",
        f"partition view over {measured['dates']} dates (served pages, no browser)",
        f"all dates on one page {whole:.2f} s ({whole / measured['dates'] * 1000:.2f} ms/date, "
        f"{measured['html_bytes'] / MB:.1f} MB of HTML); {measured['years']} year pages "
        f"{measured['year_pages_seconds']:.2f} s; one date page {measured['date_page_seconds'] * 1000:.0f} ms; "
        f"heavy libraries imported: {', '.join(measured['heavy_imported']) or 'none'}",
        "<= 2 s, no heavy import",
        whole <= 2 and not measured["heavy_imported"],
    )


def daemon_idle(plan, tmp):
    """Figure 4c: the RSS of `python -m service serve` once idle: listening, its start-up catch-up pass
    (run in a child process, as every pass is) over, nothing scheduled until tomorrow."""
    port = free_port()
    workspace = Workspace(tmp, "idle", iris=LIGHT, service={"metrics_port": port})
    with open(workspace.path / "daemon.err", "w") as err:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            cwd=REPO,
            env=workspace.env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        _wait_idle(daemon, port)
        samples, helpers = [], []
        for _ in range(8):  # over two seconds: the largest of the idle process's samples
            samples.append(_rss(daemon.pid))
            helpers.append(sum(_rss(child) for child in tree(daemon.pid)[1:]))
            time.sleep(0.25)
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
    shutil.rmtree(workspace.path)
    rss = max(samples)
    return Figure(
        "4c",
        "memory: the idle daemon's RSS (python -m service serve, after its catch-up pass)",
        f"{rss / MB:.0f} MB",
        "<= 60 MB",
        rss <= 60 * MB,
        (f"beside it multiprocessing's resource tracker, kept from its first pass: {max(helpers) / MB:.0f} MB RSS",),
    )


def _wait_idle(daemon, port, timeout=300):
    """Until the daemon answers on its port and has had no child process for a second; BenchError if it
    exits or takes longer than `timeout` seconds."""
    deadline, quiet_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise BenchError(f"python -m service serve exited {daemon.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).close()
            up = True
        except OSError:
            up = False
        if up and not _passes(daemon.pid):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1:
                return
        else:
            quiet_since = None
        time.sleep(0.2)
    raise BenchError("python -m service serve did not become idle")


def _passes(pid):
    """The daemon's child processes other than multiprocessing's resource tracker (its passes)."""
    return [child for child in tree(pid)[1:] if "resource_tracker" not in _command(child)]


def _command(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _rss(pid):
    """A process's RSS in bytes; 0 once it has ended."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next((int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def orchestration(plan, tmp):
    """Figure 12: the share of a run's CPU outside the tasks' own produce(), measured in one process
    (bench.orchestration); when over its goal, the functions that take it (a second run, profiled)."""
    count = min(plan.dates, 60)
    workspace = Workspace(tmp, "orchestration")

    def measure(*extra):
        return json.loads(
            workspace.run(
                "-m", "bench.orchestration", "--start", str(START), "--dates", str(count), *extra, **ONE_THREAD
            ).stdout
        )

    measured = measure()
    share = measured["orchestration_share"]
    notes = [
        "produce() by task, ms/date: "
        + ", ".join(f"{name} {seconds / count * 1000:.0f}" for name, seconds in measured["produce_by_task"].items())
    ]
    if share > 0.1:
        shutil.rmtree(workspace.output_root)
        profiled = measure("--profile", "8")
        notes.append("most CPU of their own outside produce() (cProfile, so inflated):")
        notes.extend(
            f"  {row['own_seconds'] / count * 1000:6.1f} ms/date {row['calls'] / count:7.0f} calls/date  {row['function']}"
            for row in profiled["profile"]
        )
    shutil.rmtree(workspace.path)
    outside = measured["cpu_seconds"] - measured["produce_seconds"]
    return Figure(
        "12",
        f"orchestration: CPU outside the tasks' produce() ({count} dates in one process, runner's own path)",
        f"{share:.1%} of {measured['cpu_seconds'] / count * 1000:.0f} ms CPU a date "
        f"({outside / count * 1000:.0f} ms/date outside produce())",
        "<= 10%",
        share <= 0.1,
        tuple(notes),
    )
