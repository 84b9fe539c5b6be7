"""Data drift of a date against a reference, as plain functions of arrays and DataFrames.

A model trained every day on data that has quietly moved still scores well on its own test split, so
accuracy alone never shows drift: each feature of the day's validated data is compared with a reference
sample by the population stability index (PSI, the share-weighted log ratio of binned distributions,
with the usual bands below 0.1 stable, 0.1-0.25 moderate, above 0.25 significant) and by the two-sample
Kolmogorov-Smirnov test; the species column by its class shares and a chi-square test of the two
samples' counts. The Drift task (tasks.iris) reads the data, calls `drift_report` and writes drift.json.

Only `read_drift` is used by code that must stay light (the metrics and the partition view); numpy,
pandas and scipy are imported inside the functions that compute.
"""

from typing import Any

from . import partition

DRIFT = "drift.json"
PSI_BINS = 10
PSI_FLOOR = 1e-4  # a bin empty on one side would make PSI infinite; this share stands in for zero


def psi(reference, current, bins=PSI_BINS):
    """Population stability index of `current` against `reference` (1-d numeric arrays).

    Bins are the reference's quantiles (at most `bins`; fewer when values repeat), extended to cover
    every value of both samples; an empty bin counts as a share of PSI_FLOOR so the index stays finite.
    0 means the same binned distribution; it grows without bound as they part.
    """
    import numpy as np

    reference, current = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    if len(edges) < 3:  # a constant reference: one bin below or at the value, one above
        edges = np.array([-np.inf, float(reference[0]), np.inf])
    expected = np.histogram(reference, edges)[0] / len(reference)
    actual = np.histogram(current, edges)[0] / len(current)
    expected, actual = np.maximum(expected, PSI_FLOOR), np.maximum(actual, PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_test(reference, current):
    """(statistic, p-value) of the two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp)."""
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, current)
    return float(result.statistic), float(result.pvalue)


def class_shares(labels, classes):
    """{class: share of `labels`} for every class, 0.0 for a class that does not occur."""
    labels = list(labels)
    return {name: (labels.count(name) / len(labels) if labels else 0.0) for name in classes}


def class_test(reference_labels, current_labels, classes):
    """(chi-square statistic, p-value) that both samples share one class distribution.

    scipy.stats.chi2_contingency on the 2 x classes table of counts; classes absent from both samples
    are left out (a zero column has no expected count). A single class left has nothing to compare: (0, 1).
    """
    from scipy.stats import chi2_contingency

    reference_labels, current_labels = list(reference_labels), list(current_labels)
    table = [[sample.count(name) for name in classes] for sample in (reference_labels, current_labels)]
    table = [list(column) for column in zip(*table, strict=True) if any(column)]
    if len(table) < 2:
        return 0.0, 1.0
    result = chi2_contingency(list(zip(*table, strict=True)))
    return float(result.statistic), float(result.pvalue)


def psi_band(value, moderate, significant):
    """'stable', 'moderate' or 'significant' by the PSI bands."""
    return "significant" if value >= significant else "moderate" if value >= moderate else "stable"


def feature_drift(reference, current, thresholds):
    """PSI, KS and the verdict for one feature.

    Drift is a significant PSI, or a moderate one that the KS test confirms (p-value below
    `ks_pvalue`): PSI alone flags noise on small days, KS alone flags shifts too small to matter on a
    long reference.
    """
    index = psi(reference, current)
    statistic, pvalue = ks_test(reference, current)
    band = psi_band(index, thresholds["psi_moderate"], thresholds["psi_significant"])
    drifted = band == "significant" or (band == "moderate" and pvalue < thresholds["ks_pvalue"])
    return {"psi": index, "psi_band": band, "ks_statistic": statistic, "ks_pvalue": pvalue, "drift": drifted}


def species_drift(reference_labels, current_labels, classes, thresholds):
    """Class shares of both samples, the chi-square test, and the verdict: drift when the test rejects
    at `chi2_pvalue` or a class of the reference is absent from the day."""
    reference_shares = class_shares(reference_labels, classes)
    current_shares = class_shares(current_labels, classes)
    statistic, pvalue = class_test(reference_labels, current_labels, classes)
    vanished = [name for name in classes if reference_shares[name] > 0 and current_shares[name] == 0]
    return {
        "reference_shares": reference_shares,
        "shares": current_shares,
        "chi2_statistic": statistic,
        "chi2_pvalue": pvalue,
        "missing_classes": vanished,
        "drift": pvalue < thresholds["chi2_pvalue"] or bool(vanished),
    }


def drift_report(reference, current, features, classes, thresholds):
    """The date's drift.json content from two DataFrames (reference and the day's validated rows).

    `drift_detected` is true when any feature or the species shares drifted.
    """
    scores = {
        name: feature_drift(reference[name].to_numpy(), current[name].to_numpy(), thresholds) for name in features
    }
    species = species_drift(reference["species"], current["species"], classes, thresholds)
    drifted = sorted(name for name, score in scores.items() if score["drift"])
    if species["drift"]:
        drifted.append("species")
    return {
        "drift_detected": bool(drifted),
        "drifted": drifted,
        "rows": int(len(current)),
        "features": scores,
        "species": species,
        "thresholds": dict(thresholds),
    }


