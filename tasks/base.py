"""The base of every task that writes into a date's partition: its lock, its receipt, its completeness.

Subclasses (`tasks.iris`) say what they produce in `produce()` and where in `output()`; this class holds
the task's lock around the work, skips it when another process finished it meanwhile, and publishes the
outputs through the partition contract (`tasks.partition`: temporary files, fsync, rename, receipt).
"""

import contextlib
import functools

import luigi
from luigi.task import flatten

from . import config, partition
from .warmup import import_heavy_libraries

# The event a task fires when, once it holds its lock, it finds its work already done by another process.
FOUND_DONE = "irisflow.found_done"


class DatePartitionTask(luigi.Task):
    """A task whose outputs live in the date's partition, written and sealed as `tasks.partition` says.

    Subclasses say what they produce in `produce()`; `run()` holds the task's lock around it, and skips it
    when another process (another worker, a stock `luigi` run, another host) finished the task meanwhile.
    """

    date = luigi.DateParameter()
    _seen_done = False
    _sealed = None  # the receipt (partition.Sealed), once done (`sealed`)
    rebuild = luigi.Parameter(
        default="",
        description="Token of a forced rebuild, which builds under the staging root; empty: the date's own partition.",
    )

    # Paths, the receipt's name and the upstream tasks are worked out once per instance: they follow from
    # the parameters and the configuration, both fixed for an instance's life (one build), and Luigi and
    # the completeness checks ask for them over and over.
    _held = None  # the task's lease while it runs on object storage (`partition.task_lock`)
    _deps = None  # deps(), once worked out
    _receipt_found = True  # whether is_done found a receipt (one to replace) when it last looked

    @functools.cached_property
    def root(self):
        root = partition.location(config.settings().output_root)
        return partition.staging_root(root, self.date, self.rebuild) if self.rebuild else root

    @functools.cached_property
    def folder(self):
        return partition.partition_dir(self.root, self.date)

    def target(self, *parts):
        path = self.folder.joinpath(*parts)
        if partition.is_object(path):
            from luigi.contrib.s3 import S3Target

            return S3Target(str(path), client=partition.objects.luigi_client())
        return luigi.LocalTarget(str(path))

    @functools.cached_property
    def relative_outputs(self):
        """{output key (None for a single target): path relative to the partition}."""
        outputs = self.output()
        pairs = outputs.items() if isinstance(outputs, dict) else [(None, outputs)]
        return {key: partition.location(target.path).relative_to(self.folder).as_posix() for key, target in pairs}

    @functools.cached_property
    def receipt(self):
        return partition.receipt_name(self.task_family, self.relative_outputs.values())

    @functools.cached_property
    def upstream_tasks(self):
        return [task for task in flatten(self.requires()) if isinstance(task, DatePartitionTask)]

    def deps(self):
        """Luigi's deps(), worked out once per instance: Luigi asks twice a task a build (when it adds the
        task and when it runs it), and each time requires() makes every upstream instance again."""
        if self._deps is None:
            self._deps = super().deps()
        return self._deps

    @classmethod
    def get_params(cls):
        """Luigi's get_params, worked out once per class: Luigi walks dir(cls) on every call, and calls it
        for every task instance made or looked up (hundreds a date), while a task class's parameters are
        fixed once the class exists."""
        return list(_params_of(cls))

    def sealed(self):
        """The task's receipt (`partition.Sealed`) once the task is done, else None.

        Read and checked once per build: the completeness check that finds the task done keeps what it
        read, and the task's own run keeps what it wrote, so downstream tasks' checks, their receipts'
        inputs and the summary's manifest never read or hash it again (see `complete` on why a done task
        stays done for an instance's life)."""
        return self._sealed if self.complete() else None

    def input_records(self):
        """{file: sha256} of every upstream output as its receipt recorded it; None if one is not done."""
        records = {}
        for task in self.upstream_tasks:
            sealed = task.sealed()
            if sealed is None:
                return None
            records.update({name: record["sha256"] for name, record in sealed.receipt["outputs"].items()})
        return records

    def input(self):
        """Luigi's input targets; on a store each upstream output's target carries the sha256 its receipt
        sealed (`sealed_sha256`), so reading it may use bytes this process already holds (`files.read_sealed`)."""
        inputs = super().input()
        if partition.is_object(self.folder):
            records = self.input_records() or {}
            for target in flatten(inputs):
                where = partition.location(target.path)
                if self.folder in where.parents:
                    target.sealed_sha256 = records.get(where.relative_to(self.folder).as_posix())
        return inputs

    def is_done(self):
        """Done on disk: the receipt matches the files and the upstream receipts as they are now. Keeps
        the receipt it read when so."""
        unwritten = partition.leases.never_written(self.root, self.date)
        sealed = None if unwritten else partition.read_sealed(self.folder, self.receipt)
        self._receipt_found = sealed is not None
        done = (
            sealed is not None
            and not partition.files_match(self.folder, sealed.receipt["outputs"])
            and all(task.complete() for task in self.upstream_tasks)
            and sealed.receipt["inputs"] == self.input_records()
        )
        if done:
            self._sealed = sealed
        return done

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
        with partition.task_lock(self.root, self.date, self.receipt, config.settings().lease_seconds) as held:
            self._held = held
            if self._may_be_done(held) and self.is_done():
                self.trigger_event(FOUND_DONE, self)
            else:
                self.produce()

    def _may_be_done(self, held):
        """Whether another process may have done the task since this one found it not done. Not so when
        the check found no receipt and its lease is the first any task of the date had: none wrote it before."""
        return held is None or not held.first or self._receipt_found

    def produce(self):
        raise NotImplementedError

    @contextlib.contextmanager
    def publishing(self, extra=None):
        """Temporary paths shaped like output(); when the block succeeds they are renamed into place
        together and sealed by the task's receipt (with `extra`, which the block may still fill in)."""
        relative = self.relative_outputs
        with partition.publishing(
            self.folder,
            relative.values(),
            self.receipt,
            self.input_records() or {},
            extra,
            self._published,
            self._held.check if self._held is not None else None,
            self._receipt_found,
        ) as temporaries:
            paths = {key: str(temporaries[name]) for key, name in relative.items()}
            yield paths[None] if None in paths else paths

    def _published(self, sealed):
        """The task's run has written and sealed its outputs: it is done, with this receipt."""
        self._sealed, self._seen_done = sealed, True


@functools.cache
def _params_of(cls):
    return tuple(luigi.Task.get_params.__func__(cls))
