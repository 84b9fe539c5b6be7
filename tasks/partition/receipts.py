"""Receipts: what each task wrote (size and sha256 of each output) and read, and publishing a task's outputs under one."""

import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import durable, objects
from .layout import _SHA256_RE, RECEIPTS, TEMPORARY, FileRecord, StrPath


def receipt_name(task_family: str, relative_outputs: Iterable[str]) -> str:
    """The receipt file name of a task: its family and a digest of where its outputs go, so it is the same
    for the task whatever builds it, and in a staging root as in the real one."""
    digest = hashlib.sha256("\n".join(sorted(relative_outputs)).encode()).hexdigest()[:10]
    return f"{task_family}-{digest}.json"


def _valid_relative(name):
    """A relative name that stays inside its folder (asked of every manifest entry of every summary read,
    so worked out on the string rather than through a PurePosixPath)."""
    return isinstance(name, str) and name and not name.startswith("/") and ".." not in name.split("/")


def valid_records(records):
    return (
        isinstance(records, dict)
        and records
        and all(
            _valid_relative(name)
            and isinstance(record, dict)
            and isinstance(record.get("size"), int)
            and isinstance(record.get("sha256"), str)
            and _SHA256_RE.fullmatch(record["sha256"])
            for name, record in records.items()
        )
    )


def _well_formed(receipt: Any) -> bool:
    return (
        isinstance(receipt, dict) and valid_records(receipt.get("outputs")) and isinstance(receipt.get("inputs"), dict)
    )


def read_receipt(part: StrPath, name: str) -> dict[str, Any] | None:
    """The task's receipt as written, or None when it is absent, unreadable or of the wrong shape."""
    receipt = durable.read_json(Path(part) / RECEIPTS / name)
    return receipt if _well_formed(receipt) else None


@dataclass(frozen=True)
class Sealed:
    """A receipt's content and the size and sha256 of the receipt file itself (a summary's manifest lists
    receipts too), from one read of the file, or from the bytes its writer wrote."""

    receipt: dict[str, Any]
    record: FileRecord


def read_sealed(part: StrPath, name: str) -> Sealed | None:
    """read_receipt, with the receipt file's own record taken from the same bytes."""
    path = objects.location(part) / RECEIPTS / name
    try:
        if objects.is_object(path):
            data = objects.read_bytes(path, durable.MAX_JSON_BYTES)
            if data is None:
                return None
        else:
            data = path.read_bytes()
        receipt = json.loads(data)
    except objects.StoreError:
        raise
    except (OSError, ValueError):
        return None
    return Sealed(receipt, _record_of(data)) if _well_formed(receipt) else None


def _record_of(data: bytes) -> FileRecord:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def files_match(
    part: StrPath, records: Mapping[str, FileRecord], verify: bool = False, present: Mapping[str, int] | None = None
) -> list[str]:
    """Problems of the files against their records ("name: what is wrong"); [] when they all match.
    `present` ({name: size}, from one LIST) stands for the files when `part` is on a store."""
    if objects.is_object(part):
        return _objects_match(part, records, verify, objects.sizes(part) if present is None else present)
    problems = []
    folder = os.fspath(part)
    for name, record in records.items():
        path = os.path.join(folder, name)  # a str: asked of every file a check, a Path costs more than the stat
        try:
            info = os.stat(path)
        except OSError:
            problems.append(f"{name}: absent")
            continue
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"{name}: not a regular file")
        elif info.st_size != record["size"]:
            problems.append(f"{name}: {info.st_size} bytes, recorded {record['size']}")
        elif verify and durable.file_record(path)["sha256"] != record["sha256"]:
            problems.append(f"{name}: content differs from its recorded sha256")
    return problems


def _objects_match(part, records, verify, present):
    problems = []
    for name, record in records.items():
        if name not in present:
            problems.append(f"{name}: absent")
        elif present[name] != record["size"]:
            problems.append(f"{name}: {present[name]} bytes, recorded {record['size']}")
        elif verify and objects.file_record(part / name)["sha256"] != record["sha256"]:
            problems.append(f"{name}: content differs from its recorded sha256")
    return problems


