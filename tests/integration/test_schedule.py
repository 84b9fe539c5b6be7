"""The daemon's time arithmetic on absolute instants, across both DST transitions of two zones.

`Schedule` is pure: these tests drive it directly, then check that the daemon's late-data decision (retry
or fail at the deadline) follows it in the repeated autumn hour.
"""
import datetime as dt
import zoneinfo

import pytest

from service.daemon import Daemon
from service.schedule import Schedule, build_trigger
from conftest import Clock, registry_runs

UTC = dt.timezone.utc
BERLIN, NEW_YORK = zoneinfo.ZoneInfo("Europe/Berlin"), zoneinfo.ZoneInfo("America/New_York")


def utc(year, month, day, hour, minute=0):
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def schedule(cron, zone, deadline_hours=6, catchup_days=3):
    return Schedule(build_trigger(cron, zone), catchup_days, dt.timedelta(hours=deadline_hours))


@pytest.mark.parametrize("zone, cron, date, scheduled, deadline", [
    # Berlin springs forward at 02:00 CET on 29 March: 00:30 CET + 6 real hours is 07:30 CEST (05:30 UTC),
    # not the 06:30 CEST that wall-clock arithmetic gives (5 real hours).
    ("Europe/Berlin", "30 0 * * *", dt.date(2026, 3, 29), utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 5, 30)),
    # Berlin falls back at 03:00 CEST on 25 October: 00:30 CEST + 6 h is 05:30 CET (04:30 UTC).
    ("Europe/Berlin", "30 0 * * *", dt.date(2026, 10, 25), utc(2026, 10, 24, 22, 30), utc(2026, 10, 25, 4, 30)),
    # New York springs forward at 02:00 EST on 8 March: 01:30 EST + 6 h is 08:30 EDT (12:30 UTC).
    ("America/New_York", "30 1 * * *", dt.date(2026, 3, 8), utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 12, 30)),
    # New York falls back at 02:00 EDT on 1 November: 01:30 happens twice; the first is the scheduled one.
    ("America/New_York", "30 1 * * *", dt.date(2026, 11, 1), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 11, 30)),
])
def test_deadlines_are_real_elapsed_time_across_dst(zone, cron, date, scheduled, deadline):
    plan = schedule(cron, zone)
    assert plan.scheduled_time(date) == scheduled
    assert plan.deadline(date) == deadline
    assert plan.deadline(date) - plan.scheduled_time(date) == dt.timedelta(hours=6)


def test_the_window_compares_instants_in_the_repeated_hour():
    plan = schedule("30 1 * * *", "America/New_York")
    date = dt.date(2026, 11, 1)
    first_pass = dt.datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK)  # 05:10 UTC, before the 01:30 EDT firing
    second_pass = dt.datetime(2026, 11, 1, 1, 10, fold=1, tzinfo=NEW_YORK)  # 06:10 UTC, after it
    assert plan.window(first_pass)[-1] == date - dt.timedelta(days=1)
    assert plan.window(second_pass)[-1] == date  # wall-clock comparison would say 01:10 < 01:30
    assert plan.window(second_pass) == [dt.date(2026, 10, 30), dt.date(2026, 10, 31), date]


def test_the_window_across_spring_forward_in_berlin():
    plan = schedule("0 2 * * *", "Europe/Berlin")  # 02:00 does not exist on 29 March: it runs at 03:00 CEST
    assert plan.scheduled_time(dt.date(2026, 3, 29)) == utc(2026, 3, 29, 1)
    assert plan.window(utc(2026, 3, 29, 0, 59))[-1] == dt.date(2026, 3, 28)
    assert plan.window(utc(2026, 3, 29, 1, 0))[-1] == dt.date(2026, 3, 29)


def test_next_run_never_goes_back_inside_the_repeated_hour():
    plan = schedule("*/20 * * * *", "Europe/Berlin")
    now = dt.datetime(2026, 10, 25, 2, 50, fold=1, tzinfo=BERLIN)  # 01:50 UTC, the second 02:50
    assert plan.next_run(now) == utc(2026, 10, 25, 2, 0)


def test_the_daemon_fails_late_input_at_the_real_deadline_in_the_repeated_hour(irisflow_config, tmp_path,
                                                                                schedulers):
    # 00:50 CEST on 25 October, deadline 1 h 20 min later: 02:10 CEST (00:10 UTC), the FIRST 02:10.
    irisflow_config.set("service", schedule="50 0 * * *", timezone="Europe/Berlin", catchup_days=1,
                        data_deadline="80 minutes", retry_interval="15 minutes")
    irisflow_config.set("iris", source=str(tmp_path / "incoming" / "{date}.csv"))
    date = dt.date(2026, 10, 25)
    second_0200 = dt.datetime(2026, 10, 25, 2, 0, fold=1, tzinfo=BERLIN)  # 01:00 UTC: 50 min past the deadline
    daemon = Daemon(schedulers(), now=Clock(second_0200), in_process=True)
    failed = registry_runs("failure")
    daemon.tick()
    assert daemon.scheduler.get_job(f"retry-{date}") is None  # no retry: the deadline has passed
    assert registry_runs("failure") - failed == 1

    first_0200 = dt.datetime(2026, 10, 25, 2, 0, tzinfo=BERLIN)  # 00:00 UTC: 10 minutes before the deadline
    again = Daemon(schedulers(), now=Clock(first_0200), in_process=True)
    again.settled.clear()
    again.tick()
    assert again.scheduler.get_job(f"retry-{date}").next_run_time == utc(2026, 10, 25, 0, 10)
