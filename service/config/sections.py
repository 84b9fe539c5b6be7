"""The `[service]` section of luigi.cfg, the error bad configuration raises, and what follows from the
section (the time zone, the central scheduler's URL)."""

import datetime as dt
import warnings
import zoneinfo

import luigi
import luigi.interface
import luigi.notifications
from luigi.configuration import get_config
from luigi.parameter import UnconsumedParameterWarning

# Luigi warns that its own [core] scheduler keys are "not consumed" (a Luigi quirk); typos in
# irisflow's own sections still warn.
warnings.filterwarnings("ignore", message=r".*not consumed by the task 'core'", category=UnconsumedParameterWarning)


class ConfigError(ValueError):
    """Bad configuration or usage: the CLI prints it on one line and exits with status 2."""


class service(luigi.Config):  # noqa: N801 - the class name is the luigi.cfg section name
    schedule = luigi.Parameter(
        default="0 2 * * *", description="Cron expression of the daily run (5 fields; 6 with seconds first)."
    )
    timezone = luigi.Parameter(default="UTC", description="Time zone of the schedule and of 'today'.")
    state_dir = luigi.Parameter(default="state", description="Job store, lock file and daemon state.")
    catchup_days = luigi.IntParameter(default=7, description="Days back the daemon keeps complete.")
    retry_interval = luigi.TimeDeltaParameter(
        default=dt.timedelta(minutes=15), description="How often to look again for late input."
    )
    data_deadline = luigi.TimeDeltaParameter(
        default=dt.timedelta(hours=6), description="How long after the scheduled time input may arrive."
    )
    metrics_address = luigi.Parameter(default="127.0.0.1", description="Address /metrics listens on.")
    metrics_port = luigi.IntParameter(default=9733, description="Port /metrics listens on.")
    http_idle_timeout = luigi.TimeDeltaParameter(
        default=dt.timedelta(seconds=15),
        description="How long the listener (/metrics, the partition view) keeps a silent connection open.",
    )
    stop_timeout = luigi.TimeDeltaParameter(
        default=dt.timedelta(minutes=5), description="How long SIGTERM waits for a run in progress."
    )
    workers = luigi.IntParameter(default=1, description="Worker processes a run uses.")
    wait_for_others = luigi.TimeDeltaParameter(
        default=dt.timedelta(minutes=30),
        description="Through a central scheduler: how long a date another worker is building is waited for.",
    )
    chunk_size = luigi.IntParameter(
        default=5,
        description="Most dates handed to one luigi.build call (Luigi's scheduler costs grow with the "
        "square of the tasks it holds, while each call has a fixed cost).",
    )


class champion(luigi.Config):  # noqa: N801 - the class name is the luigi.cfg section name
    min_accuracy = luigi.FloatParameter(
        default=0.9, description="A date's best model becomes champion only with at least this test accuracy."
    )
    max_dropped_fraction = luigi.FloatParameter(
        default=0.05, description="... and only when at most this share of the date's rows was dropped by validation."
    )
    margin = luigi.FloatParameter(
        default=0.01,
        description="How much better than the champion, both scored on the new date's test split, a challenger must be.",
    )
    max_age = luigi.TimeDeltaParameter(
        default=dt.timedelta(days=7),
        description="The champion's date may be this old before the IrisflowChampionOld alert fires.",
    )


def time_zone(name):
    """The zoneinfo time zone called `name`, or ConfigError."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"luigi.cfg [service] timezone: unknown time zone {name!r}") from None


def central_scheduler():
    """True when luigi.cfg names a central scheduler (`[core] default_scheduler_host` or `_url`)."""
    config = get_config()
    return any(config.has_option("core", key) for key in ("default_scheduler_host", "default_scheduler_url"))


def scheduler_url():
    """The central scheduler's URL as Luigi's workers will use it (`[core] default_scheduler_url`, or
    else http://default_scheduler_host:default_scheduler_port/)."""
    from luigi.interface import core

    settings = core()
    return settings.scheduler_url or f"http://{settings.scheduler_host}:{settings.scheduler_port}/"


# Folders other software shares (as install.sh refuses them): irisflow writes only into a folder of its own.
