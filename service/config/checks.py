"""The checks of the configuration files and values, before any setting is used: a malformed file named by
file and line, a bad value by section, key, value and what is expected (a secret's value never shown),
and every path setting resolved once to an absolute path that is no URL and no shared system folder, or, for
the output root and the source, an s3:// URL of a bucket and prefix (the store's connection in `[s3]`)."""

import configparser
import os
import re

import luigi.interface
import luigi.notifications
from luigi.configuration import LuigiConfigParser

from tasks import config as task_config, partition
from tasks.config import iris, quality

from ..secrets import is_secret_key, mask
from .sections import ConfigError, champion, service

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
_SECTIONS = (
    iris,
    quality,
    service,
    champion,
    luigi.interface.core,
    luigi.notifications.email,
    luigi.notifications.smtp,
)


def _config_files():
    """The files Luigi reads, in its order (later ones override earlier ones): /etc/luigi/luigi.cfg,
    ./luigi.cfg or the packaged defaults, the file named by LUIGI_CONFIG_PATH."""
    return [path for path in LuigiConfigParser._config_paths if os.path.isfile(path)]  # noqa: SLF001


def check_files():
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


def check_readable(config):
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


def check_values(config):
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
    [iris] output_root'): empty, a URL, or, for a `folder` irisflow
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


# The keys of [s3] irisflow passes on (through Luigi's S3Client) to boto3: where the store is, not who one is.
S3_KEYS = {"endpoint_url": "the store's URL", "region_name": "the region", "verify": "TLS verification"}


def check_object_storage(config):
    """[s3] holds where the store is, never credentials: those come from the environment or boto3's chain
    (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role), so luigi.cfg can be shown and
    shipped. The endpoint must be a plain http(s) URL: a user name or password in it is refused, masked."""
    if not config.has_section("s3"):
        return
    defaults = set(config.defaults())
    for key in config.options("s3"):
        if key in defaults:
            continue
        value = config.get("s3", key)
        if key.startswith("aws_") or is_secret_key(key):
            raise ConfigError(
                f"luigi.cfg [s3] {key}: credentials do not belong in luigi.cfg; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY in the service's environment (or use boto3's credential chain)"
            )
        if key not in S3_KEYS:
            raise ConfigError(f"luigi.cfg [s3] {key}: unknown key; irisflow reads {', '.join(sorted(S3_KEYS))}")
        if key == "endpoint_url" and not re.fullmatch(r"https?://[A-Za-z0-9.\[\]:-]+(:\d+)?/?", value):
            raise ConfigError(
                f"luigi.cfg [s3] endpoint_url: {_shown('url', value)} is not an http(s)://host[:port] URL "
                "(credentials never go in it)"
            )


def _root_or_local_path(where, value, folder):
    """An s3://bucket/prefix URL as it is, checked (a bad one named, masked), or else `_local_path`."""
    if _URL.match(value) and not value.startswith(partition.layout.SCHEME):
        raise ConfigError(
            f"{where}: {_shown('path', value)} is a URL: irisflow reads and writes local paths and "
            "s3://bucket/prefix URLs only"
        )
    if not value.startswith(partition.layout.SCHEME):
        return _local_path(where, value, folder)
    try:
        partition.location(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {mask(str(exc))}") from None
    return value


def resolve_paths(config):
    """Check every path setting and write it back resolved, so every reader in this process (the tasks,
    status, the view) uses the same absolute path, whatever the working directory becomes."""
    settings, runtime, drift = iris(), service(), quality()
    resolved = {
        ("iris", "output_root"): _root_or_local_path("luigi.cfg [iris] output_root", settings.output_root, True),
        ("iris", "source"): _root_or_local_path("luigi.cfg [iris] source", settings.source, False),
        ("service", "state_dir"): _local_path("luigi.cfg [service] state_dir", runtime.state_dir, folder=True),
    }
    if drift.reference is not None:  # an empty value means no pinned reference, as Luigi reads it
        resolved["quality", "reference"] = _local_path("luigi.cfg [quality] reference", drift.reference, False)
    # Each day's input is read only from inside this folder (tasks.config.data_dir).
    source_folder = os.path.dirname(resolved["iris", "source"].split("{date}", 1)[0])
    if not partition.objects.is_object_url(source_folder):
        _local_path("luigi.cfg [iris] source's folder", source_folder, folder=True)
    for (section, option), path in resolved.items():
        if config.get(section, option, None) != path:
            config.set(section, option, path.replace("%", "%%"))
    task_config.settings.cache_clear()
