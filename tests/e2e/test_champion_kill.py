"""A process killed (SIGKILL) at random moments while it writes champion decisions never leaves
champion.json and the history disagreeing beyond repair: both always parse, champion.json is always the
champion after the last decision or the one before it (history first), and the next reader makes them
agree."""
import json
import random
import subprocess
import sys
import time

import pytest

from conftest import REPO, write_input

pytestmark = pytest.mark.slow
DATES = ["2026-04-01", "2026-04-02", "2026-04-03", "2026-04-04"]
MAX_KILLS = 10
MAX_SECONDS = 30


def complete_lines(root):
    """The history's complete lines, parsed (each must parse), and whether a torn last line follows."""
    data = (root / "champion-history.jsonl").read_bytes() if (root / "champion-history.jsonl").exists() else b""
    complete, _, torn = data.rpartition(b"\n")
    return [json.loads(line) for line in complete.splitlines()], bool(torn)


def champion_file(root):
    path = root / "champion.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_kills_while_deciding_leave_an_explained_champion(irisflow_config, cli, tmp_path):
    import datetime as dt

    data = tmp_path / "data"
    for day in DATES:
        write_input(data, dt.date.fromisoformat(day))
    irisflow_config.set("iris", source=f"{data}/{{date}}.csv", models='["knn"]')
    built = cli("backfill", "--start", DATES[0], "--end", DATES[-1])
    assert built.returncode == 0, built.stderr
    root = irisflow_config.output_root
    rng = random.Random(24)
    kills, started = 0, time.monotonic()
    while kills < MAX_KILLS and time.monotonic() - started < MAX_SECONDS:
        replay = subprocess.Popen([sys.executable, "-m", "service", "champion", "replay", "--start", DATES[0]],
                                  cwd=REPO, env=irisflow_config.env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 2.5))
        replay.kill()
        replay.wait()
        kills += 1
        entries, _ = complete_lines(root)
        on_disk = champion_file(root)
        explained = [entries[-1]["champion"]] + ([entries[-2]["champion"]] if len(entries) > 1 else [None])
        if not entries:
            explained = [None]
        assert on_disk in explained, f"kill {kills}: champion.json is explained by no decision"
        shown = cli("champion", "show", "--json")
        assert shown.returncode == 0, shown.stderr
        entries, torn = complete_lines(root)
        assert not torn and champion_file(root) == (entries[-1]["champion"] if entries else None)
        assert json.loads(shown.stdout)["champion"] == (
            {k: v for k, v in entries[-1]["champion"].items() if k != "settings"} if entries else None
        )
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert kills >= 5
    assert not list(root.glob("champion.json.tmp-*"))
