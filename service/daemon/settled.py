"""The daemon's settled dates: failures that no pass runs again until the date's input file changes.

A date whose input was rejected, or missing at its deadline, could only fail (and be mailed) the same
way again; it is *settled* with the fingerprint of its input file as it was, and a pass takes it up again
once the file changes. `{state_dir}/settled.json` keeps this across restarts.
"""

import json
import logging
import os
from pathlib import Path

from tasks.config import source_path

from ..state import Reason

LOG = logging.getLogger("irisflow.daemon")
# Reasons whose date is not run again until its input file changes: rerunning could only fail (and mail)
# the same way. Other failures (errors, a full disk, an unreachable scheduler) are retried every pass.
SETTLING_REASONS = (Reason.VALIDATION, Reason.MISSING_INPUT)


def source_fingerprint(date):
    """What identifies the date's input file as it is now (None when absent): a change means new input."""
    try:
        stat = os.stat(source_path(date))
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


class Settled:
    """{date: input fingerprint} of the settled dates, loaded from and saved to `path`."""

    def __init__(self, path):
        self.path = Path(path)
        self.dates = self._load()

    def holds(self, date):
        """True while the date is settled and its input file is as it was then."""
        return self.dates.get(date.isoformat(), "unsettled") == source_fingerprint(date)

    def settle(self, date, reason, fingerprint):
        if reason in SETTLING_REASONS:
            self.dates[date] = fingerprint

    def release(self, date):
        self.dates.pop(date, None)

    def clear(self):
        self.dates.clear()

    def _load(self):
        try:
            settled = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            LOG.warning("ignoring unreadable %s: %s", self.path, exc)
            return {}
        return settled if isinstance(settled, dict) else {}

    def save(self, oldest):
        """Write the settled dates from `oldest` on (the window's, so the file stays small), atomically."""
        self.dates = {date: fingerprint for date, fingerprint in self.dates.items() if date >= oldest.isoformat()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.dates, indent=1, sort_keys=True))
        os.replace(temporary, self.path)
