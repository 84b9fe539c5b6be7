"""The Iris input contract: reading a day's CSV and validating it with a pandera schema.

`read_source` turns a file into a DataFrame or raises InputRejected naming the file and what is wrong
with it as a whole; `validate_frame` checks every row lazily, so one report lists every failing check,
column and a few offending lines at once.
"""
import os

from .config import FEATURES, SPECIES

MAX_EXAMPLES = 5
MAX_CM = 30.0  # no iris flower part is anywhere near 30 cm: larger values are unit or typing errors


class InputRejected(Exception):
    """The day's input cannot be used; the message names the file, column and check."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


def read_source(path, max_bytes=None):
    """Read a CSV into a DataFrame of strings-as-found; header names are stripped and lower-cased."""
    import pandas as pd

    size = os.path.getsize(path)
    if max_bytes is not None and size > max_bytes:
        raise InputRejected(f"{path}: file is {size} bytes, over the limit of {max_bytes} "
                            "([iris] max_source_bytes)")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputRejected(f"{path}: empty file, expected a CSV with a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputRejected(f"{path}: not a readable CSV ({_first_line(exc)})") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame


def _first_line(exc):
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def build_schema(min_rows):
    """Types, plausible positive sizes, known species, no nulls, enough rows and every class present."""
    import pandera.pandas as pa

    size_checks = [pa.Check.gt(0), pa.Check.le(MAX_CM)]
    columns = {name: pa.Column(float, size_checks, nullable=False, coerce=True) for name in FEATURES}
    columns["species"] = pa.Column(
        str, [pa.Check.isin(SPECIES),
              pa.Check(lambda s: set(SPECIES) <= set(s), name="every_species_present",
                       error=f"every species of {', '.join(SPECIES)} must be present")],
        nullable=False, coerce=True)
    return pa.DataFrameSchema(
        columns,
        checks=[pa.Check(lambda df: len(df) >= min_rows, name=f"at_least_{min_rows}_rows")],
        strict="filter", ordered=False)


def _failures(schema, frame):
    """Run the schema lazily: (validated frame or None, pandera's failure cases or None)."""
    import pandera.errors

    try:
        return schema.validate(frame, lazy=True), None
    except pandera.errors.SchemaErrors as exc:
        return None, exc.failure_cases


def _summarise(cases):
    """Group pandera's failure cases into one entry per (column, check) with a few example lines."""
    grouped = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        examples = []
        for _, case in group.head(MAX_EXAMPLES).iterrows():
            example = {"value": None if _isnull(case["failure_case"]) else str(case["failure_case"])}
            if not _isnull(case["index"]):
                example["line"] = int(case["index"]) + 2  # line 1 is the header
            examples.append(example)
        grouped.append({"column": None if _isnull(column) else str(column), "check": str(check),
                        "count": int(len(group)), "examples": examples})
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
    schema = build_schema(min_rows)
    rows = len(frame)
    valid, cases = _failures(schema, frame)
    dropped = 0
    if cases is not None:
        row_cases = cases[cases["index"].notna()]
        bad_rows = set(row_cases["index"].astype(int))
        if len(row_cases) == len(cases) and len(bad_rows) <= max_invalid_fraction * rows:
            valid, second = _failures(schema, frame.drop(index=sorted(bad_rows)))
            dropped = len(bad_rows)
            if second is not None:
                cases = second
    failures = _summarise(cases) if cases is not None and valid is None else []
    report = {
        "file": str(source), "passed": valid is not None, "rows": rows,
        "valid_rows": 0 if valid is None else len(valid), "dropped_rows": dropped,
        "max_invalid_fraction": max_invalid_fraction,
        "dropped": _summarise(cases) if dropped and valid is not None else [],
        "failures": failures,
    }
    if valid is None:
        raise InputRejected(format_report(report), report)
    return valid.reset_index(drop=True), report


def format_report(report):
    """A human-readable report: one line per failing check with its column, count and example lines."""
    status = "passed" if report["passed"] else "REJECTED"
    lines = [f"{report['file']}: validation {status}: {report['valid_rows']} of {report['rows']} rows "
             f"valid, {report['dropped_rows']} dropped"]
    for title, entries in (("failed", report["failures"]), ("dropped", report.get("dropped", []))):
        for entry in entries:
            column = f"column '{entry['column']}'" if entry["column"] else "file"
            shown = ", ".join(
                (f"line {e['line']}: {e['value']!r}" if "line" in e else repr(e["value"]))
                for e in entry["examples"])
            lines.append(f"  {title}: {column} check '{entry['check']}' ({entry['count']} cases; {shown})")
    return "\n".join(lines)
