"""The plain reference loop: every date's work in one process, one date after another, no orchestration.

It calls each task's own `produce()` in dependency order, so it does exactly the pipeline's work (the same
plain functions of tasks.schema and tasks.steps, the same writers and receipts) and writes the same files,
with nothing to keep in sync — but without a scheduler, completeness checks, events, locks, worker
processes, or fsync. A backfill's time over this loop's is what orchestration, durability and parallelism
cost or save.

    python -m bench.reference --start 2024-01-01 --end 2024-12-30
"""

import argparse

import luigi
from luigi.task import flatten

from tasks import partition
from tasks.config import iris
from tasks.iris import IrisPipeline


def tasks_in_order(task):
    """The task and everything it requires, each once, dependencies first."""
    ordered, seen = [], set()

    def visit(node):
        if node.task_id not in seen:
            seen.add(node.task_id)
            for dependency in flatten(node.requires()):
                visit(dependency)
            ordered.append(node)

    visit(task)
    return ordered


def run_date(date, output_root):
    """Write the date's partition by running each of its tasks directly."""
    for task in tasks_in_order(IrisPipeline(date=date)):
        if not isinstance(task, luigi.ExternalTask):
            task.produce()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=partition.parse_date, required=True)
    parser.add_argument("--end", type=partition.parse_date, required=True)
    args = parser.parse_args(argv)
    # Without durability: what fsync costs a backfill then shows in its ratio over this loop (figure 1).
    partition.durable.fsync_file = partition.durable.fsync_dir = lambda path: None
    root = iris().output_root
    for date in partition.date_range(args.start, args.end):
        run_date(date, root)


if __name__ == "__main__":
    main()
