"""The default luigi.cfg and Iris CSV for an installed irisflow, used where the working directory has none.

Luigi reads `luigi.cfg` from the working directory, which is how the checkout works (`make run`). An
installed irisflow (`pip install .`, the wheel) runs from anywhere, so its wheel carries the checkout's
luigi.cfg and data/iris.csv in `service/_defaults/` (setup.py copies them there at build time), and
every entry point calls `use_packaged_defaults()` first. Run from a source tree or an editable install,
the same two files are found at the top of the checkout.
"""

import configparser
import os
from pathlib import Path

CONFIG_NAME = "luigi.cfg"


def packaged_defaults_dir() -> Path | None:
    """The folder holding the default luigi.cfg and data/iris.csv: `_defaults` inside the installed
    package, else the checkout this package lies in; None if neither has them."""
    package = Path(__file__).resolve().parent
    for folder in (package / "_defaults", package.parent):
        if (folder / CONFIG_NAME).is_file():
            return folder
    return None


def use_packaged_defaults() -> Path | None:
    """With no luigi.cfg in the working directory, read the packaged one in its place.

    It goes where Luigi would have read ./luigi.cfg, so /etc/luigi/luigi.cfg comes before it and the
    file named by LUIGI_CONFIG_PATH (the installer's /etc/irisflow/luigi.cfg) still overrides any key.
    `[iris] source` left at the packaged value is a path relative to the packaged file, so it is made
    absolute: the Iris CSV that came with the package. Output and state paths stay relative to the
    working directory, as in a checkout. Returns the packaged luigi.cfg used, or None.
    """
    if os.path.exists(CONFIG_NAME):
        return None
    folder = packaged_defaults_dir()
    if folder is None:
        return None
    from luigi.configuration import LuigiConfigParser, get_config

    packaged = str(folder / CONFIG_NAME)
    paths = LuigiConfigParser._config_paths
    if packaged not in paths:
        paths.insert(paths.index(CONFIG_NAME) + 1 if CONFIG_NAME in paths else len(paths), packaged)
        try:
            LuigiConfigParser.reload()
        except configparser.Error:  # a malformed file: `service.config.checked_settings` names its line
            pass
    source = get_config().get("iris", "source", None)
    if source and not os.path.isabs(source) and source == _packaged_value(packaged, "iris", "source"):
        get_config().set("iris", "source", str(folder / source).replace("%", "%%"))
    return Path(packaged)


def _packaged_value(path: str, section: str, option: str) -> str | None:
    from configparser import ConfigParser

    parser = ConfigParser(interpolation=None)
    parser.read(path)
    return parser.get(section, option, fallback=None)
