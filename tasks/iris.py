"""The Iris pipeline as Luigi tasks: IrisData → Extract → Validate → (Drift, Split → TrainModel×N) → IrisPipeline.

Each task reads its input targets, calls one plain function from `steps`/`schema` and writes its outputs
into the date's partition through `tasks.partition` (temporary files, fsync, rename, then a receipt), so a
task's outputs appear together and a task is done only when its receipt matches its files and its inputs.
The date and the settings are the only parameters, so every entry point builds the same task ids. Run it
with the stock Luigi command:

    PYTHONPATH=. luigi --module tasks.iris IrisPipeline --date 2026-11-24 --local-scheduler
"""

import contextlib
import functools
import gc
import json
import logging
import os
import pickle
from pathlib import Path

import luigi
from luigi.task import flatten

from . import config, partition
from .config import quality

LOG = logging.getLogger("irisflow.tasks")
# The event a task fires when, once it holds its lock, it finds its work already done by another process.
FOUND_DONE = "irisflow.found_done"
# One BLAS/OpenMP thread per worker process: two processes each spinning up a thread per core fight
# over the two cores and run slower than one process alone.
THREAD_LIMITS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def source_path(date):
    """The day's input file: `[iris] source` with '{date}' replaced by YYYY-MM-DD."""
    return config.settings().source.replace("{date}", date.isoformat())


def data_dir():
    """The directory every day's input must stay inside: `[iris] source` up to its first '{date}'."""
    return os.path.dirname(config.settings().source.split("{date}", 1)[0]) or "."


def write_json(path, obj):
    with open(path, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)


def write_model(path, estimator):
    """The fitted estimator as a plain pickle, which joblib's loader reads as well. joblib's own dump walks
    the model through Python's pure-Python pickler to set numpy arrays aside, which for arrays this small
    costs far more than it saves over the C pickler."""
    with open(path, "wb") as handle:
        pickle.dump(estimator, handle, protocol=pickle.HIGHEST_PROTOCOL)


def read_json(target):
    with target.open("r") as handle:
        return json.load(handle)


def write_csv(path, frame):
    frame.to_csv(path, index=False)


def read_csv(target):
    import pandas as pd

    return pd.read_csv(target.path)


def plain(value):
    """A Luigi parameter value (frozen dicts, tuples) as plain JSON data."""
    if isinstance(value, (str, bytes)):
        return value
    if hasattr(value, "items"):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


@functools.cache
def import_heavy_libraries():
    """Get this process ready to do the tasks' work, once, in the process that finds a task to do, while
    a run with nothing to do never loads any of it: the libraries, one BLAS/OpenMP thread (unless the
    operator chose otherwise; on these tiny fits more threads only contend, and a forked child would
    start its own), the objects made so far frozen out of the garbage collector's reach (its full
    collections then skip the libraries), and, should this process fork task processes, their
    preparation just before it does.
    """
    one_thread_each()
    import pandas  # noqa: F401
    import pandera.pandas  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    from .models import import_estimators

    import_estimators()
    gc.freeze()
    os.register_at_fork(before=_prepare_task_processes)


@functools.cache
def _prepare_task_processes():
    """Before this process first forks (stock Luigi with `--workers N` forks a process per task, as does
    the assistant worker with `--workers N`), rehearse a date's work on made-up rows (`tasks.rehearsal`),
    so every child inherits what the steps load and build on first use instead of paying for it again,
    and freeze what that made too, so collections in the children do not copy its pages. A process that
    runs its tasks itself (the runner) never pays for it.
    """
    from .rehearsal import rehearse

    try:
        rehearse(config.settings(), quality().thresholds())
    except Exception as exc:  # a setting the real tasks will fail on, each with its own clear error
        LOG.debug("the rehearsal of a date's work failed: %s", exc, exc_info=True)
    gc.freeze()


def one_thread_each():
    """One BLAS/OpenMP thread in this process (effective before it loads BLAS), unless set otherwise."""
    for name in THREAD_LIMITS:
        os.environ.setdefault(name, "1")


class IrisData(luigi.ExternalTask):
    """The day's input as it arrives from outside (`[iris] source`)."""

    date = luigi.DateParameter()

    def output(self):
        return luigi.LocalTarget(source_path(self.date))


