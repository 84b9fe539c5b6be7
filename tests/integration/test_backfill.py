"""The operator's backfill: the plan (--dry-run, --json, --only), stale dates, progress where it runs, and a
clean stop on Ctrl-C or SIGTERM with real processes (the CLI, its helper processes, a pseudo-terminal)."""
import datetime as dt
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest

from conftest import REPO, write_input
from service.reporting import summary
from service.reporting.progress import Progress
from service.runner import DateOutcome
from tasks import partition

D = [dt.date(2026, 3, 1) + dt.timedelta(days=n) for n in range(7)]


def _tree(root):
    """Every file and directory under root with its size and modification time (the runner's own
    .locks and .staging left out: they are no outputs)."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if not p.relative_to(root).parts[0].startswith(".")}


@pytest.fixture
def history(irisflow_config, cli, tmp_path):
    """Seven dates, one for each reason: D0 stale (built with knn only), D1 complete, D2 incomplete (a model
    file deleted), D3 damaged (summary.json cut short), D4 failed (rejected input), D5 and D6 missing."""
    incoming = tmp_path / "in"
    irisflow_config.set("iris", source=f"{incoming}/{{date}}.csv", models='["knn"]')
    for day in D:
        write_input(incoming, day, bad=day == D[4])
    assert cli("run", "--date", str(D[0])).returncode == 0
    irisflow_config.set("iris", models='["knn", "decision_tree"]')
    assert cli("backfill", "--start", str(D[1]), "--end", str(D[4])).returncode == 1
    root = irisflow_config.output_root
    next((root / str(D[2])).glob("models/decision_tree-*/model.joblib")).unlink()
    summary = root / str(D[3]) / "summary.json"
    summary.write_text(summary.read_text()[:40])
    return root


def test_dry_run_tells_each_date_what_and_why_and_writes_nothing(history, cli):
    before = _tree(history)
    result = cli("backfill", "--start", str(D[0]), "--end", str(D[6]), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert _tree(history) == before
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in lines[:7]}
    assert {day: row[:2] for day, row in rows.items()} == {
        str(D[0]): ["skip", "stale"], str(D[1]): ["skip", "complete"], str(D[2]): ["build", "incomplete"],
        str(D[3]): ["build", "damaged"], str(D[4]): ["build", "failed"], str(D[5]): ["build", "missing"],
        str(D[6]): ["build", "missing"]}
    assert "models: knn -> decision_tree, knn" in rows[str(D[0])][2]
    assert re.search(r"models/decision_tree-\w+/model.joblib", rows[str(D[2])][2])
    assert "summary.json" in rows[str(D[3])][2]
    assert "validation in Validate" in rows[str(D[4])][2]
    assert lines[7] == "reasons: 2 missing, 1 failed, 1 incomplete, 1 damaged, 1 stale, 1 complete"
    assert lines[8].startswith("would build 5 of 7 dates")

    plan = json.loads(cli("backfill", "--dates", f"{D[0]}..{D[1]},{D[4]}", "--dry-run", "--only", "stale",
                          "--json").stdout)
    assert [(d["date"], d["reason"], d["action"]) for d in plan["dates"]] == [
        (str(D[0]), "stale", "build"), (str(D[1]), "complete", "skip"), (str(D[4]), "failed", "skip")]
    assert plan["counts"] == {"failed": 1, "stale": 1, "complete": 1} and plan["build"] == 1
    forced = json.loads(cli("backfill", "--dates", str(D[1]), "--dry-run", "--force", "--json").stdout)
    assert [(d["reason"], d["action"]) for d in forced["dates"]] == [("forced", "build")]
    assert _tree(history) == before


def test_only_stale_rebuilds_exactly_the_stale_dates_and_status_names_them(history, cli):
    status = cli("status", "--start", str(D[0]), "--end", str(D[6]))
    assert status.stdout.splitlines()[0].startswith(f"{D[0]}  stale      built with other settings: models: knn")
    assert status.stdout.splitlines()[-2:] == [
        "dates: 2 missing, 1 failed, 1 incomplete, 1 damaged, 1 stale, 1 complete",
        f"output root: {history}",
    ]
    untouched = {p: t for p, t in _tree(history).items() if str(D[0]) not in p.parts}
    result = cli("backfill", "--start", str(D[0]), "--end", str(D[6]), "--only", "stale")
    assert result.returncode == 0, result.stderr
    assert "1 ran, 1 already complete, 0 failed, 5 not selected by --only" in result.stdout
    assert {p: t for p, t in _tree(history).items() if str(D[0]) not in p.parts} == untouched
    summary = json.loads((history / str(D[0]) / "summary.json").read_text())
    assert sorted(summary["models"]) == ["decision_tree", "knn"]
    states = {row["date"]: row["state"] for row in json.loads(cli("status", "--json", "--start", str(D[0]),
                                                                  "--end", str(D[1])).stdout)}
    assert states == {str(D[0]): "complete", str(D[1]): "complete"}


def test_a_plain_backfill_builds_what_is_missing_incomplete_damaged_or_failed_and_keeps_stale(history, cli):
    result = cli("backfill", "--start", str(D[0]), "--end", str(D[6]))
    assert result.returncode == 1  # D4's input is still rejected
    root = history
    assert all(partition.is_complete(root, d) for d in (D[1], D[2], D[3], D[5], D[6]))
    assert json.loads((root / str(D[3]) / "summary.json").read_text())["date"] == str(D[3])
    assert sorted(json.loads((root / str(D[0]) / "summary.json").read_text())["models"]) == ["knn"]  # kept
    assert f"rerun: python -m service backfill --dates {D[4]}" in result.stderr


def test_progress_on_a_terminal_is_one_bar_with_rate_and_eta(irisflow_config):
    irisflow_config.set("iris", models='["knn"]')
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    process = subprocess.Popen([sys.executable, "-m", "service", "backfill", "--start", str(D[0]),
                                "--end", str(D[2])], cwd=REPO, env=irisflow_config.env(), stdin=terminal,
                               stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = screen.decode()
    assert "\r" in text and "3/3" in text and "date/s" in text and "failed=0" in text
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", text)  # elapsed<ETA
    assert not re.search(r"^\[\d+/3\]", text, re.M)  # no plain per-date lines on a terminal


def test_progress_in_a_pipe_is_one_plain_line_per_date(irisflow_config, cli):
    irisflow_config.set("iris", models='["knn"]')
    result = cli("backfill", "--start", str(D[0]), "--end", str(D[2]))
    assert result.returncode == 0
    assert "\r" not in result.stderr
    assert result.stderr.splitlines() == [f"[{n}/3] {day} success" for n, day in enumerate(D[:3], 1)]


def test_commands_name_dates_as_ranges_that_read_back_and_take_only_what_the_dates_need():
    days = [D[0], D[1], D[2], D[5]]
    assert summary.date_ranges(reversed(days)) == f"{D[0]}..{D[2]},{D[5]}"
    assert summary.parse_dates(summary.date_ranges(days)) == days
    with pytest.raises(ValueError, match="no such day"):
        summary.parse_dates("2026-02-28..2026-02-30")
    assert summary.backfill_command(days, ["missing", "failed"]) == \
        f"python -m service backfill --dates {D[0]}..{D[2]},{D[5]}"
    assert summary.backfill_command([D[0]], ["stale"], workers=2) == \
        f"python -m service backfill --dates {D[0]} --only missing,failed,waiting,incomplete,damaged,running,stale --workers 2"
    assert summary.backfill_command([D[0]], ["forced"]).endswith("--only missing,failed,waiting,incomplete,damaged,running,forced --force")


def test_plain_progress_adds_an_eta_line_every_interval():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(4, stream=stream, interval=30, clock=lambda: now[0])
    for seconds, status in ((10, "success"), (31, "failure"), (45, "success"), (70, "success")):
        now[0] = seconds
        progress.finished(DateOutcome("2026-03-01", status, step="Validate", reason="validation"))
    assert stream.getvalue().splitlines() == [
        "[1/4] 2026-03-01 success",
        "[2/4] 2026-03-01 FAILED (validation in Validate)",
        "progress: 2/4 dates done, 1 failed, 0.06 dates/s, ETA 0:00:31",
        "[3/4] 2026-03-01 success",
        "[4/4] 2026-03-01 success"]


