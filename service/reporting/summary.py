"""What a run tells its operator at the end, on the terminal and in its one failure mail.

Failed dates are grouped by (reason, step): a year of rejected input is one group with one first error
and one command that reruns exactly its dates, not 365 paragraphs. Commands name dates as compact
ranges (`--dates 2026-01-01..2026-01-31,2026-02-03`), which `parse_dates` reads back.
"""

import datetime as dt
from dataclasses import dataclass

from tasks import partition

from ..process import invoked_as
from .plan import DEFAULT_REASONS, FORCED, PLAN_REASONS


@dataclass
class FailureGroup:
    reason: str
    step: str | None
    dates: list  # YYYY-MM-DD strings, oldest first
    first_error: str  # the error of the oldest date in the group


def date_ranges(dates):
    """'2026-01-01..2026-01-03,2026-01-07' for those four dates (any order, strings or dates)."""
    days = sorted({partition.parse_date(d) for d in dates})
    spans = []
    for day in days:
        if spans and day - spans[-1][1] == dt.timedelta(days=1):
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return ",".join(str(a) if a == b else f"{a}..{b}" for a, b in spans)


def parse_dates(text):
    """The dates of a `date_ranges` text, oldest first; ValueError naming the bad part."""
    days = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("..")
        start = partition.parse_date(first)
        days.update(partition.date_range(start, partition.parse_date(last) if last else start))
    return sorted(days)


def span(dates):
    """'2026-01-01..2026-01-20' (or the one date): the range a group of dates lies in."""
    first, last = min(dates), max(dates)
    return str(first) if first == last else f"{first}..{last}"


def backfill_command(dates, reasons=(), workers=None):
    """The command that runs exactly `dates`, whose plan reasons are `reasons` (missing, stale, ...).

    Reasons a plain backfill takes need no `--only`; stale or forced ones add it (with the default
    reasons, so a date that failed meanwhile is still taken) and forced ones `--force`. The program is
    named as the operator invoked it (`irisflow`, or `python -m service`).
    """
    command = f"{invoked_as()} backfill --dates {date_ranges(dates)}"
    extra = {str(r) for r in reasons} - {str(r) for r in DEFAULT_REASONS}
    if extra:
        command += " --only " + ",".join(r for r in PLAN_REASONS if r in extra or r in DEFAULT_REASONS)
    if FORCED in extra:
        command += " --force"
    if workers and workers > 1:
        command += f" --workers {workers}"
    return command


def failure_groups(outcomes):
    """The failed outcomes grouped by (reason, step), largest group first, each with its first error."""
    groups = {}
    for outcome in sorted((o for o in outcomes if o.status == "failure"), key=lambda o: o.date):
        key = (outcome.reason or "error", outcome.step)
        if key not in groups:
            groups[key] = FailureGroup(key[0], key[1], [], outcome.error or "no error text")
        groups[key].dates.append(outcome.date)
    return sorted(groups.values(), key=lambda g: (-len(g.dates), g.dates[0]))


def format_failures(groups, rerun):
    """The text of the groups; `rerun(dates)` gives the command that reruns a group's dates."""
    lines = []
    for group in groups:
        count = len(group.dates)
        lines.append(
            f"{count} date{'s' if count > 1 else ''} FAILED ({group.reason}) in "
            f"{group.step or 'the run'}: {date_ranges(group.dates)}"
        )
        lines.append(f"  first error ({group.dates[0]}):")
        lines.extend("    " + line for line in group.first_error.splitlines() or [""])
        if group.reason == "error":
            lines.append("  (run again with --verbose for Luigi's log and the traceback)")
        lines.append(f"  rerun: {rerun(group.dates)}")
    return "\n".join(lines)


def mail_subject(failed, recovered):
    """'irisflow: 20 dates FAILED (2026-01-01..2026-01-20), 2 recovered': the count and the range."""
    subject = f"irisflow: {len(failed)} date{'s' if len(failed) > 1 else ''} FAILED ({span(failed)})"
    return subject + (f", {len(recovered)} recovered" if recovered else "")


def mail_body(groups, recovered, rerun):
    """The mail's text: the grouped failures, then the dates that failed before and are complete now."""
    text = format_failures(groups, rerun)
    if recovered:
        text += f"\n\nRecovered (failed and mailed before, complete now): {date_ranges(recovered)}"
    return text
