"""Every surface tells the same state for every date: `status --json`, the view's month grid and date pages,
the pages `report` writes, and the daemon's metrics, over a range that holds every state a date can be in;
with the output root on a local disk and on object storage."""
import datetime as dt
import json
import re

import pytest

from conftest import Clock, PartitionFiles, write_input
from service.reporting import metrics
from service.state import State
from tasks import partition

UTC = dt.timezone.utc


@pytest.fixture
def every_state(backend_config, cli, tmp_path):
    """{date: the state it must be in}: complete, stale, damaged, failed (refused), missing, waiting (input
    not there before its deadline), running (a process holds it now, for the test's duration), not due."""
    now = dt.datetime.now(UTC)
    if (now + dt.timedelta(minutes=5)).date() != now.date():
        pytest.skip("the dates must not move while the test runs")
    today = now.date()
    day = {n: today + dt.timedelta(days=n) for n in range(-6, 2)}
    incoming = tmp_path / "in"
    backend_config.set("iris", source=f"{incoming}/{{date}}.csv", models='["knn"]')
    # Each date is scheduled at its midnight, and input is waited for two days after it.
    backend_config.set("service", schedule="0 0 * * *", timezone="UTC", data_deadline="2 days", catchup_days=7)
    for n in (-6, -5, -4):
        write_input(incoming, day[n])
    write_input(incoming, day[-3], bad=True)
    assert cli("run", "--date", str(day[-5])).returncode == 0  # built with knn alone: stale below
    backend_config.set("iris", models='["knn", "decision_tree"]')
    assert cli("backfill", "--dates", f"{day[-6]},{day[-4]},{day[-3]}").returncode == 1  # day -3 is refused
    assert cli("run", "--date", str(day[-1])).returncode == 1  # its input is not there yet
    damaged = PartitionFiles(backend_config.output_root, day[-4])
    damaged.write("validated.csv", damaged.read("validated.csv") + b"5.0,3.0,1.5,0.2,setosa\n")
    expected = {
        day[-6]: State.COMPLETE,
        day[-5]: State.STALE,
        day[-4]: State.DAMAGED,
        day[-3]: State.FAILED,
        day[-2]: State.MISSING,
        day[-1]: State.WAITING,
        day[0]: State.RUNNING,
        day[1]: State.NOT_DUE,
    }
    with partition.building(backend_config.output_root, [day[0]]):  # a build of today, in progress
        yield expected


def test_status_the_view_report_and_metrics_agree_date_by_date(every_state, cli, tmp_path):
    dates = sorted(every_state)
    first, last = str(dates[0]), str(dates[-1])
    want = {str(date): str(state) for date, state in every_state.items()}

    status = cli("status", "--start", first, "--end", last, "--json")
    assert status.returncode == 0, status.stderr
    assert {row["date"]: row["state"] for row in json.loads(status.stdout)} == want
    rows = {row["date"]: row for row in json.loads(status.stdout)}
    assert rows[first]["detail"] == "" and "models" in rows[str(dates[1])]["detail"]
    assert rows[str(dates[2])]["problems"] and rows[str(dates[3])]["reason"] == "validation"
    assert "until" in rows[str(dates[5])] and "until" in rows[last]

    from service.view import configured_view

    view = configured_view()
    grid = view.grid(dates[0], dates[-1])
    assert dict(re.findall(r'data-date="([\d-]+)" data-state="(\w+)"', grid)) == want
    for date, state in want.items():
        page = view.date(dt.date.fromisoformat(date))
        assert re.search(rf'id="state">{state}<', page), (date, state)

    out = tmp_path / "report"
    assert cli("report", "--start", first, "--end", last, "--out", str(out)).returncode == 0
    index = (out / "index.html").read_text()
    assert dict(re.findall(r'data-date="([\d-]+)" data-state="(\w+)"', index)) == want
    for date, state in want.items():
        assert re.search(rf'id="state">{state}<', (out / f"{date}.html").read_text()), (date, state)

    from service.daemon import Daemon

    daemon = Daemon(None, now=Clock(dt.datetime.now(UTC)), in_process=True)
    daemon.update_gauges(daemon.now())
    window = daemon.schedule.window(daemon.now())
    assert window == dates[:-1]  # today's midnight has passed; tomorrow is not yet in the window
    for state in State:
        counted = metrics.REGISTRY.get_sample_value("irisflow_window_dates", {"state": str(state)})
        assert counted == sum(want[str(date)] == state for date in window), state
    assert metrics.REGISTRY.get_sample_value("irisflow_catchup_missing_dates") == 5  # all but complete, stale


def test_the_daemon_builds_what_its_states_say_and_leaves_a_running_date_alone(every_state):
    from service.daemon import Daemon

    daemon = Daemon(None, now=Clock(dt.datetime.now(UTC)), in_process=True)
    due = daemon.due(daemon.now())
    assert set(due) == {date for date, state in every_state.items()
                        if state in (State.DAMAGED, State.FAILED, State.MISSING, State.WAITING)}