class DatePartitionTask(luigi.Task):
    """A task whose outputs live in the date's partition, written and sealed as `tasks.partition` says.

    Subclasses say what they produce in `produce()`; `run()` holds the task's lock around it, and skips it
    when another process (another worker, a stock `luigi` run, another host) finished the task meanwhile.
    """

    date = luigi.DateParameter()
    _seen_done = False
    rebuild = luigi.Parameter(
        default="",
        description="Token of a forced rebuild, which builds under the staging root; empty: the date's own partition.",
    )

    # Paths, the receipt's name and the upstream tasks are worked out once per instance: they follow from
    # the parameters and the configuration, both fixed for an instance's life (one build), and Luigi and
    # the completeness checks ask for them over and over.
    @functools.cached_property
    def root(self):
        root = Path(config.settings().output_root)
        return partition.staging_root(root, self.date, self.rebuild) if self.rebuild else root

    @functools.cached_property
    def folder(self):
        return partition.partition_dir(self.root, self.date)

    def target(self, *parts):
        return luigi.LocalTarget(str(self.folder.joinpath(*parts)))

    @functools.cached_property
    def relative_outputs(self):
        """{output key (None for a single target): path relative to the partition}."""
        outputs = self.output()
        pairs = outputs.items() if isinstance(outputs, dict) else [(None, outputs)]
        return {key: Path(target.path).relative_to(self.folder).as_posix() for key, target in pairs}

    @functools.cached_property
    def receipt(self):
        return partition.receipt_name(self.task_family, self.relative_outputs.values())

    @functools.cached_property
    def upstream_tasks(self):
        return [task for task in flatten(self.requires()) if isinstance(task, DatePartitionTask)]

    def input_records(self):
        """{file: sha256} of every upstream output as its receipt recorded it; None if one is not done."""
        records = {}
        for task in self.upstream_tasks:
            receipt = partition.read_receipt(task.folder, task.receipt)
            if receipt is None:
                return None
            records.update({name: record["sha256"] for name, record in receipt["outputs"].items()})
        return records

    def is_done(self):
        receipt = partition.read_receipt(self.folder, self.receipt)
        return (
            receipt is not None
            and not partition.files_match(self.folder, receipt["outputs"])
            and all(task.complete() for task in self.upstream_tasks)
            and receipt["inputs"] == self.input_records()
        )

    def complete(self):
        """is_done(), remembered once true for the life of this instance.

        Luigi asks again and again within a build (every downstream task's check asks its upstream, and
        Luigi's worker asks before each run), and a done task stays done while a build lasts, as Luigi's
        own `cache_task_completion` assumes. An instance lives for one build: Luigi returns the same
        instance for the same parameters until its instance cache is cleared, which the runner does after
        each build and the assistant worker before each request for work. `run()` still looks afresh.
        """
        if self._seen_done:
            return True
        self._seen_done = self.is_done()
        if not self._seen_done:
            import_heavy_libraries()
        return self._seen_done

    def run(self):
        with partition.task_lock(self.root, self.date, self.receipt):
            if self.is_done():
                self.trigger_event(FOUND_DONE, self)
            else:
                self.produce()

    def produce(self):
        raise NotImplementedError

    @contextlib.contextmanager
    def publishing(self, extra=None):
        """Temporary paths shaped like output(); when the block succeeds they are renamed into place
        together and sealed by the task's receipt (with `extra`, which the block may still fill in)."""
        relative = self.relative_outputs
        with partition.publishing(
            self.folder, relative.values(), self.receipt, self.input_records() or {}, extra
        ) as temporaries:
            paths = {key: str(temporaries[name]) for key, name in relative.items()}
            yield paths[None] if None in paths else paths


class Extract(DatePartitionTask):
    """Snapshot the day's input into its partition, so later edits of the source never change history."""

    def requires(self):
        return IrisData(date=self.date)

    def output(self):
        return self.target("input.csv")

    def produce(self):
        from .schema import snapshot_source

        previous = self.previous_snapshot()
        extra = {}
        with self.publishing(extra) as snapshot:
            snapshot_source(
                self.input().path, snapshot, data_dir=data_dir(), max_bytes=config.settings().max_source_bytes
            )
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
        from .schema import InputRejected, read_source, validate_frame

        settings = config.settings()
        # Relative to the output root, so the report (and its hash) is the same wherever the root lives.
        described = f"{source_path(self.date)} (snapshot {self.date.isoformat()}/{Path(self.input().path).name})"
        try:
            frame = read_source(self.input().path, settings.max_source_bytes, shown_as=described)
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
        root = Path(config.settings().output_root)
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
        import hashlib

        digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:10]
        folder = f"models/{self.model}-{digest}"
        return {"model": self.target(folder, "model.joblib"), "metrics": self.target(folder, "metrics.json")}

    def produce(self):
        from .steps import evaluate, train

        estimator = train(read_csv(self.input()["train"]), self.model, self.features, self.hyperparameters, self.seed)
        metrics = evaluate(estimator, read_csv(self.input()["test"]), self.features)
        with self.publishing() as out:
            write_model(out["model"], estimator)
            write_json(out["metrics"], {**metrics, "settings": self.settings})


def pipeline_settings():
    """The `[iris]` settings that shape a date's results, as summary.json records them."""
    settings = config.settings()
    return {
        "models": list(settings.models),
        "features": list(settings.features),
        "hyperparameters": {name: plain(settings.hyperparameters.get(name, {})) for name in settings.models},
        "test_size": settings.test_size,
        "seed": settings.seed,
    }


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
        """({file: {size, sha256}} of every receipt and every file they record, or None if a task has no
        receipt; any history change a receipt records)."""
        records, changed, pending, seen = {}, None, list(self.upstream_tasks), set()
        while pending:
            task = pending.pop()
            if task.receipt in seen:
                continue
            seen.add(task.receipt)
            receipt = partition.read_receipt(task.folder, task.receipt)
            if receipt is None:
                return None, None
            records.update(receipt["outputs"])
            name = f"{partition.RECEIPTS}/{task.receipt}"
            records[name] = partition.file_record(self.folder / name)
            changed = changed or receipt.get("history_changed")
            pending.extend(task.upstream_tasks)
        return dict(sorted(records.items())), changed
