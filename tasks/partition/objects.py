"""Object storage (S3 and compatible stores) under the partition contract: an `s3://bucket/prefix` root.

The contract's modules ask for a few primitive operations (read, write whole, list a folder's sizes, hash,
remove, copy) and this module answers them for objects, as `durable` does for files. An object store has
what the contract needs: a PUT replaces an object whole or not at all, a read after a write sees it, a LIST
of a prefix gives every key with its size in one request per thousand keys, and a conditional PUT
(`If-None-Match: *`) creates a key only when it is absent (`leases` builds task locks on it).

Paths stay `PurePosixPath`s, so the contract's path arithmetic (partition, staging and failure folders,
relative names) is the same for both backends: an `ObjectPath` is a path whose first component is the
bucket and whose text is the `s3://` URL.

Connection settings are Luigi's own: `luigi.contrib.s3.S3Client` reads the `[s3]` section of luigi.cfg
(`endpoint_url`, `region_name`) and leaves credentials to boto3's chain (environment, shared files, instance
roles), which is where irisflow wants them.
"""

import collections
import concurrent.futures
import datetime
import functools
import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from .layout import FileRecord, ObjectPath, is_object, is_object_url, location, parse_object_url

__all__ = ["ObjectPath", "is_object", "is_object_url", "location", "parse_object_url"]

# Larger outputs go up in parts (boto3's upload_file), smaller ones in one PUT.
MULTIPART_THRESHOLD = 64 * 1024 * 1024


class StoreError(OSError):
    """The store refused or could not be reached: an OSError, so every caller that reports a full or
    read-only disk reports this the same way."""


@functools.cache
def _luigi_client_for(pid: int):
    """Luigi's S3Client, once per process: it reads `[s3]` the way Luigi's own S3 targets read it, and
    makes its boto3 resource only when a target asks (an S3 source's existence)."""
    from luigi.contrib.s3 import S3Client

    return S3Client()


def luigi_client():
    """Luigi's S3Client, for the S3Targets of outputs and sources on the store."""
    return _luigi_client_for(os.getpid())


@functools.cache
def _client_for(pid: int):
    """One boto3 client per process (a client does not survive a fork), made from the `[s3]` options
    Luigi's S3Client read, retrying and keeping its connections."""
    import boto3
    import botocore.session
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 4, "mode": "standard"},
        max_pool_connections=32,
        # Checksums only where the API needs them: the contract hashes every output itself (sha256, in
        # receipts), and a trailing checksum costs a chunked upload on every PUT.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = botocore.session.get_session()
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
    return boto3.session.Session(botocore_session=session).client(
        "s3",
        config=config,
        **luigi_client()._options,  # noqa: SLF001
    )


def _timestamp(value: Any) -> datetime.datetime:
    """A timestamp of a response, read by datetime.fromisoformat where it is ISO 8601, as every key's
    LastModified in a LIST is: botocore's own parser (dateutil's) costs a LIST more than all the rest
    of its parsing. Other forms (HTTP dates in headers) go to botocore's."""
    if isinstance(value, str) and "T" in value:
        try:
            return datetime.datetime.fromisoformat(value)
        except ValueError:
            pass
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)


def client():
    """This process's boto3 client: every request irisflow makes of the store goes through it."""
    return _client_for(os.getpid())


def _error(exc: Exception, path: Any) -> StoreError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
    message = getattr(exc, "response", {}).get("Error", {}).get("Message", str(exc))
    return StoreError(f"{path}: the object store answered {code}: {message}")


def _call(path, operation, **kwargs):
    """One request; botocore's errors as StoreError (an OSError naming the path)."""
    import botocore.exceptions

    try:
        return getattr(client(), operation)(**kwargs)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _error(exc, path) from None


def _absent(exc: Exception) -> bool:
    return getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


