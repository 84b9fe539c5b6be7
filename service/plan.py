"""What a backfill would do with each date, and why: the plan `backfill --dry-run` prints and `status` shows.

Read from the output tree alone (`tasks.partition.inspect` and the failure records) and today's `[iris]`
settings; nothing heavy is imported and nothing is written. Each date gets one reason:

    missing     no outputs yet                        incomplete  a partition without all its files
    failed      the last run failed (reason, step)    damaged     outputs that cannot be trusted
    stale       complete, but built with other settings than today's (which ones differ)
    forced      complete, rebuilt because of --force  complete    complete with today's settings: skipped

A plain backfill builds missing, failed, incomplete and damaged dates; `--only` chooses the reasons, so
`--only stale` rebuilds exactly the stale dates. Stale, forced and damaged dates are rebuilt from scratch
(the runner's `force`: the old partition stays until the new one is complete), since reusing their files
would keep what made them stale or damaged.
"""

from dataclasses import dataclass

from tasks import partition

from .summary import PLAN_REASONS

REASONS = PLAN_REASONS + ("complete",)
REBUILT_FROM_SCRATCH = ("stale", "forced", "damaged")


@dataclass
class Decision:
    date: object  # datetime.date
    reason: str  # one of REASONS
    detail: str  # why, in a few words
    problems: list  # the files that are wrong, or the settings that differ, one string each
    failure: dict | None = None  # the failure record of a failed date
    history_changed: dict | None = None  # a complete date whose input differs from its first snapshot

    @property
    def needs_rebuild(self):
        return self.reason in REBUILT_FROM_SCRATCH

    def as_dict(self):
        entry = {"date": self.date.isoformat(), "reason": self.reason, "detail": self.detail, "problems": self.problems}
        extra = {"failure": self.failure, "history_changed": self.history_changed}
        return {**entry, **{key: value for key, value in extra.items() if value}}


def plan(root, dates, wanted, force=False, verify=False):
    """One Decision per date, in order; `wanted` is today's settings (`tasks.iris.pipeline_settings()`).
    `verify` also compares every file with its recorded sha256 (same-size damage)."""
    return [decide(root, date, wanted, force, verify) for date in dates]


def decide(root, date, wanted, force=False, verify=False):
    inspection = partition.inspect(root, date, verify)
    if inspection.state == "complete":
        changes = setting_changes(inspection.summary["settings"], wanted)
        if force:
            return Decision(date, "forced", "complete; rebuilt as --force asks", changes)
        if changes:
            return Decision(date, "stale", "built with other settings: " + "; ".join(changes), changes)
        changed = inspection.summary.get("history_changed")
        if changed:
            return Decision(
                date,
                "complete",
                f"skipped; history changed: {changed.get('source')} differs from the first snapshot",
                [],
                history_changed=changed,
            )
        return Decision(date, "complete", "skipped", [])
    if inspection.state == "damaged":
        return Decision(date, "damaged", "; ".join(inspection.problems), inspection.problems)
    failure = partition.read_failure(root, date)
    if failure is not None:
        headline = str(failure.get("error") or "").partition("\n")[0]
        detail = f"{failure.get('reason')} in {failure.get('step') or 'the run'}: {headline}".rstrip(": ")
        return Decision(date, "failed", detail, [], failure)
    if inspection.state == "incomplete":
        return Decision(date, "incomplete", "; ".join(inspection.problems), inspection.problems)
    return Decision(date, "missing", "no outputs yet", [])


def setting_changes(built, wanted):
    """'models: knn, svc -> knn', 'hyperparameters of knn: {...} -> {...}': what differs between the settings
    a date was built with (summary.json's `settings`) and today's, one string each."""
    changes = []
    old_models, new_models = sorted(built.get("models") or []), sorted(wanted["models"])
    if old_models != new_models:
        changes.append(f"models: {', '.join(old_models)} -> {', '.join(new_models)}")
    for key in ("features", "test_size", "seed"):
        if built.get(key) != wanted[key]:
            old, new = built.get(key), wanted[key]
            shown = (", ".join(v) if isinstance(v, list) else v for v in (old, new))
            changes.append("{}: {} -> {}".format(key, *shown))
    old_hyper = built.get("hyperparameters") or {}
    for name in (m for m in new_models if m in old_models):
        if (old_hyper.get(name) or {}) != (wanted["hyperparameters"].get(name) or {}):
            changes.append(
                f"hyperparameters of {name}: {old_hyper.get(name) or {}} -> {wanted['hyperparameters'].get(name) or {}}"
            )
    return changes


def count(decisions):
    """{reason: number of dates} in REASONS order, leaving out reasons no date has."""
    return {reason: n for reason in REASONS if (n := sum(d.reason == reason for d in decisions))}
