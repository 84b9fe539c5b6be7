"""How far a backfill has got, told in the way that fits where it runs.

On a terminal: one tqdm bar (dates done, failed, rate, ETA) redrawn in place. Anywhere else (a pipe,
a file, the journal under systemd): one plain line per finished date and, every `interval` seconds, a
line with the rate and the ETA, so a log stays readable and says when the run should end.
"""

import logging
import sys
import time

from .. import journal

PLAIN_INTERVAL = 30.0  # seconds between ETA lines when not on a terminal


class Progress:
    """Call `finished(outcome)` as each date ends, `write(text)` for any other line, `close()` at the end."""

    def __init__(self, total, stream=None, interval=PLAIN_INTERVAL, clock=time.monotonic):
        self.total, self.done, self.failed = total, 0, 0
        self.stream = stream or sys.stderr
        self.interval, self.clock = interval, clock
        self.started = self.last_line = clock()
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, unit="date", file=self.stream, dynamic_ncols=True, smoothing=0.1, postfix={"failed": 0}
            )

    def finished(self, outcome):
        self.done += 1
        self.failed += outcome.status == "failure"
        if self.bar is not None:
            self.bar.set_postfix(failed=self.failed, refresh=False)
            self.bar.update(1)
            return
        failed = outcome.status == "failure"
        how = f"FAILED ({outcome.reason} in {outcome.step})" if failed else outcome.status
        self.write(f"[{self.done}/{self.total}] {outcome.date} {how}", logging.ERROR if failed else logging.INFO)
        now = self.clock()
        if now - self.last_line >= self.interval and self.done < self.total:
            self.last_line = now
            self.write(self.eta_line(now))

    def eta_line(self, now):
        """'progress: 40/365 dates done, 2 failed, 1.3 dates/s, ETA 0:04:10'."""
        rate = self.done / max(now - self.started, 1e-9)
        left = round((self.total - self.done) / rate) if rate else 0
        return (
            f"progress: {self.done}/{self.total} dates done, {self.failed} failed, {rate:.2f} dates/s, "
            f"ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
        )

    def write(self, text, level=logging.INFO):
        """A line of its own, above the bar when there is one; with its journal priority under systemd."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        elif journal.is_journal(self.stream):
            print(f"<{journal.priority(level)}>{text}", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
