"""The daemon's time arithmetic as a small pure object: when a date is scheduled, which dates the catch-up
window holds, when late input stops being waited for.

Every instant it returns is in UTC. Python compares two datetimes of the same zone by their wall-clock
fields, so in the repeated autumn hour 01:50 (second pass) would compare as earlier than 01:20 (first
pass), and adding 6 hours to a local time on the spring-forward day adds 5 real hours; in UTC both are
plain elapsed time. Dates and the cron expression stay in the schedule's zone, where operators think.
"""

import datetime as dt

from apscheduler.triggers.cron import CronTrigger

from .config import ConfigError, time_zone

UTC = dt.UTC
CRON_FIELDS = ("second", "minute", "hour", "day", "month", "day_of_week")


def build_trigger(schedule: str, timezone: str) -> CronTrigger:
    """The CronTrigger of `[service] schedule`: 5 cron fields, or 6 with seconds first (for tests)."""
    zone = time_zone(timezone)
    fields = schedule.split()
    problem = f"luigi.cfg [service] schedule {schedule!r}"
    if len(fields) not in (5, 6):
        raise ConfigError(f"{problem}: expected 5 cron fields (minute hour day month weekday), or 6 with seconds first")
    try:
        if len(fields) == 5:
            trigger = CronTrigger.from_crontab(schedule, timezone=zone)
        else:
            trigger = CronTrigger(**dict(zip(CRON_FIELDS, fields, strict=True)), timezone=zone)
    except ValueError as exc:
        raise ConfigError(f"{problem}: {exc}") from None
    if trigger.get_next_fire_time(None, dt.datetime.now(zone)) is None:
        raise ConfigError(f"{problem}: never fires")
    return trigger


class Schedule:
    """The cron trigger, the catch-up window and the data deadline, answered on absolute instants."""

    def __init__(self, trigger: CronTrigger, catchup_days: int, data_deadline: dt.timedelta) -> None:
        self.trigger, self.zone = trigger, trigger.timezone
        self.catchup_days, self.data_deadline = catchup_days, data_deadline

    def next_run(self, now: dt.datetime) -> dt.datetime | None:
        """The first firing after `now` (any aware datetime), in UTC; None if the cron never fires again."""
        now = now.astimezone(UTC)
        fire = self.trigger.get_next_fire_time(None, now)
        if fire is not None and fire.astimezone(UTC) < now:
            fire = self.trigger.get_next_fire_time(fire, now)  # APScheduler 3 inside a repeated hour (DST end)
        return fire and fire.astimezone(UTC)

    def scheduled_time(self, date: dt.date) -> dt.datetime:
        """When the schedule first fires on `date` in its zone (the date's midnight if it does not fire)."""
        midnight = dt.datetime.combine(date, dt.time(), self.zone).astimezone(UTC)
        fire = self.next_run(midnight)
        return fire if fire is not None and fire.astimezone(self.zone).date() == date else midnight

    def deadline(self, date: dt.date) -> dt.datetime:
        """Until when the date's input is waited for: `data_deadline` of real time after its scheduled time."""
        return self.scheduled_time(date) + self.data_deadline

    def today(self, now: dt.datetime) -> dt.date:
        return now.astimezone(self.zone).date()

    def window(self, now: dt.datetime) -> list[dt.date]:
        """The catch-up window, oldest first: `catchup_days` dates up to the newest one already scheduled."""
        newest = self.today(now)
        if self.scheduled_time(newest) > now.astimezone(UTC):
            newest -= dt.timedelta(days=1)
        return [newest - dt.timedelta(days=n) for n in range(self.catchup_days - 1, -1, -1)]
