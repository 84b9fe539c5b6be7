"""Reading a day's CSV: only a regular file of the data folder, bounded before pandas parses it.

`snapshot_source` copies the day's input into its partition, refusing what must never be read (links out
of the data folder, devices, FIFOs, files over the size limit); `read_source` turns a file into a
DataFrame or raises InputRejected naming the file and what is wrong with it as a whole, after
`tasks.shape` has streamed it against the width and length limits.
"""

import collections
import contextlib
import csv
import errno
import os
import stat

from .config import settings
from .schema import InputRejected
from .shape import check_shape

COPY_BLOCK = 1024 * 1024


HEADER_PEEK = 64 * 1024  # the header line and enough of the data to spot a binary file


TAIL_PEEK = 64 * 1024  # far longer than any real last line


def snapshot_source(path, destination, *, data_dir, max_bytes):
    """Copy the day's input to `destination`, refusing what must never be read.

    The source must resolve (after symlinks) inside `data_dir`, so a planted link cannot make the
    service read and archive another file. It must be a regular file, so a device or FIFO cannot make
    the copy endless, and have one link: a hard link has no target to check, and its content may belong
    to a file outside `data_dir` (so a hard link made inside the folder is refused too; copy instead).
    Both are judged on the opened descriptor, which a swap after the check cannot change. At most
    `max_bytes` are copied, checked while copying, so a file that grows after it was measured is refused
    too. The copy is never more readable than the source (it may be quarantined and kept).
    """
    real, allowed = os.path.realpath(path), os.path.realpath(data_dir)
    if os.path.commonpath([real, allowed]) != allowed:
        raise InputRejected(
            f"{path}: resolves to {real}, outside the data directory {allowed}; refused (a symlink pointing elsewhere?)"
        )
    with _open_regular(real, path, follow_links=False) as source:
        info = os.fstat(source.fileno())
        if info.st_nlink > 1:
            raise InputRejected(
                f"{path}: has {info.st_nlink} hard links; refused: its content may belong to a file outside "
                "the data directory (copy the file in instead of linking it)"
            )
        copied = 0
        with _created_like(destination, info) as copy:
            while block := source.read(COPY_BLOCK):
                copied += len(block)
                if max_bytes is not None and copied > max_bytes:
                    raise InputRejected(_too_big(path, f"more than {max_bytes}", max_bytes))
                copy.write(block)


@contextlib.contextmanager
def _open_regular(path, shown, *, follow_links=True):
    """`path` opened for binary reading if it is a regular file, else InputRejected. The open does not
    block (a FIFO's would wait for a writer for ever) and the check is made on the descriptor itself.
    Without `follow_links` a symlink in the last place of `path` is refused."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise InputRejected(f"{shown}: became a symlink while it was being read; refused") from None
    with open(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise InputRejected(f"{shown}: not a regular file; refused")
        yield handle


@contextlib.contextmanager
def _created_like(destination, source_info):
    """`destination` created for writing with the source's read bits at most: no execute and no write
    for others, and nobody can read the copy who could not read the source."""
    mode = stat.S_IMODE(source_info.st_mode) & 0o644
    descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    os.fchmod(descriptor, stat.S_IMODE(os.fstat(descriptor).st_mode) & mode)  # an existing file keeps no more
    with open(descriptor, "wb") as copy:
        yield copy


def _too_big(path, size, max_bytes):
    return f"{path}: file is {size} bytes, over the limit of {max_bytes} ([iris] max_source_bytes)"


def read_source(path, max_bytes=None, *, shown_as=None, limits=None):
    """Read a CSV into a DataFrame, normalising what is harmless and refusing what is ambiguous.

    Accepted: a UTF-8 byte-order mark, CRLF line ends, quoted fields, header names in any order, case
    or surrounding space (they are stripped and lower-cased), extra columns (ignored by the schema).
    Refused with InputRejected naming the file: not a regular file, over `max_bytes`, a row, field count
    or cell over `limits` (an object with max_columns, max_line_bytes and max_cell_bytes; by default
    the `[iris]` settings), empty, binary, not UTF-8 (with the line), another delimiter than ',', a
    column named twice, a row with more fields than the header, and a last line cut short (fewer fields
    and no line end: a file still being written). The size and shape are checked by streaming, in
    bounded memory, before pandas sees the file.
    """
    shown = shown_as or path  # the name messages give the file: the day's source, not its snapshot
    with _open_regular(path, shown) as handle:
        size = os.fstat(handle.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise InputRejected(_too_big(shown, size, max_bytes))
        start = handle.read(HEADER_PEEK)
        if b"\0" in start:
            raise InputRejected(f"{shown}: binary data (NUL bytes), expected a UTF-8 CSV text file")
        handle.seek(0)
        check_shape(handle, shown, limits or settings())
        fields = len(_header(start, shown))
        handle.seek(0)
        frame = _parsed(handle, path, shown)
    frame.columns = _normalised(frame.columns)
    _refuse_truncated_end(path, shown, fields, len(frame) + 1)
    return frame


def _parsed(handle, path, shown):
    import pandas as pd

    try:
        return pd.read_csv(handle, skipinitialspace=True, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise InputRejected(f"{shown}: empty file, expected a CSV with a header row") from None
    except UnicodeDecodeError:
        raise InputRejected(f"{shown}: not UTF-8 text ({_first_undecodable(path)})") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputRejected(f"{shown}: not a readable CSV ({_first_line(exc)})") from None


def _normalised(names):
    return [str(name).strip().lower() for name in names]


def _header(start, shown):
    """The normalised header names from the file's first bytes `start`; refuses other delimiters,
    repeated names and a first row longer than the header."""
    lines = start.splitlines()[:2] if start.strip() else [b""]
    text = lines[0].decode("utf-8-sig", errors="replace")
    names = _normalised(next(csv.reader([text]), []))
    if len(lines) > 1 and _field_count(lines[1]) > len(names):
        # pandas would silently take the first column for a row index and shift every value
        raise InputRejected(f"{shown}: line 2 has {_field_count(lines[1])} fields, the header {len(names)}")
    if len(names) == 1:
        for delimiter in ";\t|":
            if delimiter in text:
                raise InputRejected(
                    f"{shown}: header uses {delimiter!r} as delimiter; irisflow reads comma-separated files only"
                )
    repeated = sorted(name for name, times in collections.Counter(names).items() if name and times > 1)
    if repeated:
        raise InputRejected(
            f"{shown}: header names column(s) {', '.join(map(repr, repeated))} more than "
            "once; which one holds the data is ambiguous"
        )
    return names


def _field_count(line):
    return len(next(csv.reader([line.decode("utf-8", errors="replace")]), []))


def _first_undecodable(path):
    """Where the first byte that is not UTF-8 is: 'line N: byte 0x..'."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}: byte 0x{line[exc.start]:02x}"
    return "undecodable bytes"


def _refuse_truncated_end(path, shown, fields, last_line):
    """A last line with fewer fields than the header and no line end was cut off mid-write."""
    with open(path, "rb") as handle:
        handle.seek(max(0, os.path.getsize(path) - TAIL_PEEK))
        tail = handle.read()
    if not tail or tail.endswith((b"\n", b"\r")):
        return
    found = _field_count(tail.splitlines()[-1])
    if found < fields:
        raise InputRejected(
            f"{shown}: line {last_line} is cut short ({found} of {fields} fields and no "
            "line end); was the file still being written?"
        )


def _first_line(exc):
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
