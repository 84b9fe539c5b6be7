"""What the partition view shows, read from the output tree: per date its state (`service.state`, the one
place that works it out), the state of each step, its reports, and per range the trend series.

Only small JSON files are read (summary.json, failure.json, and for one date or a trend its reports), and
file existence is checked with stat: ten years of dates cost milliseconds and no heavy library. Whatever
a report file holds, only values of the expected shape reach a page: a date rejected while being read,
failed before Validate, or with a summary of the wrong shape renders like any other.
"""

import fnmatch
import io
import os
from collections import Counter
from pathlib import Path

from tasks import partition
from tasks.partition.durable import MAX_JSON_BYTES, files_in
from tasks.quality import DRIFT, read_drift

from ..champion.store import decisions_by_date
from ..secrets import mask
from ..state import DateStates, State
from .shown import drift_shown, failure_shown, metrics_shown, validation_shown

STATES = tuple(str(state) for state in State)
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
MAX_SAMPLE_CHARS = 500


def _text_lines(path):
    """The file's lines as text (undecodable bytes replaced); on a store, its first MAX_JSON_BYTES."""
    if partition.is_object(path):
        data = partition.durable.read_bytes(path, MAX_JSON_BYTES)
        return io.StringIO(data.decode("utf-8", errors="replace"))
    return open(path, encoding="utf-8", errors="replace")


class Overview:
    """The output tree as the view sees it, through `states` (a `service.state.DateStates`)."""

    def __init__(self, states: DateStates):
        self.states = states
        self.root = states.root

    # -- the grid ------------------------------------------------------------------------------------
    def newest_date(self):
        present = partition.dates_present(self.root)
        return present[-1] if present else None

    def rows(self, dates):
        """One row per date: its state, why, the state of each step, the best model and the drift verdict."""
        if partition.is_object(self.root):  # each row asks the store: side by side
            return partition.objects.in_parallel(self.row, dates)
        return [self.row(date) for date in dates]

    def row(self, date):
        found = self.states.of(date)
        summary = found.summary
        row = {
            "date": date.isoformat(),
            "state": str(found.state),
            "reason": mask(found.detail) if found.detail else found.detail,
            "best_model": summary["best_model"] if summary else None,
            "best_accuracy": summary["best_accuracy"] if summary else None,
            "drift": summary.get("drift_detected") is True if summary else None,
            "steps": self._steps(date, found),
        }
        return row

    def _steps(self, date, found):
        """Each step of the date: complete, failed, running or missing."""
        if found.state in (State.COMPLETE, State.STALE):
            return {name: "complete" for name in STEP_NAMES}
        present = {name.split("/", 1)[0] for name in files_in(partition.partition_dir(self.root, date))}
        steps = {name: "complete" if marker in present else "missing" for name, marker in STEPS}
        failure = found.failure if found.state == State.FAILED else None
        if failure is not None:
            step = failure.get("step") if failure.get("step") in STEP_NAMES else STEP_NAMES[0]
            for name in STEP_NAMES[: STEP_NAMES.index(step)]:
                if name != "Drift" or step != "Split":  # Drift and Split both follow Validate
                    steps[name] = "complete"
            steps[step] = "failed"
        if found.state == State.RUNNING:
            steps = {name: "running" if state != "complete" else state for name, state in steps.items()}
        return steps

    @staticmethod
    def counts(rows):
        counted = Counter(row["state"] for row in rows)
        return {state: counted.get(state, 0) for state in STATES}

    # -- one date ------------------------------------------------------------------------------------
    def detail(self, date, rerun):
        """Everything the date page shows; `rerun` is the command that runs the date again."""
        row = self.row(date)
        found = self.states.of(date)
        validation, where = self._validation(date)
        return {
            "row": row,
            "summary": found.summary,
            "models": self._models(date, found.summary),
            "validation": validation,
            "samples": self._samples(validation, where),
            "drift": drift_shown(read_drift(self.root, date)),
            "failure": failure_shown(found.failure),
            "rerun": rerun + (" --force" if row["state"] in ("complete", "stale", "running") else ""),
            "files": self._files(date),
            "champion_decision": decisions_by_date(self.root).get(date.isoformat()),
        }

    def _validation(self, date):
        """(the date's validation report as the page shows it, the folder it lies in), or (None, None)."""
        for where in (partition.partition_dir(self.root, date), partition.failed_dir(self.root, date)):
            report = validation_shown(partition.durable.read_json(where / VALIDATION))
            if report is not None:
                return report, where
        return None, None

    def _models(self, date, summary):
        """{model: metrics}: from summary.json, else whatever metrics.json files a partial run left."""
        if summary is not None:
            return {name: metrics_shown(metrics) for name, metrics in summary["models"].items()}
        found = {}
        part = partition.partition_dir(self.root, date)
        for relative in sorted(fnmatch.filter(files_in(part), "models/*/metrics.json")):
            metrics = metrics_shown(partition.durable.read_json(part / relative))
            if metrics is not None:
                settings = metrics.get("settings")
                name = settings.get("model") if isinstance(settings, dict) else None
                found[str(name or relative.split("/")[1])] = metrics
        return found

    def _samples(self, validation, where):
        """{line number: the input's text on that line} for every example line of the validation report."""
        if not validation:
            return {}
        wanted = {
            example["line"]
            for entry in validation["failures"] + validation["dropped"]
            for example in entry["examples"]
            if isinstance(example.get("line"), int) and 0 < example["line"] <= MAX_SAMPLE_LINE
        }
        found = {}
        try:
            with _text_lines(where / "input.csv") as handle:
                for number, text in enumerate(handle, start=1):
                    if number > max(wanted, default=0):
                        break
                    if number in wanted:
                        found[number] = text.rstrip("\r\n")[:MAX_SAMPLE_CHARS]
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
            files.extend((kind, relative, size) for relative, size in sorted(files_in(folder).items()))
        return files

    def file_path(self, kind, date, relative):
        """The real path of a file the date page links to, or None: only regular files inside the date's
        partition or failure record are served, whatever the path says (.., symlinks, absolute parts, NUL)."""
        folder = (partition.partition_dir if kind == "partition" else partition.failed_dir)(self.root, date)
        if (
            not relative
            or relative.startswith("/")
            or "\\" in relative
            or "\0" in relative
            or any(part in ("", ".", "..") for part in relative.split("/"))
        ):
            return None
        if partition.is_object(folder):
            return folder / relative if relative in files_in(folder) else None
        base, path = os.path.realpath(folder), os.path.realpath(folder / relative)
        if os.path.commonpath([base, path]) != base or not os.path.isfile(path):
            return None
        return Path(path)

    # -- trends --------------------------------------------------------------------------------------
    def trends(self, dates):
        """Series over the dates: accuracy per model, rows rejected, PSI per feature (None where unknown)."""
        accuracy, rejected, psi = {}, [], {}
        for index, date in enumerate(dates):
            summary = partition.read_summary(self.root, date)
            for model, metrics in (summary or {}).get("models", {}).items():
                accuracy.setdefault(model, [None] * len(dates))[index] = metrics["accuracy"]
            validation, _ = self._validation(date)
            rejected.append(validation["rejected_rows"] if validation else None)
            drift = drift_shown(read_drift(self.root, date)) or {}
            for feature, score in drift.get("features", {}).items():
                psi.setdefault(feature, [None] * len(dates))[index] = score["psi"]
        return {"dates": list(dates), "accuracy": accuracy, "rejected": rejected, "psi": psi}
