"""The Iris pipeline as Luigi tasks: IrisData → Extract → Validate → (Drift, Split → TrainModel×N) → IrisPipeline.

Each task reads its input targets, calls one plain function from `steps`/`schema`/`quality` and writes its
outputs into the date's partition through `tasks.base.DatePartitionTask` (temporary files, fsync, rename,
then a receipt), so a task's outputs appear together and a task is done only when its receipt matches its
files and its inputs. The date and the settings are the only parameters, so every entry point builds the
same task ids. Run it with the stock Luigi command:

    PYTHONPATH=. luigi --module tasks.iris IrisPipeline --date 2026-11-24 --local-scheduler
"""

import json
import logging
from pathlib import Path

import luigi

from . import config, lineage, partition  # noqa: F401 - importing lineage hangs its handlers on the tasks' events
from .base import DatePartitionTask
from .config import data_dir, pipeline_settings, plain, quality, source_path
from .files import local_copy, read_csv, read_json, write_csv, write_json, write_model

LOG = logging.getLogger("irisflow.tasks")


class IrisData(luigi.ExternalTask):
    """The day's input as it arrives from outside (`[iris] source`)."""

    date = luigi.DateParameter()

    def output(self):
        source = source_path(self.date)
        if partition.objects.is_object_url(source):
            from luigi.contrib.s3 import S3Target

            return S3Target(source, client=partition.objects.luigi_client())
        return luigi.LocalTarget(source)


class Extract(DatePartitionTask):
    """Snapshot the day's input into its partition, so later edits of the source never change history."""

    def requires(self):
        return IrisData(date=self.date)

    def output(self):
        return self.target("input.csv")

    def produce(self):
        from .reading import snapshot_source

        previous = self.previous_snapshot()
        extra = {}
        max_bytes = config.settings().max_source_bytes
        with self.publishing(extra) as snapshot, local_copy(self.input().path, max_bytes) as (source, folder):
            snapshot_source(source, snapshot, data_dir=folder or data_dir(), max_bytes=max_bytes)
            now = partition.file_record(snapshot)["sha256"]
            if previous and previous != now:
                LOG.warning(
                    "%s: history changed: %s now differs from the snapshot this date was built from "
                    "(sha256 %s, now %s)",
                    self.date,
                    self.input().path,
                    previous[:12],
                    now[:12],
                )
                extra["history_changed"] = {"source": self.input().path, "previous_sha256": previous}

    def previous_snapshot(self):
        """The sha256 the date's snapshot had when last recorded (its receipt, or else its summary)."""
        receipt = partition.read_receipt(self.folder, self.receipt)
        if receipt is not None:
            return receipt["outputs"].get("input.csv", {}).get("sha256")
        summary = partition.read_summary(self.root, self.date)
        return summary["manifest"].get("input.csv", {}).get("sha256") if summary else None


class Validate(DatePartitionTask):
    """Check the snapshot against the pandera schema; rejected input is quarantined under failed/."""

    def requires(self):
        return self.clone(Extract)

    def output(self):
        return {"data": self.target("validated.csv"), "report": self.target("validation.json")}

    def produce(self):
        from .reading import read_source
        from .schema import InputRejected, validate_frame

        settings = config.settings()
        # Relative to the output root, so the report (and its hash) is the same wherever the root lives.
        described = f"{source_path(self.date)} (snapshot {self.date.isoformat()}/{Path(self.input().path).name})"
        try:
            with local_copy(self.input().path, settings.max_source_bytes) as (snapshot, _):
                frame = read_source(snapshot, settings.max_source_bytes, shown_as=described)
            valid, report = validate_frame(
                frame, source=described, min_rows=settings.min_rows, max_invalid_fraction=settings.max_invalid_fraction
            )
        except InputRejected as exc:
            self.quarantine(exc.report or {"file": described, "passed": False, "error": str(exc)})
            raise
        with self.publishing() as out:
            write_csv(out["data"], valid)
            write_json(out["report"], report)

    def quarantine(self, report):
        """Move the rejected snapshot and its report to failed/{date}/ so a corrected source is re-read."""
        extract = self.requires()
        partition.quarantine(self.root, self.date, Path(self.input().path).name, extract.receipt, report)


class Drift(DatePartitionTask):
    """Compare the day's validated data with a reference: recent complete dates, or a pinned file."""

    def requires(self):
        return self.clone(Validate)

    def output(self):
        return self.target("drift.json")

    def produce(self):
        from .quality import assess_drift, describe_drift
        from .schema import InputRejected

        settings = quality()
        report = assess_drift(read_csv(self.input()["data"]), self.reference(), settings, config.settings().features)
        if report["drift_detected"] and settings.fail_on_drift:
            failed = partition.failed_dir(self.root, self.date) / "drift.json"
            partition.write_durably(failed, json.dumps(report, indent=2, sort_keys=True))
            raise InputRejected(
                f"{source_path(self.date)}: data drift against {report['reference']['described']}: "
                f"{describe_drift(report)} ([quality] fail_on_drift = true)"
            )
        with self.publishing() as out:
            write_json(out, report)

    def reference(self):
        """The pinned `[quality] reference`, else validated.csv of the recent complete dates. The history
        is read from the configured output root: a forced rebuild writes this date elsewhere (staging)."""
        from .quality import history_dates

        settings = quality()
        if settings.reference:
            return {"file": settings.reference}
        root = partition.location(config.settings().output_root)
        return {
            "dates": [d.isoformat() for d in history_dates(root, self.date, settings.reference_days)],
            "root": str(root),
        }


