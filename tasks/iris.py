"""The Iris pipeline as Luigi tasks: IrisData → Extract → Validate → (Drift, Split → TrainModel×N) → IrisPipeline.

Each task reads its input targets, calls one plain function from `steps`/`schema` and writes its output
targets under `{output_root}/{YYYY-MM-DD}/`; every write goes to a temporary file renamed into place, so
a target that exists is whole. Run it with the stock Luigi command:

    PYTHONPATH=. luigi --module tasks.iris IrisPipeline --date 2026-11-24 --local-scheduler
"""
import hashlib
import json
import os
from pathlib import Path

import luigi
from luigi.task import flatten

from . import partition
from .config import iris, quality


def source_path(date, source=None):
    """The day's input file: `source` (default `[iris] source`) with '{date}' replaced by YYYY-MM-DD."""
    return (source or iris().source).replace("{date}", date.isoformat())


def data_dir():
    """The directory every day's input must stay inside: `[iris] source` up to its first '{date}'."""
    return os.path.dirname(iris().source.split("{date}", 1)[0]) or "."


def write_json(target, obj):
    with target.open("w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)


def read_json(target):
    with target.open("r") as handle:
        return json.load(handle)


def write_csv(target, frame):
    with target.open("w") as handle:
        frame.to_csv(handle, index=False)


def read_csv(target):
    import pandas as pd

    return pd.read_csv(target.path)


class IrisData(luigi.ExternalTask):
    """The day's input as it arrives from outside (`[iris] source`)."""

    date = luigi.DateParameter()

    def output(self):
        return luigi.LocalTarget(source_path(self.date))


class DatePartitionTask(luigi.Task):
    """A task whose outputs live in the date's partition directory."""

    date = luigi.DateParameter()
    output_root = luigi.OptionalParameter(
        default=None, description="Root of the date partitions (default: [iris] output_root).")

    @property
    def root(self):
        return Path(self.output_root or iris().output_root)

    def target(self, *parts):
        return luigi.LocalTarget(str(partition.partition_dir(self.root, self.date).joinpath(*parts)))


class Extract(DatePartitionTask):
    """Snapshot the day's input into its partition, so later edits of the source never change history."""

    def requires(self):
        return IrisData(date=self.date)

    def output(self):
        return self.target("input.csv")

    def run(self):
        from .schema import snapshot_source

        with self.output().temporary_path() as tmp:
            snapshot_source(self.input().path, tmp, data_dir=data_dir(), max_bytes=iris().max_source_bytes)


class Validate(DatePartitionTask):
    """Check the snapshot against the pandera schema; rejected input is quarantined under failed/."""

    def requires(self):
        return self.clone(Extract)

    def output(self):
        return {"data": self.target("validated.csv"), "report": self.target("validation.json")}

    def run(self):
        from .schema import InputRejected, read_source, validate_frame

        settings = iris()
        described = f"{source_path(self.date)} (snapshot {self.input().path})"
        try:
            frame = read_source(self.input().path, settings.max_source_bytes, shown_as=described)
            valid, report = validate_frame(frame, source=described, min_rows=settings.min_rows,
                                           max_invalid_fraction=settings.max_invalid_fraction)
        except InputRejected as exc:
            self.quarantine(exc.report or {"file": described, "passed": False, "error": str(exc)})
            raise
        write_csv(self.output()["data"], valid)
        write_json(self.output()["report"], report)

    def quarantine(self, report):
        """Move the rejected snapshot and its report to failed/{date}/ so a corrected source is re-read."""
        where = partition.failed_dir(self.root, self.date)
        where.mkdir(parents=True, exist_ok=True)
        write_json(luigi.LocalTarget(str(where / "validation.json")), report)
        snapshot = Path(self.input().path)
        snapshot.replace(where / snapshot.name)
        try:
            snapshot.parent.rmdir()
        except OSError:
            pass  # the partition still holds other files


class Drift(DatePartitionTask):
    """Compare the day's validated data with a reference: recent complete dates, or a pinned file."""

    def requires(self):
        return self.clone(Validate)

    def output(self):
        return self.target("drift.json")

    def run(self):
        from .quality import assess_drift, describe_drift
        from .schema import InputRejected

        settings = quality()
        report = assess_drift(read_csv(self.input()["data"]), self.reference(), settings, iris().features)
        if report["drift_detected"] and settings.fail_on_drift:
            failed = partition.failed_dir(self.root, self.date) / "drift.json"
            write_json(luigi.LocalTarget(str(failed)), report)
            raise InputRejected(f"{source_path(self.date)}: data drift against {report['reference']['described']}: "
                                f"{describe_drift(report)} ([quality] fail_on_drift = true)")
        write_json(self.output(), report)

    def reference(self):
        """The pinned `[quality] reference`, else validated.csv of the recent complete dates. The history
        is read from the configured output root: a forced rebuild writes this date elsewhere (staging)."""
        from .quality import history_dates

        settings = quality()
        if settings.reference:
            return {"file": settings.reference}
        root = Path(iris().output_root)
        return {"dates": [d.isoformat() for d in history_dates(root, self.date, settings.reference_days)],
                "root": str(root)}


class Split(DatePartitionTask):
    """Stratified, seeded train/test split of the validated data."""

    test_size = luigi.FloatParameter()
    seed = luigi.IntParameter()

    def requires(self):
        return self.clone(Validate)

    def output(self):
        folder = f"split/test_size-{self.test_size:g}_seed-{self.seed}"
        return {"train": self.target(folder, "train.csv"), "test": self.target(folder, "test.csv")}

    def run(self):
        from .steps import split

        train, test = split(read_csv(self.input()["data"]), self.test_size, self.seed)
        write_csv(self.output()["train"], train)
        write_csv(self.output()["test"], test)


class TrainModel(DatePartitionTask):
    """Fit one registry model on the training split and evaluate it on the test split."""

    model = luigi.Parameter()
    features = luigi.ListParameter()
    hyperparameters = luigi.DictParameter(default={})
    test_size = luigi.FloatParameter()
    seed = luigi.IntParameter()

    def requires(self):
        return self.clone(Split)

    @property
    def settings(self):
        return {"model": self.model, "features": list(self.features),
                "hyperparameters": dict(self.hyperparameters), "test_size": self.test_size,
                "seed": self.seed}

    def output(self):
        digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:10]
        folder = f"models/{self.model}-{digest}"
        return {"model": self.target(folder, "model.joblib"), "metrics": self.target(folder, "metrics.json")}

    def run(self):
        import joblib

        from .steps import evaluate, train

        estimator = train(read_csv(self.input()["train"]), self.model, self.features,
                          self.hyperparameters, self.seed)
        metrics = evaluate(estimator, read_csv(self.input()["test"]), self.features)
        with self.output()["model"].temporary_path() as tmp:
            joblib.dump(estimator, tmp)
        write_json(self.output()["metrics"], {**metrics, "settings": self.settings})