def read_bytes(path: ObjectPath, limit: int | None = None) -> bytes | None:
    """The object's bytes (at most `limit`+1 of them), or None when it is absent."""
    import botocore.exceptions

    extra = {"Range": f"bytes=0-{limit}"} if limit is not None else {}
    try:
        return client().get_object(Bucket=path.bucket, Key=path.key, **extra)["Body"].read()
    except botocore.exceptions.ClientError as exc:
        if _absent(exc) or exc.response.get("Error", {}).get("Code") == "InvalidRange":
            return None if _absent(exc) else b""
        raise _error(exc, path) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise _error(exc, path) from None


def write_bytes(path: ObjectPath, data: bytes) -> None:
    """One PUT: the object is replaced whole or not at all."""
    _call(path, "put_object", Bucket=path.bucket, Key=path.key, Body=data)


def create(path: ObjectPath, data: bytes) -> bool:
    """Create the object only when no object has the key (`If-None-Match: *`); False when one has.

    `data` must be this writer's own (a token in it): the client retries a request whose answer was lost,
    and the retry of a PUT that had landed is refused, so a refusal is checked against what the key holds."""
    import botocore.exceptions

    try:
        client().put_object(Bucket=path.bucket, Key=path.key, Body=data, IfNoneMatch="*")
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return read_bytes(path) == data
        raise _error(exc, path) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise _error(exc, path) from None
    return True


def upload(local: Path, path: ObjectPath) -> None:
    """A local file as the object: one PUT, in parts (boto3's transfer manager) only above
    MULTIPART_THRESHOLD, whose threads and futures cost more than a small file's whole PUT."""
    if os.path.getsize(local) <= MULTIPART_THRESHOLD:
        with open(local, "rb") as handle:
            _call(path, "put_object", Bucket=path.bucket, Key=path.key, Body=handle)
        return
    import botocore.exceptions
    from boto3.s3.transfer import TransferConfig

    try:
        client().upload_file(
            str(local), path.bucket, path.key, Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD)
        )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _error(exc, path) from None


def download(path: ObjectPath, local: "str | Path", limit: int) -> None:
    """The object into a local file: at most `limit`+1 bytes of it, so a reader that allows `limit` bytes
    sees that there were more without the host fetching all of an oversized object."""
    body = _call(path, "get_object", Bucket=path.bucket, Key=path.key, Range=f"bytes=0-{limit}")["Body"]
    with open(local, "wb") as handle:
        for chunk in iter(lambda: body.read(1 << 20), b""):
            handle.write(chunk)


def listing(folder: ObjectPath, delimiter: str = "", after: str = "") -> Iterator[dict[str, Any]]:
    """Every page of a LIST of the folder's keys (with `delimiter`, its direct children only; with `after`,
    only the names that sort after it)."""
    prefix = folder.key + "/" if folder.key else ""
    token: dict[str, str] = {"StartAfter": prefix + after} if after else {}
    while True:
        page = _call(folder, "list_objects_v2", Bucket=folder.bucket, Prefix=prefix, Delimiter=delimiter, **token)
        yield page
        if not page.get("IsTruncated"):
            return
        token = {"ContinuationToken": page["NextContinuationToken"]}


def sizes(folder: ObjectPath) -> dict[str, int]:
    """{name relative to the folder: size} of every object under it, from one LIST a thousand keys."""
    skip = len(folder.key) + 1 if folder.key else 0
    return {item["Key"][skip:]: item["Size"] for page in listing(folder) for item in page.get("Contents", [])}


def sizes_by_child(folder: ObjectPath, after: str, last: str) -> dict[str, dict[str, int]]:
    """{child folder: {name under it: size}} for the folder's children named after `after` up to `last` (in
    key order), from one LIST a thousand keys: many dates' partitions in a few requests, not one each.

    `after` should name a child before the first one wanted: stores differ on whether the keys under a
    folder named by StartAfter come after it (S3: they sort after its name) or are skipped with it
    (SeaweedFS, whose keys are paths), so its own keys may or may not be listed."""
    skip = len(folder.key) + 1 if folder.key else 0
    found: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for page in listing(folder, after=after):
        for item in page.get("Contents", []):
            child, _, name = item["Key"][skip:].partition("/")
            if child > last:
                return found
            if name:
                found[child][name] = item["Size"]
    return found