class Split(DatePartitionTask):
    """Stratified, seeded train/test split of the validated data."""

    test_size = luigi.FloatParameter()
    seed = luigi.IntParameter()

    def requires(self):
        return self.clone(Validate)

    def output(self):
        folder = f"split/test_size-{self.test_size:g}_seed-{self.seed}"
        return {"train": self.target(folder, "train.csv"), "test": self.target(folder, "test.csv")}

    def produce(self):
        from .steps import split

        train, test = split(read_csv(self.input()["data"]), self.test_size, self.seed)
        with self.publishing() as out:
            write_csv(out["train"], train)
            write_csv(out["test"], test)


class TrainModel(DatePartitionTask):
    """Fit one registry model on the training split and evaluate it on the test split."""

    model = luigi.Parameter()
    features = luigi.ListParameter()
    hyperparameters: luigi.DictParameter[dict] = luigi.DictParameter(default={})
    test_size = luigi.FloatParameter()
    seed = luigi.IntParameter()

    def requires(self):
        return self.clone(Split)

    @property
    def settings(self):
        return {
            "model": self.model,
            "features": list(self.features),
            "hyperparameters": plain(self.hyperparameters),
            "test_size": self.test_size,
            "seed": self.seed,
        }

    def output(self):
        from .models import model_folder

        folder = model_folder(self.settings)
        return {"model": self.target(folder, "model.joblib"), "metrics": self.target(folder, "metrics.json")}

    def produce(self):
        from .steps import evaluate, train

        estimator = train(read_csv(self.input()["train"]), self.model, self.features, self.hyperparameters, self.seed)
        metrics = evaluate(estimator, read_csv(self.input()["test"]), self.features)
        with self.publishing() as out:
            write_model(out["model"], estimator)
            write_json(out["metrics"], {**metrics, "settings": self.settings})


class IrisPipeline(DatePartitionTask):
    """The whole date: its Drift and one TrainModel per `[iris] models` entry, summarised in summary.json.

    summary.json is the date's seal: written last, it lists every other file of the partition with its
    size and sha256, so a date is complete exactly when its summary is well formed and its files match.
    """

    def requires(self):
        settings = pipeline_settings()
        return {
            "drift": self.clone(Drift),
            "models": {
                name: self.clone(
                    TrainModel,
                    model=name,
                    features=settings["features"],
                    hyperparameters=settings["hyperparameters"][name],
                    test_size=settings["test_size"],
                    seed=settings["seed"],
                )
                for name in settings["models"]
            },
        }

    def output(self):
        return self.target(partition.SUMMARY)

    def is_done(self):
        """Complete, and sealing the receipts as they are now (a task rebuilt with other bytes unseals it)."""
        found = partition.inspect(self.root, self.date)
        return found.state == "complete" and found.summary["manifest"] == self.manifest()[0]

    def produce(self):
        from .steps import summarize

        models = self.input()["models"]
        summary = summarize(self.date, {name: read_json(out["metrics"]) for name, out in models.items()})
        summary["drift_detected"] = read_json(self.input()["drift"])["drift_detected"]
        summary["settings"] = pipeline_settings()
        summary["manifest"], changed = self.manifest()
        if summary["manifest"] is None:  # changed under us: this run fails, and the next one rebuilds it
            raise RuntimeError(f"{self.date}: a task's receipt disappeared while the summary was being written")
        if changed:
            summary["history_changed"] = changed
        partition.remove_leftovers(self.folder)
        partition.write_durably(self.folder / partition.SUMMARY, json.dumps(summary, indent=2, sort_keys=True))

    def manifest(self):
        """({file: {size, sha256}} of every receipt and every file they record, or None if a task is not
        done; any history change a receipt records). The receipts as this build checked or wrote them
        (`DatePartitionTask.sealed`), so sealing a date reads none of them again."""
        records, changed, pending, seen = {}, None, list(self.upstream_tasks), set()
        while pending:
            task = pending.pop()
            if task.receipt in seen:
                continue
            seen.add(task.receipt)
            sealed = task.sealed()
            if sealed is None:
                return None, None
            records.update(sealed.receipt["outputs"])
            records[f"{partition.RECEIPTS}/{task.receipt}"] = sealed.record
            changed = changed or sealed.receipt.get("history_changed")
            pending.extend(task.upstream_tasks)
        return dict(sorted(records.items())), changed
