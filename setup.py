"""Ships the top-level defaults inside the wheel; everything else is in pyproject.toml.

luigi.cfg and data/iris.csv stay at the top of the checkout, where Luigi and the README expect them;
the build copies them into the `service/_defaults/` folder of the wheel, with the same layout, so an
installed irisflow finds them next to its package (service/defaults.py).
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

DEFAULT_FILES = ("luigi.cfg", os.path.join("data", "iris.csv"))


class BuildWithDefaults(build_py):
    def run(self):
        super().run()
        for name in DEFAULT_FILES:
            target = os.path.join(self.build_lib, "service", "_defaults", name)
            self.mkpath(os.path.dirname(target))
            self.copy_file(name, target)


setup(cmdclass={"build_py": BuildWithDefaults})