def children(folder: ObjectPath) -> list[str]:
    """The names of the folder's direct sub-folders."""
    skip = len(folder.key) + 1 if folder.key else 0
    return [
        entry["Prefix"][skip:].rstrip("/") for page in listing(folder, "/") for entry in page.get("CommonPrefixes", [])
    ]


def file_record(path: ObjectPath) -> FileRecord:
    """{"size", "sha256"} of the object, hashed as it streams in."""
    body = _call(path, "get_object", Bucket=path.bucket, Key=path.key)["Body"]
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(1 << 20), b""):
        digest.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def remove(paths: Iterable[ObjectPath]) -> None:
    """Delete the objects (absent ones too), a thousand per request."""
    paths = list(paths)
    for start in range(0, len(paths), 1000):
        batch = paths[start : start + 1000]
        if batch:
            _call(
                batch[0],
                "delete_objects",
                Bucket=batch[0].bucket,
                Delete={"Objects": [{"Key": p.key} for p in batch], "Quiet": True},
            )


def remove_tree(folder: ObjectPath) -> None:
    remove([folder / name for name in sizes(folder)])


def copy(source: ObjectPath, destination: ObjectPath) -> None:
    """A server-side copy: the destination is replaced whole, its bytes never pass through this host."""
    _call(
        destination,
        "copy_object",
        Bucket=destination.bucket,
        Key=destination.key,
        CopySource={"Bucket": source.bucket, "Key": source.key},
    )


# Small objects this process wrote, or read and found as sealed, by their sha256: a date's later tasks read
# what its earlier ones wrote (five models read one split), and a reader that knows the sha256 the writer's
# receipt sealed is given the bytes with no GET, whatever happened to the cache meanwhile.
_KNOWN: "collections.OrderedDict[str, tuple[str, bytes]]" = collections.OrderedDict()
MAX_KNOWN_BYTES = 1024 * 1024  # an object above this is not kept
MAX_KNOWN = 64  # objects kept, the least recently used dropped first


def remember(path: ObjectPath, sha256: str, data: bytes) -> None:
    """Keep the object's bytes, which have this sha256, for `known`."""
    if len(data) <= MAX_KNOWN_BYTES:
        _KNOWN[str(path)] = (sha256, data)
        _KNOWN.move_to_end(str(path))
        while len(_KNOWN) > MAX_KNOWN:
            _KNOWN.popitem(last=False)


def known(path: ObjectPath, sha256: str) -> bytes | None:
    """The object's bytes when this process holds them with this sha256, else None."""
    found = _KNOWN.get(str(path))
    return found[1] if found is not None and found[0] == sha256 else None


PARALLEL_REQUESTS = 16  # requests one process has in flight when it asks about many dates at once


def in_parallel(ask, items):
    """[ask(item) for item in items], asked side by side: a question to the store waits mostly on the
    network and the store, so many dates are answered in the time of a few."""
    items = list(items)
    if len(items) < 2:
        return [ask(item) for item in items]
    client()  # made once, before the threads share it
    with concurrent.futures.ThreadPoolExecutor(min(PARALLEL_REQUESTS, len(items))) as pool:
        return list(pool.map(ask, items))


def sizes_and_ages(folder: ObjectPath) -> dict[str, tuple[int, float]]:
    """{name under the folder: (size, seconds since it was last written)}, from one LIST. Ages are taken
    by the store's clock (its Date header against its LastModified stamps), so leases expire alike for
    hosts whose clocks disagree."""
    skip = len(folder.key) + 1 if folder.key else 0
    found = {}
    for page in listing(folder):
        stamp = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(stamp).timestamp() if stamp else time.time()
        for item in page.get("Contents", []):
            found[item["Key"][skip:]] = (item["Size"], now - item["LastModified"].timestamp())
    return found
