"""The partition contract: where a date's files live, how they are written, and when a date is whole.

Everything that touches the file-system layout of the output root is here, with no heavy imports, so the
runner, `status` and a no-op backfill decide what to do without loading pandas or scikit-learn.

    {root}/{YYYY-MM-DD}/                one partition per date
        input.csv, validated.csv, …     the tasks' outputs
        .receipts/{Task}-{id}.json      one per task: size and sha256 of each output it wrote, and the
                                        sha256 of each input file it read
        summary.json                    written last: the result, the [iris] settings it was built with,
                                        and the manifest (size and sha256 of every other file)
    {root}/failed/{YYYY-MM-DD}/         failure.json, and for rejected input validation.json plus the
                                        quarantined input, so a corrected source is read again
    {root}/.locks/{YYYY-MM-DD}/         flock files: partition.lock, shared by the date's running tasks, and
                                        build.lock, held by a build of the date from start to end
    {root}/.locks/tasks/NNN.lock        the task locks, one stripe of 256 for each date's task
    {root}/.staging/{date}-{token}/     a forced rebuild in progress (and its .lock)

The root is a local (or shared POSIX) folder, or a prefix on S3-compatible object storage
(`s3://bucket/prefix`, `objects`), with the same layout and the same rules: on a store every write is one
whole PUT, the locks are leases (`leases`), and a forced rebuild is promoted through its summary (`rebuilds`).

The rules:
- A task's outputs are written to temporary files, fsynced, renamed into place, and then sealed by its
  receipt; a task is done only when its receipt matches its files and the inputs it was built from, so
  outputs that did not all land, or an upstream file rebuilt with other content, make it run again.
- A date is complete when summary.json is a well-formed summary and every file its manifest lists exists
  with the recorded size (and, when verifying, the recorded sha256).
- A forced rebuild is built under .staging/ and swapped in with one atomic exchange of directories, so the
  date has its old or its new complete partition at every instant; a rebuild that died is cleaned up (or,
  where the exchange had to be two renames, finished) by the next run.
"""

from . import durable, leases, objects
from .completeness import (
    Inspection,
    incomplete_dates,
    inspect,
    inspect_many,
    is_complete,
    is_number,
    read_summary,
    remove_damaged,
    sealed_folder,
    valid_summary,
)
from .durable import dates_present, file_record, remove_leftovers, write_durably
from .failures import adopt_failure, clear_failure, quarantine, read_failure, record_failure
from .layout import (
    BUILD_LOCK,
    FAILURE,
    LOCKS,
    PARTITION_LOCK,
    RECEIPTS,
    STAGING,
    SUMMARY,
    TEMPORARY,
    DateLike,
    FileRecord,
    ObjectPath,
    StrPath,
    date_range,
    failed_dir,
    is_object,
    location,
    parse_date,
    partition_dir,
    staging_root,
)
from .leases import DEFAULT_LEASE_SECONDS, LeaseLost
from .locks import building, dates_in_progress, flock, in_progress, task_lock
from .rebuilds import forced_rebuild, promote, recover_staging
from .receipts import Sealed, files_match, publishing, read_receipt, read_sealed, receipt_name, valid_records

__all__ = [
    "BUILD_LOCK",
    "DEFAULT_LEASE_SECONDS",
    "DateLike",
    "FAILURE",
    "FileRecord",
    "Inspection",
    "LeaseLost",
    "LOCKS",
    "ObjectPath",
    "PARTITION_LOCK",
    "RECEIPTS",
    "STAGING",
    "Sealed",
    "SUMMARY",
    "StrPath",
    "TEMPORARY",
    "adopt_failure",
    "building",
    "clear_failure",
    "date_range",
    "dates_in_progress",
    "dates_present",
    "durable",
    "failed_dir",
    "file_record",
    "files_match",
    "flock",
    "forced_rebuild",
    "in_progress",
    "incomplete_dates",
    "inspect_many",
    "inspect",
    "is_object",
    "is_complete",
    "is_number",
    "location",
    "leases",
    "objects",
    "parse_date",
    "partition_dir",
    "promote",
    "publishing",
    "quarantine",
    "read_failure",
    "read_receipt",
    "read_sealed",
    "read_summary",
    "receipt_name",
    "record_failure",
    "recover_staging",
    "remove_damaged",
    "remove_leftovers",
    "sealed_folder",
    "staging_root",
    "task_lock",
    "valid_records",
    "valid_summary",
    "write_durably",
]
