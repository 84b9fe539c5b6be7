"""What a report file holds, as pages may show it: every field of the expected type, or left out.

The files under a date's partition and failure record are the service's own, but a file damaged on disk,
written by another version, or refused while being read must still render: these functions keep only
values of the shape the templates and charts expect.
"""

from tasks.partition import is_number
from tasks.schema import verdict

from ..secrets import mask


def failure_shown(failure):
    """A failure record as pages show it: its error with secrets masked, whichever version wrote it."""
    if failure is None or not failure.get("error"):
        return failure
    return {**failure, "error": mask(str(failure["error"]))}


def validation_shown(report):
    """A validation report as pages show it, every field of the expected type, or None when it is not a
    report at all. A file refused while being read has no row counts: they stay None."""
    if not isinstance(report, dict):
        return None

    def entries(key):
        shown = []
        for entry in report.get(key) if isinstance(report.get(key), list) else []:
            if not isinstance(entry, dict):
                continue
            examples = (
                [e for e in entry.get("examples") or [] if isinstance(e, dict)]
                if isinstance(entry.get("examples"), list)
                else []
            )
            shown.append(
                {
                    "check": str(entry.get("check", "")),
                    "column": str(entry["column"]) if entry.get("column") is not None else None,
                    "count": entry.get("count") if is_number(entry.get("count")) else None,
                    "examples": [
                        {"line": e["line"] if isinstance(e.get("line"), int) else None, "value": str(e.get("value"))}
                        for e in examples
                    ],
                }
            )
        return shown

    rows = report.get("rows") if is_number(report.get("rows")) else None
    valid = report.get("valid_rows") if is_number(report.get("valid_rows")) else None
    shown = {
        "file": str(report.get("file", "")),
        "passed": report.get("passed") is True,
        "error": mask(str(report["error"])) if report.get("error") else None,
        "rows": rows,
        "valid_rows": valid,
        "dropped_rows": report.get("dropped_rows") if is_number(report.get("dropped_rows")) else 0,
        "rejected_rows": rows - valid if rows is not None and valid is not None else None,
        "invalid_rows": report.get("invalid_rows") if is_number(report.get("invalid_rows")) else 0,
        "max_invalid_fraction": report.get("max_invalid_fraction")
        if is_number(report.get("max_invalid_fraction"))
        else 0,
        "failures": entries("failures"),
        "dropped": entries("dropped"),
    }
    if rows is None or valid is None:
        shown["headline"] = "refused while being read" + (f": {shown['error']}" if shown["error"] else "")
    else:
        shown["headline"] = verdict(shown)
    return shown


def metrics_shown(metrics):
    """A model's metrics.json as pages show it, or None when it lacks an accuracy and F1 to show."""
    if not isinstance(metrics, dict) or not (is_number(metrics.get("accuracy")) and is_number(metrics.get("macro_f1"))):
        return None
    labels = metrics.get("labels") if isinstance(metrics.get("labels"), list) else []
    matrix = metrics.get("confusion_matrix")
    square = (
        isinstance(matrix, list)
        and len(matrix) == len(labels)
        and all(isinstance(r, list) and len(r) == len(labels) for r in matrix)
    )
    return {**metrics, "labels": [str(label) for label in labels], "confusion_matrix": matrix if square else []}


def drift_shown(report):
    """A drift report as pages and charts show it: features with numeric scores only."""
    if not isinstance(report, dict):
        return None
    features = report.get("features") if isinstance(report.get("features"), dict) else {}
    kept = {
        str(name): score
        for name, score in features.items()
        if isinstance(score, dict) and all(is_number(score.get(k)) for k in ("psi", "ks_statistic", "ks_pvalue"))
    }
    species = report.get("species")
    species_ok = (
        isinstance(species, dict)
        and isinstance(species.get("shares"), dict)
        and isinstance(species.get("reference_shares"), dict)
        and all(
            is_number(species["shares"].get(k)) and is_number(species["reference_shares"].get(k))
            for k in species["shares"]
        )
        and all(is_number(species.get(k)) for k in ("chi2_statistic", "chi2_pvalue"))
    )
    drifted = report.get("drifted") if isinstance(report.get("drifted"), list) else []
    reference = report.get("reference") if isinstance(report.get("reference"), dict) else None
    return {
        **report,
        "features": kept,
        "species": species if species_ok else None,
        "drifted": [str(name) for name in drifted],
        "reference": reference,
        "drift_detected": report.get("drift_detected") if report.get("drift_detected") in (True, False) else None,
    }
