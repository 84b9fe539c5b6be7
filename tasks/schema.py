"""The Iris input contract: a pandera schema every day's rows must meet, and the report of what broke it.

`validate_frame` checks every row lazily, so one report lists every failing check, column and a few
offending lines at once; `format_report` and `verdict` tell it in words. Reading the file is
`tasks.reading`'s.
"""

from .config import FEATURES, SPECIES

MAX_EXAMPLES = 5


CHUNK_ROWS = 100_000  # rows pandera checks at once: bounds the memory its failure cases take


MAX_CM = 30.0  # no iris flower part is anywhere near 30 cm: larger values are unit or typing errors


class InputRejected(Exception):
    """The day's input cannot be used; the message names the file, column and check."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


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
