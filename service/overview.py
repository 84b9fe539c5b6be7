"""What the partition view shows, read from the output tree alone: per date and step a state, per date its
reports, and per range the trend series.

Only small JSON files are read (summary.json, failure.json, and for one date or a trend its reports), and
file existence is checked with stat: ten years of dates cost milliseconds and no heavy library.

A date's state:
    complete    summary.json and every file its manifest lists exist
    stale       complete, but trained with other models than `[iris] models` now names, or its input file
                changed after it ran: `run --force` would give other outputs
    failed      its last run failed (failed/{date}/failure.json), with the reason
    incomplete  a partition exists without being complete (interrupted, or a file removed)
    running     a run holds the date's lock right now
    missing     nothing was ever written for it
"""

import datetime as dt
import fcntl
import json
import os
from collections import Counter
from pathlib import Path

from tasks import partition
from tasks.quality import DRIFT, read_drift

STATES = ("complete", "stale", "failed", "incomplete", "running", "missing")
# Each step of the pipeline and the file (or folder) whose presence shows it has run.
STEPS = (
    ("Extract", "input.csv"),
    ("Validate", "validated.csv"),
    ("Drift", DRIFT),
    ("Split", "split"),
    ("TrainModel", "models"),
    ("IrisPipeline", partition.SUMMARY),
)
STEP_NAMES = tuple(name for name, _ in STEPS)
VALIDATION = "validation.json"
MAX_SAMPLE_LINE = 1_000_000  # sample rows are looked up in the input only this far


