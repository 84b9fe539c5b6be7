"""A file's shape bounded by streaming, before pandas sees it: how many fields a row has, how long a line
and a cell may be (`[iris] max_columns`, `max_line_bytes`, `max_cell_bytes`). A refused file is refused
within seconds and with memory bounded by the limits, whatever its size.
"""

import csv
import io
import itertools

from .schema import InputRejected

SCAN_BLOCK = 1024 * 1024  # bytes check_shape looks at at once


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
