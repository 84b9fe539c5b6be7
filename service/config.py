"""The `[service]` section of luigi.cfg and the checks every entry point runs before doing any work.

All of irisflow's settings are luigi.Config sections (`[iris]` in tasks.config, `[service]` here, and
Luigi's own `[core]`, `[email]`, `[smtp]`), so luigi.cfg plus the LUIGI_CONFIG_PATH overlay is the one
place configuration is read.
"""

import datetime as dt
import os
import re
import warnings
import zoneinfo
from configparser import InterpolationError

import luigi
from luigi.configuration import get_config
from luigi.parameter import UnconsumedParameterWarning

from tasks.config import FEATURES, iris, quality
from tasks.lineage import LineageMisconfigured, lineage_settings
from tasks.models import check_model_names

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


def champion_settings():
    """The `[champion]` section, checked (ConfigError naming the bad key)."""
    checked_settings()
    return champion()


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


def _check_readable(config):
    """Every value must resolve; the error names the key and never its value, which may be a password."""
    for section in config.sections():
        for option in config.options(section):
            try:
                config.get(section, option)
            except InterpolationError:
                raw = config.get(section, option, raw=True)
                unset = [name for name in re.findall(r"\$\{([^}]+)\}", raw) if name not in os.environ]
                hint = f"environment variable {', '.join(unset)} is not set" if unset else "write a literal '%' as '%%'"
                raise ConfigError(f"luigi.cfg [{section}] {option}: cannot be read: {hint}") from None


def checked_settings():
    """The `[iris]` and `[service]` settings, or ConfigError naming the first bad key."""
    _check_readable(get_config())
    try:
        settings, runtime, drift, rule = iris(), service(), quality(), champion()
    except Exception as exc:  # luigi raises various parameter errors for unparsable values
        raise ConfigError(f"luigi.cfg: {exc}") from None
    try:
        check_model_names(settings.models)
    except ValueError as exc:
        raise ConfigError(f"luigi.cfg [iris] models: {exc}") from None
    problems = []
    if not settings.models:
        problems.append("[iris] models is empty")
    unknown = [f for f in settings.features if f not in FEATURES]
    if unknown or not settings.features:
        problems.append(f"[iris] features must be a non-empty subset of {', '.join(FEATURES)}")
    if not 0 < settings.test_size < 1:
        problems.append("[iris] test_size must be between 0 and 1")
    if not 0 <= settings.max_invalid_fraction < 1:
        problems.append("[iris] max_invalid_fraction must be at least 0 and below 1")
    try:
        check_model_names(settings.hyperparameters)
    except ValueError as exc:
        problems.append(f"[iris] hyperparameters: {exc}")
    if drift.reference_days < 1 or drift.min_reference_dates < 0 or drift.min_reference_rows < 0:
        problems.append("[quality] reference_days must be at least 1, min_reference_dates and _rows at least 0")
    if drift.reference and not os.path.isfile(drift.reference):
        problems.append(f"[quality] reference {drift.reference}: no such file")
    if not 0 <= drift.psi_moderate <= drift.psi_significant or not (
        0 < drift.ks_pvalue < 1 and 0 < drift.chi2_pvalue < 1
    ):
        problems.append("[quality] needs 0 <= psi_moderate <= psi_significant and p-values between 0 and 1")
    if not (0 <= rule.min_accuracy <= 1 and 0 <= rule.max_dropped_fraction <= 1 and 0 <= rule.margin < 1):
        problems.append(
            "[champion] min_accuracy and max_dropped_fraction must be between 0 and 1, margin at least 0 and below 1"
        )
    if rule.max_age.total_seconds() <= 0:
        problems.append("[champion] max_age must be positive")
    if runtime.workers < 1 or runtime.chunk_size < 1:
        problems.append("[service] workers and chunk_size must be at least 1")
    try:
        lineage_settings()
    except LineageMisconfigured as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError("luigi.cfg: " + "; ".join(problems))
    return settings, runtime