@contextlib.contextmanager
def publishing(
    part: StrPath,
    relative_outputs: Iterable[str],
    name: str,
    inputs: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
    on_sealed: Callable[[Sealed], None] | None = None,
    still_held: Callable[[], None] | None = None,
    replacing: bool = True,
) -> Iterator[dict[str, Path]]:
    """Temporary paths for a task's outputs ({relative: Path}); when the block ends without error they are
    fsynced, renamed into place together and sealed by the task's receipt `name`, which records each
    output's size and sha256, the `inputs` ({relative: sha256}) and `extra`; `on_sealed` is then given
    the receipt as written, so the writer need not read it back.

    The old receipt goes first, so between the first rename and the new receipt the task reads as not
    done, and a rerun replaces whatever had landed. Call it holding the task's lock; `still_held` is
    called before anything is replaced, and raises when that lock (a lease on a store) was lost.

    On a store the temporaries are local files, each uploaded whole (one PUT) in place of the rename, and
    the old receipt is deleted only when `replacing` (the task's writer saw one).
    """
    if objects.is_object(part):
        with _publishing_objects(
            part, relative_outputs, name, inputs, extra, on_sealed, still_held, replacing
        ) as temporaries:
            yield temporaries
        return
    part = Path(part)
    temporaries = {}
    for relative in relative_outputs:
        final = part / relative
        durable.make_dirs(final.parent)
        durable.remove_temporaries(final)
        temporaries[relative] = final.with_name(f"{final.name}{TEMPORARY}{uuid.uuid4().hex[:8]}")
    try:
        yield temporaries
    except BaseException:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)
        _remove_empty_folders(part, [part / relative for relative in temporaries])
        raise
    try:
        records = {}
        for relative, temporary in temporaries.items():
            durable.fsync_file(temporary)
            records[relative] = durable.file_record(temporary)
        if still_held is not None:
            still_held()
        receipt = part / RECEIPTS / name
        if os.path.lexists(receipt):
            durable.remove(receipt)
            durable.fsync_dir(receipt.parent)
        for relative, temporary in temporaries.items():
            durable.replace(temporary, part / relative)
        for folder in {(part / relative).parent for relative in temporaries}:
            durable.fsync_dir(folder)
        _seal(receipt, records, inputs, extra, on_sealed)
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)


def _seal(receipt, records, inputs, extra, on_sealed):
    """Write the task's receipt (the last of its writes) and hand it to `on_sealed`."""
    content = {"outputs": records, "inputs": dict(inputs), **(extra or {})}
    text = json.dumps(content, indent=1, sort_keys=True)
    durable.write_durably(receipt, text)
    if on_sealed is not None:
        on_sealed(Sealed(json.loads(text), _record_of(text.encode())))


@contextlib.contextmanager
def _publishing_objects(part, relative_outputs, name, inputs, extra, on_sealed, still_held, replacing):
    """`publishing` on a store: local temporaries, then the old receipt deleted, the outputs uploaded side
    by side (one PUT each), the new receipt last."""
    scratch = Path(tempfile.mkdtemp(prefix="irisflow-outputs-"))
    try:
        temporaries = {
            relative: scratch / f"{index}-{PurePosixPath(relative).name}"
            for index, relative in enumerate(relative_outputs)
        }
        yield temporaries
        records = {relative: durable.file_record(temporary) for relative, temporary in temporaries.items()}
        if still_held is not None:
            still_held()
        receipt = part / RECEIPTS / name
        if replacing:
            objects.remove([receipt])
        with concurrent.futures.ThreadPoolExecutor(len(temporaries) or 1) as uploads:
            for done in [
                uploads.submit(objects.upload, temporary, part / relative)
                for relative, temporary in temporaries.items()
            ]:
                done.result()
        for relative, temporary in temporaries.items():
            if records[relative]["size"] <= objects.MAX_KNOWN_BYTES:
                objects.remember(part / relative, records[relative]["sha256"], temporary.read_bytes())
        _seal(receipt, records, inputs, extra, on_sealed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remove_empty_folders(part, paths):
    """Remove the folders between each path and the partition (and the partition) that are empty, so a
    task that failed before writing anything leaves no trace."""
    folders = {folder for path in paths for folder in path.parents if folder == part or part in folder.parents}
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
