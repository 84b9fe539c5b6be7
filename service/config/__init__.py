"""Configuration, read and checked in one place: luigi.cfg (plus the LUIGI_CONFIG_PATH overlay), whose
sections are luigi.Config classes (`[iris]`, `[quality]` in tasks.config, `[service]` here, Luigi's own
`[core]`, `[email]`, `[smtp]`). Every entry point calls `checked_settings` before any work.

    sections.py  the [service] section, ConfigError, the time zone and the central scheduler's URL
    checks.py    malformed files, unreadable or mistyped values, path settings
"""

import configparser
import os
import sys

# Luigi reads its files while it is imported (LUIGI_CONFIG_PATH's file, and ./luigi.cfg on the first use
# of its configuration), and a malformed one would end the process with a traceback before any check could
# name it. Luigi's parser object stays, with what it could read: every other Luigi module is imported
# again around it, without adding LUIGI_CONFIG_PATH's file a second time (it stays in the parser's list of
# files), and `checked_settings` then names the file and line.
try:
    import luigi  # noqa: F401 - imported for its reading of the configuration files
except configparser.Error:
    for _name in [name for name in sys.modules if name.split(".")[0] == "luigi"]:
        if _name not in ("luigi.configuration.cfg_parser", "luigi.configuration.base_parser"):
            del sys.modules[_name]
    _overlay = os.environ.pop("LUIGI_CONFIG_PATH", None)
    try:
        import luigi  # noqa: F401
    finally:
        if _overlay is not None:
            os.environ["LUIGI_CONFIG_PATH"] = _overlay
from luigi.configuration import get_config

from tasks.config import FEATURES, iris, quality
from tasks.lineage import LineageMisconfigured, lineage_settings
from tasks.models import check_model_names

from ..secrets import mask
from .checks import check_files, check_object_storage, check_readable, check_values, resolve_paths
from .sections import ConfigError, central_scheduler, champion, scheduler_url, service, time_zone

MIN_LEASE_SECONDS = 3.0

__all__ = [
    "ConfigError",
    "central_scheduler",
    "champion_settings",
    "checked_settings",
    "scheduler_url",
    "service",
    "time_zone",
]


def checked_settings():
    """The `[iris]` and `[service]` settings, or ConfigError naming the first bad file line or key.

    Path settings come back absolute (and are so for every later reader in this process)."""
    check_files()
    config = get_config()
    check_readable(config)
    check_values(config)
    check_object_storage(config)
    resolve_paths(config)
    try:
        settings, runtime, drift, rule = iris(), service(), quality(), champion()
    except Exception as exc:  # luigi raises various parameter errors for unparsable values
        raise ConfigError(f"luigi.cfg: {mask(exc)}") from None
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
    too_small = [
        key
        for key in ("max_source_bytes", "max_columns", "max_line_bytes", "max_cell_bytes")
        if getattr(settings, key) < 1
    ]
    if too_small:
        problems.append(f"[iris] {', '.join(too_small)} must be positive integers (input limits)")
    if not settings.lease_seconds >= MIN_LEASE_SECONDS:
        # A store stamps objects to the whole second, so a shorter lease may read expired while renewed.
        problems.append(f"[iris] lease_seconds must be at least {MIN_LEASE_SECONDS:g}")
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


def champion_settings():
    """The `[champion]` section, checked (ConfigError naming the bad key)."""
    checked_settings()
    return champion()
