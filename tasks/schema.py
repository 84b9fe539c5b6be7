"""The Iris input contract: reading a day's CSV and validating it with a pandera schema.

`read_source` turns a file into a DataFrame or raises InputRejected naming the file and what is wrong
with it as a whole; `validate_frame` checks every row lazily, so one report lists every failing check,
column and a few offending lines at once.
"""

import collections
import contextlib
import csv
import errno
import io
import itertools
import os
import stat

from .config import FEATURES, SPECIES, settings

MAX_EXAMPLES = 5
COPY_BLOCK = 1024 * 1024
SCAN_BLOCK = 1024 * 1024  # bytes check_shape looks at at once
HEADER_PEEK = 64 * 1024  # the header line and enough of the data to spot a binary file
TAIL_PEEK = 64 * 1024  # far longer than any real last line
CHUNK_ROWS = 100_000  # rows pandera checks at once: bounds the memory its failure cases take
MAX_CM = 30.0  # no iris flower part is anywhere near 30 cm: larger values are unit or typing errors


class InputRejected(Exception):
    """The day's input cannot be used; the message names the file, column and check."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


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


def check_shape(handle, shown, limits):
    """Refuse, from a binary file read in bounded blocks, the first row (the header is line 1) longer
    than `limits.max_line_bytes` bytes, with more than `limits.max_columns` fields, or with a cell longer
    than `limits.max_cell_bytes` bytes; memory stays within a block and a row whatever the file holds.

    A file without quotes is judged a block at a time with bytes operations (a million rows in a fraction
    of a second); the first quote, which may hide commas and line breaks, sends the whole file through
    the csv module over a bounded line reader instead.
    """
    if not _unquoted_shape(handle, shown, limits):
        handle.seek(0)
        _quoted_shape(handle, shown, limits)


def _unquoted_shape(handle, shown, limits):
    """check_shape for a file without quotes, block by block; False (nothing judged) at the first quote."""
    done, carry = 0, b""  # `done`: the complete lines before `carry`, the start of a line
    while block := handle.read(SCAN_BLOCK):
        while block.endswith(b"\r") and (following := handle.read(1)):
            block += following  # keep a CRLF in one piece
        if b'"' in block:
            return False
        lines = (carry + block).replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        carry = lines.pop()
        _refuse_first_bad(lines, done, shown, limits)
        done += len(lines)
        if len(carry) > limits.max_line_bytes:  # refused before its end is read
            _refuse_first_bad([carry], done, shown, limits)
    _refuse_first_bad([carry], done, shown, limits)
    return True


def _refuse_first_bad(lines, done, shown, limits):
    """Refuse the first of `lines` (unquoted, without line ends, after `done` lines of the file) that is
    too long, too wide or has too long a cell; at C speed when none can be."""
    longest = max(map(len, lines), default=0)
    widest = max(map(bytes.count, lines, itertools.repeat(b",")), default=0) + 1
    if longest <= min(limits.max_line_bytes, limits.max_cell_bytes) and widest <= limits.max_columns:
        return
    for number, line in enumerate(lines, start=done + 1):
        if len(line) > limits.max_line_bytes:
            fields = line[: limits.max_line_bytes].count(b",") + 1
            if fields > limits.max_columns:  # a wide header is named as such, not only as long
                raise InputRejected(_too_many_fields(shown, number, fields, limits, at_least=True))
            raise InputRejected(_too_long(shown, number, limits))
        if line.count(b",") >= limits.max_columns:
            raise InputRejected(_too_many_fields(shown, number, line.count(b",") + 1, limits))
        if len(line) > limits.max_cell_bytes:
            cells = [cell.lstrip(b" ") for cell in line.split(b",")]  # as csv's skipinitialspace reads them
            _check_cells(cells, f"{shown}: line {number}", limits)


def _too_many_fields(shown, number, fields, limits, *, at_least=False):
    return (
        f"{shown}: line {number} has {'at least ' if at_least else ''}{fields} fields, more than [iris] "
        f"max_columns = {limits.max_columns}"
    )


def _too_long(shown, number, limits):
    return f"{shown}: line {number} is longer than [iris] max_line_bytes = {limits.max_line_bytes} bytes"


def _check_cells(cells, where, limits):
    """Cells as bytes, or as text decoded with surrogateescape (one character per undecodable byte)."""
    for column, cell in enumerate(cells, start=1):
        size = len(cell) if isinstance(cell, bytes) else len(cell.encode("utf-8", "surrogateescape"))
        if size > limits.max_cell_bytes:
            raise InputRejected(
                f"{where} field {column} is {size} bytes long, more than [iris] max_cell_bytes = "
                f"{limits.max_cell_bytes}"
            )


class _RowTooLong(Exception):
    pass


class _BoundedLines:
    """The physical lines of a text file for csv.reader, read at most `limit` + 2 characters at a time;
    raises _RowTooLong once the row being read (its lines since `next_row()`, without the line end that
    closes it) is over `limit` bytes, so
    neither this reader nor csv.reader ever holds more than one bounded row."""

    def __init__(self, text, limit):
        self.text, self.limit = text, limit
        self.read, self.row_start, self.row_bytes, self.line = 0, 1, 0, ""

    def __iter__(self):
        return self

    def __next__(self):
        self.line = self.text.readline(self.limit + 2)  # a line at the limit and its CRLF, unsplit
        if not self.line:
            raise StopIteration
        self.read += 1
        self.row_bytes += len(self.line) if self.line.isascii() else len(self.line.encode("utf-8", "surrogateescape"))
        if self.row_bytes - (len(self.line) - len(self.line.rstrip("\r\n"))) > self.limit:  # its last line end aside
            raise _RowTooLong
        return self.line

    def next_row(self):
        self.row_start, self.row_bytes = self.read + 1, 0


def _quoted_shape(handle, shown, limits):
    """check_shape through the csv module, which knows quoted commas and line breaks, a row at a time."""
    _allow_fields_of(limits.max_line_bytes)
    text = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
    lines = _BoundedLines(text, limits.max_line_bytes)
    try:
        for row in csv.reader(lines, skipinitialspace=True):
            if len(row) > limits.max_columns:
                raise InputRejected(_too_many_fields(shown, lines.row_start, len(row), limits))
            if lines.row_bytes > limits.max_cell_bytes:  # else no cell of the row can be
                _check_cells(row, f"{shown}: line {lines.row_start}", limits)
            lines.next_row()
    except _RowTooLong:
        first = lines.read == lines.row_start  # the row's first line: count the fields it begins with
        start = lines.line.encode("utf-8", "surrogateescape")[: limits.max_line_bytes]
        prefix = next(csv.reader([start.decode("utf-8", "surrogateescape")]), []) if first else []
        if len(prefix) > limits.max_columns:
            raise InputRejected(_too_many_fields(shown, lines.row_start, len(prefix), limits, at_least=True)) from None
        raise InputRejected(_too_long(shown, lines.row_start, limits)) from None
    except csv.Error as exc:
        raise InputRejected(f"{shown}: not a readable CSV (line {lines.read}: {exc})") from None
    finally:
        text.detach()  # the caller's handle stays open


def _allow_fields_of(size):
    """csv's own field limit (131072 characters, process-wide) must not refuse what the row limit allows;
    it is only ever raised."""
    if csv.field_size_limit() < size:
        csv.field_size_limit(size)


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


def build_schema(min_rows, *, whole_file_checks=True):
    """Types, plausible positive sizes, known species, no nulls, enough rows and every class present.

    Without `whole_file_checks` only what each row can be judged on alone: that schema runs chunk by
    chunk.
    """
    import pandera.pandas as pa

    size_checks = [pa.Check.gt(0), pa.Check.le(MAX_CM)]
    columns = {name: pa.Column(float, size_checks, nullable=False, coerce=True) for name in FEATURES}
    species_checks = [pa.Check.isin(SPECIES)]
    file_checks = []
    if whole_file_checks:
        # One check per species, so a rejection names the species that is missing.
        species_checks.extend(
            pa.Check(
                lambda s, name=name: bool((s == name).any()), name=f"{name}_present", error=f"at least one {name} row"
            )
            for name in SPECIES
        )
        file_checks.append(pa.Check(lambda df: len(df) >= min_rows, name=f"at_least_{min_rows}_rows"))
    columns["species"] = pa.Column(str, species_checks, nullable=False, coerce=True)
    return pa.DataFrameSchema(columns, checks=file_checks, strict="filter", ordered=False)


def _failures(schema, frame):
    """Run the schema lazily: (validated frame or None, pandera's failure cases or None)."""
    import pandera.errors

    try:
        return schema.validate(frame, lazy=True), None
    except pandera.errors.SchemaErrors as exc:
        return None, exc.failure_cases


def _row_failures(frame):
    """Row checks chunk by chunk: (summarised failures, bad-row mask, whether a failure is file-wide).

    Pandera's failure cases for a file where every row is wrong take many times the file's memory;
    chunks keep that bounded while the counts stay exact.
    """
    import numpy as np

    schema = build_schema(0, whole_file_checks=False)
    bad = np.zeros(len(frame), dtype=bool)
    merged, file_wide = {}, False
    for start in range(0, max(len(frame), 1), CHUNK_ROWS):
        _, cases = _failures(schema, frame.iloc[start : start + CHUNK_ROWS])
        if cases is None:
            continue
        rows = cases["index"].dropna().astype(int)
        bad[rows.to_numpy()] = True
        file_wide = file_wide or len(rows) < len(cases)
        for entry in _summarise(cases):
            _merge(merged, entry)
    return list(merged.values()), bad, file_wide


def _merge(merged, entry):
    key = (entry["column"], entry["check"])
    if key not in merged:
        merged[key] = entry
        return
    kept = merged[key]
    if any("line" in example for example in entry["examples"]):  # a file-wide case is counted once
        kept["count"] += entry["count"]
        kept["examples"] = (kept["examples"] + entry["examples"])[:MAX_EXAMPLES]


def _summarise(cases):
    """Group pandera's failure cases into one entry per (column, check) with its first example lines."""
    import pandas as pd

    grouped = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        examples = []
        first = group.sort_values("index", key=lambda i: pd.to_numeric(i, errors="coerce")).head(MAX_EXAMPLES)
        for _, case in first.iterrows():
            example = {"value": None if _isnull(case["failure_case"]) else str(case["failure_case"])}
            if not _isnull(case["index"]):
                example["line"] = int(case["index"]) + 2  # line 1 is the header
            examples.append(example)
        grouped.append(
            {
                "column": None if _isnull(column) else str(column),
                "check": str(check),
                "count": int(len(group)),
                "examples": examples,
            }
        )
    return grouped


def _isnull(value):
    try:
        return value is None or value != value
    except (TypeError, ValueError):
        return False


def validate_frame(frame, *, source, min_rows, max_invalid_fraction=0.0):
    """Validate a raw frame: returns (valid frame, report) or raises InputRejected carrying the report.

    Rows failing a row-level check are dropped when they are at most `max_invalid_fraction` of the file
    and the rest still passes every check; a missing column or a whole-file check always rejects.
    """
    frame = frame.reset_index(drop=True)
    rows = len(frame)
    row_failures, bad, file_wide = _row_failures(frame)
    dropped = int(bad.sum())
    valid, failures = None, row_failures
    if not file_wide and dropped <= max_invalid_fraction * rows:
        valid, cases = _failures(build_schema(min_rows), frame[~bad])
        failures = [] if cases is None else _summarise(cases)
    report = {
        "file": str(source),
        "passed": valid is not None,
        "rows": rows,
        "valid_rows": 0 if valid is None else len(valid),
        "dropped_rows": dropped if valid is not None else 0,
        "invalid_rows": dropped,
        "max_invalid_fraction": max_invalid_fraction,
        "dropped": row_failures if valid is not None else [],
        "failures": failures,
    }
    if valid is None:
        raise InputRejected(format_report(report), report)
    return valid[[*FEATURES, "species"]].reset_index(drop=True), report  # canonical column order


def format_report(report):
    """A human-readable report: a headline that says what happened to the file as a whole, then one line per
    failing check with its column, count and example lines."""
    lines = [f"{report['file']}: {verdict(report)}"]
    for title, entries in (("failed", report["failures"]), ("dropped", report.get("dropped", []))):
        for entry in entries:
            column = f"column '{entry['column']}'" if entry["column"] else "file"
            shown = ", ".join(
                (f"line {e['line']}: {e['value']!r}" if "line" in e else repr(e["value"])) for e in entry["examples"]
            )
            lines.append(f"  {title}: {column} check '{entry['check']}' ({entry['count']} cases; {shown})")
    return "\n".join(lines)


def verdict(report):
    """'validation passed: 150 of 150 rows valid, 0 dropped', or why the whole file was refused: how many
    rows broke a check and what [iris] max_invalid_fraction allows, or the file-wide checks that failed."""
    if report["passed"]:
        return f"validation passed: {report['valid_rows']} of {report['rows']} rows valid, {report['dropped_rows']} dropped"
    invalid, rows = report.get("invalid_rows") or 0, report["rows"]
    allowed = report.get("max_invalid_fraction") or 0.0
    if invalid > allowed * rows:
        return (
            f"validation REJECTED, the whole file refused: {invalid} of {rows} rows break a check, more than "
            f"[iris] max_invalid_fraction = {allowed:g} allows ({int(allowed * rows)} row{'s' if int(allowed * rows) != 1 else ''})"
        )
    checks = sorted({entry["check"] for entry in report["failures"]})
    return f"validation REJECTED, the whole file refused: {rows} rows, failing {', '.join(checks) or 'the file checks'}"
