"""The `[service]` section of luigi.cfg and the checks every entry point runs before doing any work.

All of irisflow's settings are luigi.Config sections (`[iris]` in tasks.config, `[service]` here, and
Luigi's own `[core]`, `[email]`, `[smtp]`), so luigi.cfg plus the LUIGI_CONFIG_PATH overlay is the one
place configuration is read.
"""

import configparser
import datetime as dt
import os
import re
import sys
import warnings
import zoneinfo

# Luigi reads its files while it is imported (LUIGI_CONFIG_PATH's file, and ./luigi.cfg on the first use
# of its configuration), and a malformed one would end the process with a traceback before any check could
# name it. Luigi's parser object stays, with what it could read: every other Luigi module is imported
# again around it, without adding LUIGI_CONFIG_PATH's file a second time (it stays in the parser's list of
# files), and `checked_settings` then names the file and line.
try:
    import luigi
except configparser.Error:
    for _name in [name for name in sys.modules if name.split(".")[0] == "luigi"]:
        if _name not in ("luigi.configuration.cfg_parser", "luigi.configuration.base_parser"):
            del sys.modules[_name]
    _overlay = os.environ.pop("LUIGI_CONFIG_PATH", None)
    try:
        import luigi
    finally:
        if _overlay is not None:
            os.environ["LUIGI_CONFIG_PATH"] = _overlay
import luigi.interface
import luigi.notifications
from luigi.configuration import LuigiConfigParser, get_config
from luigi.parameter import UnconsumedParameterWarning

from tasks import config as task_config
from tasks.config import FEATURES, iris, quality
from tasks.models import check_model_names

from .secrets import is_secret_key, mask

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
SHARED_FOLDERS = frozenset(
    """/ /bin /boot /dev /etc /home /lib /lib32 /lib64 /libx32 /media /mnt /opt /proc /root /run /sbin /srv /sys
    /tmp /usr /var /usr/bin /usr/etc /usr/games /usr/include /usr/lib /usr/lib32 /usr/lib64 /usr/libexec
    /usr/local /usr/sbin /usr/share /usr/src /usr/local/bin /usr/local/etc /usr/local/games /usr/local/include
    /usr/local/lib /usr/local/libexec /usr/local/sbin /usr/local/share /usr/local/src /var/backups /var/cache
    /var/lib /var/local /var/log /var/mail /var/opt /var/run /var/spool /var/tmp /etc/default /etc/opt
    /etc/systemd /run/systemd""".split()
)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# What a value of each kind of Luigi parameter must look like, as a bad value's error says.
_EXPECTED = (
    (luigi.BoolParameter, "true or false"),
    (luigi.IntParameter, "a whole number"),
    (luigi.FloatParameter, "a number"),
    (luigi.TimeDeltaParameter, "a duration such as '15 minutes', '6 hours' or 'PT15M'"),
    (luigi.ListParameter, 'a JSON list such as ["a", "b"]'),
    (luigi.DictParameter, 'a JSON object such as {"knn": {"n_neighbors": 5}}'),
)
# The sections whose values are parsed before use: irisflow's and those of Luigi's that irisflow relies on.
_SECTIONS = (iris, quality, service, luigi.interface.core, luigi.notifications.email, luigi.notifications.smtp)


def _config_files():
    """The files Luigi reads, in its order (later ones override earlier ones): /etc/luigi/luigi.cfg,
    ./luigi.cfg or the packaged defaults, the file named by LUIGI_CONFIG_PATH."""
    return [path for path in LuigiConfigParser._config_paths if os.path.isfile(path)]  # noqa: SLF001


def _check_files():
    """Every file Luigi reads must parse as Luigi parses it (a section or key twice in one file is an
    error); the error names the file and line, never the line's text, which may hold a password."""
    for path in _config_files():
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # Luigi's keys keep their case
        try:
            parser.read(path)
        except configparser.Error as exc:
            raise ConfigError(f"{os.path.abspath(path)} {_malformed(exc)}") from None


def _malformed(exc):
    """What is wrong with a file configparser could not read: 'line N: …'."""
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"line {exc.lineno}: section [{exc.section}] appears a second time in the file"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"line {exc.lineno}: [{exc.section}] {exc.option} appears a second time in the section"
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: a key before any [section] header"
    if isinstance(exc, configparser.ParsingError):
        return f"line {exc.errors[0][0]}: neither a [section] header nor 'key = value'"
    return f": cannot be read ({type(exc).__name__})"


