"""The Iris input contract: reading a day's CSV and validating it with a pandera schema.

`read_source` turns a file into a DataFrame or raises InputRejected naming the file and what is wrong
with it as a whole; `validate_frame` checks every row lazily, so one report lists every failing check,
column and a few offending lines at once.
"""

import csv
import os
import stat

from .config import FEATURES, SPECIES

MAX_EXAMPLES = 5
COPY_BLOCK = 1024 * 1024
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
    service read and archive another file; it must be a regular file, so a device or FIFO cannot make
    the copy endless; and at most `max_bytes` are copied, checked while copying, so a file that grows
    after it was measured is refused too.
    """
    real, allowed = os.path.realpath(path), os.path.realpath(data_dir)
    if os.path.commonpath([real, allowed]) != allowed:
        raise InputRejected(
            f"{path}: resolves to {real}, outside the data directory {allowed}; refused (a symlink pointing elsewhere?)"
        )
    if not stat.S_ISREG(os.stat(real).st_mode):
        raise InputRejected(f"{path}: not a regular file; refused")
    copied = 0
    with open(real, "rb") as source, open(destination, "wb") as copy:
        while block := source.read(COPY_BLOCK):
            copied += len(block)
            if max_bytes is not None and copied > max_bytes:
                raise InputRejected(_too_big(path, f"more than {max_bytes}", max_bytes))
            copy.write(block)


def _too_big(path, size, max_bytes):
    return f"{path}: file is {size} bytes, over the limit of {max_bytes} ([iris] max_source_bytes)"


def read_source(path, max_bytes=None, *, shown_as=None):
    """Read a CSV into a DataFrame, normalising what is harmless and refusing what is ambiguous.

    Accepted: a UTF-8 byte-order mark, CRLF line ends, quoted fields, header names in any order, case
    or surrounding space (they are stripped and lower-cased), extra columns (ignored by the schema).
    Refused with InputRejected naming the file: over `max_bytes`, empty, binary, not UTF-8 (with the
    line), another delimiter than ',', a column named twice, a row with more fields than the header,
    and a last line cut short (fewer fields and no line end: a file still being written).
    """
    import pandas as pd

    shown = shown_as or path  # the name messages give the file: the day's source, not its snapshot
    size = os.path.getsize(path)
    if max_bytes is not None and size > max_bytes:
        raise InputRejected(_too_big(shown, size, max_bytes))
    fields = len(_header(path, shown))
    try:
        frame = pd.read_csv(path, skipinitialspace=True, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise InputRejected(f"{shown}: empty file, expected a CSV with a header row") from None
    except UnicodeDecodeError:
        raise InputRejected(f"{shown}: not UTF-8 text ({_first_undecodable(path)})") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputRejected(f"{shown}: not a readable CSV ({_first_line(exc)})") from None
    frame.columns = _normalised(frame.columns)
    _refuse_truncated_end(path, shown, fields, len(frame) + 1)
    return frame


def _normalised(names):
    return [str(name).strip().lower() for name in names]


def _header(path, shown):
    """The normalised header names; refuses binary files, other delimiters, repeated names and a
    first row longer than the header."""
    with open(path, "rb") as handle:
        start = handle.read(HEADER_PEEK)
    if b"\0" in start:
        raise InputRejected(f"{shown}: binary data (NUL bytes), expected a UTF-8 CSV text file")
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
    repeated = sorted({name for name in names if name and names.count(name) > 1})
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

    columns = _feature_columns()
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


def _feature_columns():
    """The feature columns of the schema: floats, plausible positive sizes, no nulls."""
    import pandera.pandas as pa

    size_checks = [pa.Check.gt(0), pa.Check.le(MAX_CM)]
    return {name: pa.Column(float, size_checks, nullable=False, coerce=True) for name in FEATURES}


def check_features(frame, *, source):
    """Rows to predict on: exactly the feature columns (no label), each value as the pipeline's schema
    wants it. Returns the frame with the columns in canonical order, or raises InputRejected with one line
    naming the file and the columns or the first failing checks."""
    import pandera.pandas as pa

    names = [str(name) for name in frame.columns]
    missing = [name for name in FEATURES if name not in names]
    extra = [name for name in names if name not in FEATURES]
    if missing or extra:
        problems = [
            f"missing column(s) {', '.join(missing)}" if missing else "",
            f"extra column(s) {', '.join(extra)}" if extra else "",
        ]
        raise InputRejected(f"{source}: {'; '.join(p for p in problems if p)}; expected exactly {', '.join(FEATURES)}")
    valid, cases = _failures(pa.DataFrameSchema(_feature_columns(), ordered=False), frame.reset_index(drop=True))
    if cases is not None:
        shown = []
        for entry in _summarise(cases)[:MAX_EXAMPLES]:
            lines = ", ".join(f"line {e['line']}: {e['value']!r}" for e in entry["examples"] if "line" in e)
            shown.append(f"column '{entry['column']}' check '{entry['check']}' ({entry['count']} cases; {lines})")
        raise InputRejected(f"{source}: " + "; ".join(shown))
    return valid[list(FEATURES)]


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
        "max_invalid_fraction": max_invalid_fraction,
        "dropped": row_failures if valid is not None else [],
        "failures": failures,
    }
    if valid is None:
        raise InputRejected(format_report(report), report)
    return valid[[*FEATURES, "species"]].reset_index(drop=True), report  # canonical column order


def format_report(report):
    """A human-readable report: one line per failing check with its column, count and example lines."""
    status = "passed" if report["passed"] else "REJECTED"
    lines = [
        f"{report['file']}: validation {status}: {report['valid_rows']} of {report['rows']} rows "
        f"valid, {report['dropped_rows']} dropped"
    ]
    for title, entries in (("failed", report["failures"]), ("dropped", report.get("dropped", []))):
        for entry in entries:
            column = f"column '{entry['column']}'" if entry["column"] else "file"
            shown = ", ".join(
                (f"line {e['line']}: {e['value']!r}" if "line" in e else repr(e["value"])) for e in entry["examples"]
            )
            lines.append(f"  {title}: {column} check '{entry['check']}' ({entry['count']} cases; {shown})")
    return "\n".join(lines)