class IrisPipeline(DatePartitionTask):
    """The whole date: its Drift and one TrainModel per `[iris] models` entry, summarised in summary.json.

    The date is complete when summary.json and every file its manifest lists exist, so deleting one
    model's output makes the date incomplete again and the next run rebuilds only that piece.
    """

    def requires(self):
        settings = iris()
        return {"drift": self.clone(Drift),
                "models": {name: self.clone(TrainModel, model=name, features=settings.features,
                                            hyperparameters=settings.hyperparameters.get(name, {}),
                                            test_size=settings.test_size, seed=settings.seed)
                           for name in settings.models}}

    def output(self):
        return self.target(partition.SUMMARY)

    def complete(self):
        return partition.is_complete(self.root, self.date)

    def run(self):
        from .steps import summarize

        summary = summarize(self.date, {name: read_json(out["metrics"]) for name, out in self.input()["models"].items()})
        summary["drift_detected"] = read_json(self.input()["drift"])["drift_detected"]
        summary["manifest"] = self.manifest()
        write_json(self.output(), summary)

    def manifest(self):
        """Every file of the date's partition that the upstream tasks wrote, relative to the partition."""
        base = partition.partition_dir(self.root, self.date)
        paths, pending = set(), list(flatten(self.requires()))
        while pending:
            task = pending.pop()
            for target in flatten(task.output()):
                path = Path(target.path)
                if base in path.parents:
                    paths.add(path.relative_to(base).as_posix())
            pending.extend(flatten(task.requires()))
        return sorted(paths)
