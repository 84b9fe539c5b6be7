"""Secrets kept out of everything irisflow lets out of a process: log lines, errors, failure records,
pages, status output and mail.

A secret is the password in a URL's userinfo (`http://user:PASSWORD@host`, wherever such a URL shows:
the scheduler URL in a luigid error, a `--pushgateway` URL) and the value of every luigi.cfg key named
like a secret (`[smtp] password`, any `…token`, `…secret`), and of the password of every URL luigi.cfg
holds, wherever that value shows, in a URL or not (an SMTP server's reply may echo the password, a
socket error the `password@host` part of a URL it could not use). `mask(text)` replaces each with `***`.

`mask_logging()` masks every log record the process makes, whichever logger made it (Luigi's worker log
too, which names the scheduler URL) and whichever handler writes it; the rest of irisflow calls `mask`
where a text leaves the process (`service.cli.output`, failure records, mail, pages).
"""

import logging
import os
import re
import urllib.parse

MASK = "***"
# Keys whose values are secrets, in any section of luigi.cfg.
SECRET_KEY = re.compile(r"passw(or)?d|secret|token|api_?key|credential", re.IGNORECASE)
# scheme://user:password@ — the password runs to the last '@' before the host (an unescaped '@' in a
# password is read so by urllib too).
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:'\"<>]*):(?P<password>[^\s/?#'\"<>]*)@")
# A shorter configured value is masked only where it is followed by '@' (a URL's userinfo): masking
# every 'ab' in a message would hide the message, not a secret.
MIN_SECRET_LENGTH = 4
_ENV_REFERENCE = re.compile(r"\$\{([^}]+)\}")  # Luigi's ${VAR} interpolation

_remembered: set[str] = set()
_found: list = [None, frozenset()]  # [the configuration last looked at, its secret values]


def is_secret_key(option: str) -> bool:
    """Whether a luigi.cfg key holds a secret, whose value is never shown (`[smtp] password`)."""
    return bool(SECRET_KEY.search(option))


def url_passwords(text: str) -> set[str]:
    """The passwords in the userinfo of every URL in `text`, as written and percent-decoded."""
    found: set[str] = set()
    for match in _USERINFO.finditer(text):
        if match["password"]:
            found.update((match["password"], urllib.parse.unquote(match["password"])))
    return found


def remember(text: str) -> None:
    """Mask from now on the URL passwords in `text`, a value from elsewhere than luigi.cfg (a command
    line option), also where they show without their URL."""
    _remembered.update(url_passwords(text))


def _configured() -> frozenset[str]:
    """The secret values of luigi.cfg as this process reads it now: tests and `use_packaged_defaults`
    change the configuration in a running process, so they are found again whenever the configuration
    (or the environment its ${VAR}s come from) differs from the last time."""
    from luigi.configuration import get_config

    try:
        config = get_config()
        written = tuple(
            (section, tuple((option, str(value)) for option, value in config.items(section, raw=True)))
            for section in config.sections()
        )
        referenced = {name for _, items in written for _, value in items for name in _ENV_REFERENCE.findall(value)}
        key = (id(config), written, tuple((name, os.environ.get(name)) for name in sorted(referenced)))
        if _found[0] != key:
            _found[:] = [key, frozenset(_secret_values(config))]
    except Exception:  # luigi.cfg is half read (a malformed file): checked_settings names why
        return frozenset()
    return _found[1]


def _secret_values(config):
    for section in config.sections():
        for option in config.options(section):
            try:
                value = str(config.get(section, option))
            except Exception:  # an unreadable value (a missing ${VAR}): its raw text is what shows
                value = str(config.get(section, option, raw=True))
            if is_secret_key(option) and value:
                yield value
            yield from url_passwords(value)


def mask(text) -> str:
    """`text` with every secret replaced by `***`: URL passwords (`http://user:***@host`) and the
    values of luigi.cfg's secret keys and URL passwords wherever they show."""
    text = str(text)
    in_text = url_passwords(text)  # also where the same text shows one without its URL
    text = _USERINFO.sub(lambda match: f"{match['head']}:{MASK}@", text)
    for secret in sorted(_configured() | _remembered | in_text, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
        elif secret:
            text = text.replace(secret + "@", MASK + "@")
    return text


def mask_logging() -> None:
    """Mask every log record this process makes from now on, as it is made: its message with its
    arguments, and its exception's traceback (idempotent)."""
    make = logging.getLogRecordFactory()
    if getattr(make, "masking", False):
        return

    def masked_record(*args, **kwargs):
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the message: logging reports that itself
            return record
        record.msg, record.args = mask(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return record

    masked_record.masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masked_record)
