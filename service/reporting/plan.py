"""What a backfill would do with each date, and why: the plan `backfill --dry-run` prints and `backfill` runs.

Each date's reason is its state (`service.state`), or `forced` for a complete date that `--force`
rebuilds. A plain backfill builds the DEFAULT_REASONS; `--only` chooses among PLAN_REASONS, so
`--only stale` rebuilds exactly the stale dates. A running date is built too: its build waits for the
other process's task locks and finds the work done, or does it should that process have died. Complete
dates are never built. Stale, forced and damaged dates are rebuilt from scratch (the runner's
`force`: the old partition stays until the new one is complete), since reusing their files would keep
what made them stale or damaged.
"""

from dataclasses import dataclass

from ..state import DateState, DateStates, State

# What a plain backfill builds; the other plan reasons (stale, forced, not_due) need `--only`.
DEFAULT_REASONS = (State.MISSING, State.FAILED, State.WAITING, State.INCOMPLETE, State.DAMAGED, State.RUNNING)
FORCED = "forced"
PLAN_REASONS = tuple(str(reason) for reason in DEFAULT_REASONS) + (str(State.STALE), FORCED, str(State.NOT_DUE))
REBUILT_FROM_SCRATCH = (str(State.STALE), FORCED, str(State.DAMAGED))


@dataclass
class Decision:
    """A date of the plan: its state, the reason the plan gives it (the state, or forced), and whether
    the backfill builds it."""

    found: DateState
    reason: str
    build: bool

    @property
    def date(self):
        return self.found.date

    @property
    def needs_rebuild(self):
        return self.reason in REBUILT_FROM_SCRATCH

    def as_dict(self):
        return {**self.found.as_dict(), "reason": self.reason, "action": "build" if self.build else "skip"}


def plan(states: DateStates, dates, *, only=None, force=False, verify=False) -> list[Decision]:
    """One Decision per date, in order. `only` (reasons) chooses what is built (default DEFAULT_REASONS
    plus forced); `force` turns complete and stale dates into forced ones; `verify` also compares every
    file with its recorded sha256 (same-size damage)."""
    chosen = set(only or [str(reason) for reason in DEFAULT_REASONS] + [FORCED])
    decisions = []
    for found in states.of_dates(dates, verify):
        reason = FORCED if force and found.state in (State.COMPLETE, State.STALE) else str(found.state)
        decisions.append(Decision(found, reason, reason in chosen))
    return decisions


def count(decisions) -> dict[str, int]:
    """{reason: number of dates}, in the order of the states, forced after stale."""
    order = [str(state) for state in State]
    order.insert(order.index(str(State.STALE)) + 1, FORCED)
    return {reason: n for reason in order if (n := sum(d.reason == reason for d in decisions))}