def _where(section, option):
    """' (FILE line N)': where the value Luigi uses for the key is written, or '' if in no file."""
    header = re.compile(r"\[(.+)\]")
    key = re.compile(rf"{re.escape(option)}\s*[=:]")
    for path in reversed(_config_files()):
        current = None
        with open(path, errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                found = header.match(line.strip())
                if found:
                    current = found.group(1).strip()
                elif current == section and key.match(line):
                    return f" ({os.path.abspath(path)} line {number})"
    return ""


def _check_readable(config):
    """Every value must resolve; the error names the key and where it is written, never its value,
    which may be a password."""
    for section in config.sections():
        for option in config.options(section):
            try:
                config.get(section, option)
            except configparser.InterpolationError:
                raw = config.get(section, option, raw=True)
                unset = [name for name in re.findall(r"\$\{([^}]+)\}", raw) if name not in os.environ]
                hint = f"environment variable {', '.join(unset)} is not set" if unset else "write a literal '%' as '%%'"
                raise ConfigError(
                    f"luigi.cfg [{section}] {option}: cannot be read: {hint}{_where(section, option)}"
                ) from None


def _shown(option, value):
    """A configured value as an error may show it: quoted, a URL's password masked, a long one cut; a
    secret key's value not at all."""
    if is_secret_key(option):
        return "the value"
    value = mask(value)
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _check_values(config):
    """Every value of the sections in _SECTIONS must parse as its parameter's kind: the error names the
    section, the key, the value and what was expected."""
    for section_class in _SECTIONS:
        section = section_class.get_task_family()
        for name, parameter in section_class.get_params():
            written = [(section, name)]
            alias = getattr(parameter, "_config_path", None)  # an older name Luigi still reads
            if alias:
                written.append((alias["section"], alias["name"]))
            for where, key in written:
                value = config.get(where, key, None)
                if value is None:
                    continue
                try:
                    parameter.normalize(parameter.parse(value))
                except Exception:  # Luigi's parsers raise whatever int(), json or their own checks raise
                    expected = next((text for kind, text in _EXPECTED if isinstance(parameter, kind)), None)
                    choices = getattr(parameter, "_choices", None)
                    if choices:
                        expected = "one of " + ", ".join(sorted(map(str, choices)))
                    raise ConfigError(
                        f"luigi.cfg [{where}] {key.replace('-', '_')}: {_shown(key, value)} is not {expected or 'a valid value'}"
                    ) from None


def _local_path(where, value, folder):
    """The absolute path of a path setting (`..` resolved), or ConfigError naming `where` ('luigi.cfg
    [iris] output_root'): empty, a URL (irisflow serves no object storage), or, for a `folder` irisflow
    writes or reads a tree in, a folder other software shares (as written or through symlinks)."""
    if not value.strip():
        raise ConfigError(f"{where}: is empty; give a path")
    if _URL.match(value):
        raise ConfigError(f"{where}: {_shown('path', value)} is a URL: irisflow reads and writes local paths only")
    absolute = os.path.abspath(value)
    for candidate in (absolute, os.path.realpath(absolute)) if folder else ():
        if candidate in SHARED_FOLDERS:
            through = "" if candidate == absolute else " through symlinks"
            raise ConfigError(
                f"{where}: {_shown('path', value)} is {candidate}{through}, a folder other software shares: "
                "give irisflow a folder of its own"
            )
    return absolute


def _resolve_paths(config):
    """Check every path setting and write it back resolved, so every reader in this process (the tasks,
    status, the view) uses the same absolute path, whatever the working directory becomes."""
    settings, runtime, drift = iris(), service(), quality()
    resolved = {
        ("iris", "output_root"): _local_path("luigi.cfg [iris] output_root", settings.output_root, folder=True),
        ("iris", "source"): _local_path("luigi.cfg [iris] source", settings.source, folder=False),
        ("service", "state_dir"): _local_path("luigi.cfg [service] state_dir", runtime.state_dir, folder=True),
    }
    if drift.reference is not None:  # an empty value means no pinned reference, as Luigi reads it
        resolved["quality", "reference"] = _local_path("luigi.cfg [quality] reference", drift.reference, False)
    # Each day's input is read only from inside this folder (tasks.config.data_dir).
    source_folder = os.path.dirname(resolved["iris", "source"].split("{date}", 1)[0])
    _local_path("luigi.cfg [iris] source's folder", source_folder, folder=True)
    for (section, option), path in resolved.items():
        if config.get(section, option, None) != path:
            config.set(section, option, path.replace("%", "%%"))
    task_config.settings.cache_clear()


def checked_settings():
    """The `[iris]` and `[service]` settings, or ConfigError naming the first bad file line or key.

    Path settings come back absolute (and are so for every later reader in this process)."""
    _check_files()
    config = get_config()
    _check_readable(config)
    _check_values(config)
    _resolve_paths(config)
    try:
        settings, runtime, drift = iris(), service(), quality()
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
    if runtime.workers < 1 or runtime.chunk_size < 1:
        problems.append("[service] workers and chunk_size must be at least 1")
    if problems:
        raise ConfigError("luigi.cfg: " + "; ".join(problems))
    return settings, runtime