class Overview:
    """The output tree under `root` as the view sees it; `models` is `[iris] models` now, `source_for(date)`
    the date's input path (for staleness)."""

    def __init__(self, root, models, source_for):
        self.root, self.models, self.source_for = Path(root), sorted(models), source_for

    # -- the grid ------------------------------------------------------------------------------------
    def newest_date(self):
        present = partition.dates_present(self.root)
        return present[-1] if present else None

    def rows(self, dates):
        """One row per date: its state, why, the state of each step, the best model and the drift verdict."""
        failed = _names(self.root / "failed")
        locked = _names(self.root / ".locks")
        return [self.row(date, date.isoformat() in failed, f"{date.isoformat()}.lock" in locked) for date in dates]

    def row(self, date, has_failure=True, has_lock=True):
        day = date.isoformat()
        row = {
            "date": day,
            "state": "missing",
            "reason": "",
            "best_model": None,
            "best_accuracy": None,
            "drift": None,
            "steps": {},
        }
        summary, missing = self._summary(date)
        failure = partition.read_failure(self.root, date) if has_failure else None
        if summary is not None and not missing:
            row.update(
                state="complete",
                best_model=summary.get("best_model"),
                best_accuracy=summary.get("best_accuracy"),
                drift=summary.get("drift_detected"),
            )
            row["steps"] = {name: "complete" for name in STEP_NAMES}
            row["reason"] = self._staleness(date, summary)
            if row["reason"]:
                row["state"] = "stale"
        else:
            row["steps"] = self._steps(date, failure)
            if failure is not None:
                row.update(state="failed", reason=_failure_line(failure))
            elif partition.partition_dir(self.root, date).is_dir():
                row.update(state="incomplete", reason="missing " + ", ".join(missing or [partition.SUMMARY]))
        if has_lock and _locked(self.root / ".locks" / f"{day}.lock"):
            row.update(state="running", reason="a run holds the date's lock")
            row["steps"] = {name: "running" if state != "complete" else state for name, state in row["steps"].items()}
        return row

    def _summary(self, date):
        """(summary, manifest files absent), or (None, None) when summary.json is absent or unreadable."""
        part = partition.partition_dir(self.root, date)
        try:
            summary = json.loads((part / partition.SUMMARY).read_text())
        except (OSError, ValueError):
            return None, None
        if not isinstance(summary, dict) or not isinstance(summary.get("models"), dict):
            return None, None
        return summary, [name for name in summary.get("manifest", []) if not (part / name).is_file()]

    def _staleness(self, date, summary):
        models = sorted(summary["models"])
        if models != self.models:
            return f"trained {', '.join(models)}; [iris] models is now {', '.join(self.models)}"
        try:
            changed = (
                os.stat(self.source_for(date)).st_mtime
                > os.stat(partition.partition_dir(self.root, date) / partition.SUMMARY).st_mtime
            )
        except OSError:
            return ""  # the input is gone: the outputs are all there is
        return "its input file changed after it ran" if changed else ""

    def _steps(self, date, failure):
        """Each step of a date that is not complete: complete, failed or not run."""
        part = partition.partition_dir(self.root, date)
        steps = {name: "complete" if (part / marker).exists() else "missing" for name, marker in STEPS}
        if failure is not None:
            step = failure.get("step") if failure.get("step") in STEP_NAMES else STEP_NAMES[0]
            for name in STEP_NAMES[: STEP_NAMES.index(step)]:
                if name != "Drift" or step != "Split":  # Drift and Split both follow Validate
                    steps[name] = "complete"
            steps[step] = "failed"
        return steps

    @staticmethod
    def counts(rows):
        counted = Counter(row["state"] for row in rows)
        return {state: counted.get(state, 0) for state in STATES}

    # -- one date ------------------------------------------------------------------------------------
    def detail(self, date):
        """Everything the date page shows."""
        row = self.row(date)
        summary, _ = self._summary(date)
        validation, where = self._validation(date)
        failure = partition.read_failure(self.root, date)
        rerun = f"python -m service run --date {date.isoformat()}"
        if row["state"] in ("complete", "stale", "running"):
            rerun += " --force"
        return {
            "row": row,
            "summary": summary,
            "models": self._models(date, summary),
            "validation": validation,
            "samples": self._samples(date, validation, where),
            "drift": read_drift(self.root, date),
            "failure": failure,
            "rerun": rerun,
            "files": self._files(date),
        }

    def _validation(self, date):
        for where in (partition.partition_dir(self.root, date), partition.failed_dir(self.root, date)):
            report = _read_json(where / VALIDATION)
            if isinstance(report, dict):
                return report, where
        return None, None

    def _models(self, date, summary):
        """{model: metrics}: from summary.json, else whatever metrics.json files a partial run left."""
        if summary is not None:
            return summary["models"]
        found = {}
        for path in sorted(partition.partition_dir(self.root, date).glob("models/*/metrics.json")):
            metrics = _read_json(path)
            if isinstance(metrics, dict):
                found[metrics.get("settings", {}).get("model", path.parent.name)] = metrics
        return found

    def _samples(self, date, validation, where):
        """{line number: the input's text on that line} for every example line of the validation report."""
        if not validation:
            return {}
        wanted = {
            example["line"]
            for entry in validation.get("failures", []) + validation.get("dropped", [])
            for example in entry.get("examples", [])
            if isinstance(example.get("line"), int)
        }
        wanted = {line for line in wanted if line <= MAX_SAMPLE_LINE}
        found = {}
        try:
            with open(where / "input.csv", encoding="utf-8", errors="replace") as handle:
                for number, text in enumerate(handle, start=1):
                    if number > max(wanted, default=0):
                        break
                    if number in wanted:
                        found[number] = text.rstrip("\r\n")[:500]
        except OSError:
            pass
        return found

    def _files(self, date):
        """[(kind, relative path, size)] of the date's partition ("partition") and failure record ("failed")."""
        files = []
        for kind, folder in (
            ("partition", partition.partition_dir(self.root, date)),
            ("failed", partition.failed_dir(self.root, date)),
        ):
            for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
                if path.is_file() and not path.is_symlink():
                    files.append((kind, path.relative_to(folder).as_posix(), path.stat().st_size))
        return files

    def file_path(self, kind, date, relative):
        """The real path of a file the date page links to, or None: only regular files inside the date's
        partition or failure record are served, whatever the path says (.., symlinks, absolute parts)."""
        folder = (partition.partition_dir if kind == "partition" else partition.failed_dir)(self.root, date)
        if (
            not relative
            or relative.startswith("/")
            or "\\" in relative
            or any(part in ("", ".", "..") for part in relative.split("/"))
        ):
            return None
        base, path = os.path.realpath(folder), os.path.realpath(folder / relative)
        if os.path.commonpath([base, path]) != base or not os.path.isfile(path):
            return None
        return Path(path)

    # -- trends --------------------------------------------------------------------------------------
    def trends(self, dates):
        """Series over the dates: accuracy per model, rows rejected, PSI per feature (None where unknown)."""
        accuracy, rejected, psi = {}, [], {}
        for index, date in enumerate(dates):
            summary, _ = self._summary(date)
            for model, metrics in (summary or {}).get("models", {}).items():
                accuracy.setdefault(model, [None] * len(dates))[index] = metrics.get("accuracy")
            validation, _ = self._validation(date)
            rejected.append(validation["rows"] - validation["valid_rows"] if validation else None)
            for feature, score in ((read_drift(self.root, date) or {}).get("features") or {}).items():
                psi.setdefault(feature, [None] * len(dates))[index] = score.get("psi")
        return {"dates": list(dates), "accuracy": accuracy, "rejected": rejected, "psi": psi}


def month_range(month):
    """The first and last date of a month given as a date inside it."""
    first = month.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return first, following - dt.timedelta(days=1)


def _names(folder):
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _locked(path):
    """True when a process holds the lock file; asked without waiting, and released at once."""
    try:
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        pass
    return False


def _failure_line(failure):
    headline = (failure.get("error") or "").partition("\n")[0]
    return f"{failure.get('reason')} in {failure.get('step') or 'the run'}: {headline}".rstrip(": ")


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