def no_verdict(reason, thresholds):
    """drift.json for a date with too little reference to judge: drift_detected is null, and why."""
    return {
        "drift_detected": None,
        "drifted": [],
        "reason": reason,
        "features": {},
        "species": None,
        "thresholds": dict(thresholds),
    }


def assess_drift(current, reference, settings, features):
    """drift.json for the day's validated rows `current` against `reference`, read here.

    `reference` is {"file": path} (a pinned CSV) or {"dates": [YYYY-MM-DD...], "root": output root}
    (their validated.csv). `settings` is the `[quality]` section. Too few dates or rows give no verdict.
    """
    from .config import SPECIES

    thresholds = settings.thresholds()
    if "file" in reference:
        from .reading import read_source

        frame = read_source(reference["file"])
        used = {"kind": "pinned", "file": reference["file"], "described": f"the pinned reference {reference['file']}"}
    else:
        frame = _read_validated(reference["root"], reference["dates"])
        dates = reference["dates"]
        used = {
            "kind": "recent",
            "dates": dates,
            "days": settings.reference_days,
            "described": f"{len(dates)} complete dates of the previous {settings.reference_days}",
        }
        if len(dates) < settings.min_reference_dates:
            return {
                **no_verdict(
                    f"{len(dates)} complete dates in the previous {settings.reference_days} days, "
                    f"fewer than [quality] min_reference_dates = {settings.min_reference_dates}",
                    thresholds,
                ),
                "reference": {**used, "rows": len(frame)},
            }
    used["rows"] = len(frame)
    if len(frame) < settings.min_reference_rows:
        return {
            **no_verdict(
                f"{len(frame)} reference rows, fewer than [quality] min_reference_rows = {settings.min_reference_rows}",
                thresholds,
            ),
            "reference": used,
        }
    return {**drift_report(frame, current, features, SPECIES, thresholds), "reference": used}


def _read_validated(root, dates):
    """The validated.csv of the dates, one frame (empty, with the columns, for no dates)."""
    import pandas as pd

    from .config import FEATURES
    from .files import read_table

    frames = []
    for day in dates:
        path = partition.partition_dir(root, day) / VALIDATED
        sealed = _SEALED.get((str(root), str(day)))
        key = (str(path), sealed)
        if sealed is None or key not in _FRAMES:
            frame = read_table(path)
            if sealed is None:
                frames.append(frame)
                continue
            _FRAMES[key] = frame
            while len(_FRAMES) > MAX_CACHED_FRAMES:
                _FRAMES.pop(next(iter(_FRAMES)))
        frames.append(_FRAMES[key])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*FEATURES, "species"])


# A complete date stays complete while a process builds other dates, and a day's reference is mostly the
# previous day's reference: the dates found complete (with the sha256 their summary seals validated.csv
# with) and the frames read by that sha256 are kept, so a backfill checks and reads each date's history
# once rather than `reference_days` times (on object storage, a LIST and a GET each time).
_SEALED: dict[tuple[str, str], str] = {}
_FRAMES: dict[tuple[str, str], Any] = {}
MAX_CACHED_FRAMES = 400
VALIDATED = "validated.csv"


def history_dates(root, date, days):
    """The complete dates among the `days` dates before `date`, oldest first (the default reference)."""
    import datetime as dt

    candidates = [date - dt.timedelta(days=n) for n in range(days, 0, -1)]
    return [day for day in candidates if _complete(root, day)]


def _complete(root, day):
    if (str(root), str(day)) in _SEALED:
        return True
    found = partition.inspect(root, day)
    if found.state != "complete" or found.summary is None:
        return False
    _SEALED[str(root), str(day)] = found.summary["manifest"].get(VALIDATED, {}).get("sha256", "")
    return True


def describe_drift(report):
    """One line naming what drifted, for an error message or a log line."""
    parts = []
    for name in report["drifted"]:
        if name == "species":
            missing = report["species"]["missing_classes"]
            parts.append(
                "species shares"
                + (
                    f" (missing {', '.join(missing)})"
                    if missing
                    else f" (chi-square p={report['species']['chi2_pvalue']:.2g})"
                )
            )
        else:
            score = report["features"][name]
            parts.append(f"{name} (PSI {score['psi']:.2f}, KS p={score['ks_pvalue']:.2g})")
    return ", ".join(parts)


def read_drift(root, date):
    """The date's drift.json from its partition, else from its failure record's folder; None if absent."""
    for folder in (partition.partition_dir(root, date), partition.failed_dir(root, date)):
        report = partition.durable.read_json(folder / DRIFT)
        if isinstance(report, dict):
            return report
    return None
