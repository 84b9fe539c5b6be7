"""The champion rule: which model a consumer should use, decided date by date in date order.

When a date completes, its best model (summary.json's `best_model`) is the challenger. It is blocked when
the date fails a gate of `[champion]` — drift detected, more than `max_dropped_fraction` of its rows
dropped by validation, a best accuracy under `min_accuracy` — and otherwise promoted when there is no
champion yet, or when, both scored on the new date's test split (the same rows), it beats the champion by
at least `margin`; else the champion is kept.

Dates are decided once each, newest last: after every run (`decide_pending`, called at the end of
`service.runner.run_dates`) each complete date newer than the last one decided, in ascending order,
stopping at a date that is being built now — so how many workers built the dates, and in which order they
finished, changes nothing. A rebuilt older date is not decided again; `replay` re-decides from a date on
explicitly, and `override` records a manual promotion.
"""

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from tasks import partition
from tasks.models import model_folder, settings_digest

from . import store

LOG = logging.getLogger(__name__)
TOLERANCE = 1e-9  # accuracies are ratios of small counts: 0.97 - 0.96 must count as 0.01
VALIDATION = "validation.json"


class NoSuchModel(ValueError):
    """A date or model that cannot be the champion (not complete, not trained that day)."""


@dataclass(frozen=True)
class Gates:
    """The `[champion]` thresholds."""

    min_accuracy: float
    max_dropped_fraction: float
    margin: float

    @classmethod
    def configured(cls) -> "Gates":
        from ..config import champion_settings

        rule = champion_settings()
        return cls(rule.min_accuracy, rule.max_dropped_fraction, rule.margin)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _complete_summary(root: partition.StrPath, date: dt.date) -> dict[str, Any]:
    """The summary of a complete date (NoSuchModel for any other)."""
    found = partition.inspect(root, date)
    if found.state != "complete" or found.summary is None:
        raise NoSuchModel(f"{date}: not a complete date under {root}")
    return found.summary


def model_record(date: dt.date, summary: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """The champion record of the complete date's model `model` (default its best), from its summary: its
    date, name, settings digest, test accuracy, model file (relative to the root) and the sha256 the
    summary sealed."""
    name = model or summary["best_model"]
    metrics = summary["models"].get(name)
    if metrics is None:
        raise NoSuchModel(f"{date}: no model {name!r} (trained: {', '.join(sorted(summary['models']))})")
    settings = metrics.get("settings")
    relative = f"{model_folder(settings)}/model.joblib" if isinstance(settings, dict) else None
    sealed = summary["manifest"].get(relative or "")
    if sealed is None:
        raise NoSuchModel(f"{date}: model {name!r} has no model file in the date's manifest")
    record = {
        "date": date.isoformat(),
        "model": name,
        "digest": settings_digest(settings),
        "accuracy": metrics["accuracy"],
        "model_file": f"{date.isoformat()}/{relative}",
        "sha256": sealed["sha256"],
        "settings": settings,
    }
    return record


class ModelUnusable(OSError):
    """The champion's model file is gone or no longer the file that was sealed."""


def load_model(root: partition.StrPath, record: dict[str, Any]):
    """The fitted estimator of a champion record. A pickle runs code when loaded, so only bytes irisflow
    sealed are loaded: the file must be the date's own model file, named in its summary's manifest, and the
    bytes read (once, then unpickled from memory) must have the sha256 that manifest recorded."""
    import pickle

    date, _, relative = str(record.get("model_file", "")).partition("/")
    try:
        summary = partition.read_summary(root, date)
    except ValueError:  # not a date: a champion.json no irisflow wrote
        summary = None
    sealed = (summary or {}).get("manifest", {}).get(relative) if relative.endswith("/model.joblib") else None
    if sealed is None or sealed["sha256"] != record.get("sha256"):
        raise ModelUnusable(f"{record.get('model_file')}: not a model file its date sealed")
    path = partition.partition_dir(root, date) / relative
    try:
        content = partition.durable.read_bytes(path)
    except OSError as exc:
        raise ModelUnusable(f"{path}: {exc.strerror or exc}") from None
    if hashlib.sha256(content).hexdigest() != sealed["sha256"]:
        raise ModelUnusable(f"{path}: content differs from the sha256 its date sealed")
    return pickle.loads(content)  # noqa: S301 - the bytes are the ones the date's manifest sealed


def test_rows(root: partition.StrPath, date: str, settings: dict[str, Any]):
    """The test split of `date` that a model with `settings` (test_size, seed) was evaluated on."""
    from tasks.files import read_table

    folder = f"split/test_size-{settings['test_size']:g}_seed-{settings['seed']}"
    return read_table(partition.partition_dir(root, date) / folder / "test.csv")


class Scorer:
    """How champion records' models score on a date's test rows, each model file loaded (through
    `load_model`'s checks) once per pass over the dates: a champion kept for months, or a challenger
    promoted and then defending the next date, is not read, hashed and unpickled again for every date.
    Only the last `KEEP` models are held (a date needs two: its challenger and the champion), so a long
    pass does not keep every date's model in memory."""

    KEEP = 2

    def __init__(self, root: partition.StrPath):
        self.root = root
        self._loaded: dict[tuple[str, str], Any] = {}  # (model file, sha256) -> estimator, oldest first

    def on_own_split(self, record: dict[str, Any]) -> float:
        """The record's accuracy on its own date's test split: TrainModel measured it on exactly those rows,
        and the date sealed it in its summary with the model file's sha256, so predicting them again would
        only give the same number. The model file is loaded all the same, so a file that is not the sealed
        one stops the decision as it would have (ModelUnusable), and the model is at hand should it win."""
        self._estimator(record)
        return float(record["accuracy"])

    def __call__(self, record: dict[str, Any], rows) -> float:
        """Accuracy of the record's model on `rows` (a frame with the feature columns and species); raises
        ModelUnusable as `load_model` does."""
        from tasks.steps import checked_inputs

        with checked_inputs():  # rows the date's schema checked
            predicted = self._estimator(record).predict(rows[list(record["settings"]["features"])])
        # The share of rows predicted right, as scikit-learn's accuracy_score computes it, without its checks
        # of the labels' types: they cost as much as the prediction, on rows the schema has checked.
        return float((predicted == rows["species"].to_numpy()).mean())

    def _estimator(self, record: dict[str, Any]):
        key = (record["model_file"], record["sha256"])
        estimator = self._loaded.pop(key, None)
        if estimator is None:
            estimator = load_model(self.root, record)
        self._loaded[key] = estimator  # the newest last
        while len(self._loaded) > self.KEEP:
            del self._loaded[next(iter(self._loaded))]
        return estimator


def gate(root: partition.StrPath, date: dt.date, summary: dict[str, Any], gates: Gates) -> tuple[str, str] | None:
    """(gate, why) of the first gate the date fails, or None when it passes them all."""
    if summary.get("drift_detected") is True:
        return "drift", "drift detected against the reference"
    report = partition.durable.read_json(partition.partition_dir(root, date) / VALIDATION)
    rows = report.get("rows") if isinstance(report, dict) else None
    dropped = report.get("dropped_rows") if isinstance(report, dict) else None
    if not isinstance(rows, int) or not isinstance(dropped, int) or rows <= 0:
        return "dropped_rows", f"{VALIDATION} unreadable: the share of dropped rows is unknown"
    if dropped / rows > gates.max_dropped_fraction + TOLERANCE:
        return (
            "dropped_rows",
            f"{dropped} of {rows} rows dropped, over max_dropped_fraction {gates.max_dropped_fraction:g}",
        )
    if summary["best_accuracy"] < gates.min_accuracy - TOLERANCE:
        return "accuracy", f"best accuracy {summary['best_accuracy']:.3f} under min_accuracy {gates.min_accuracy:g}"
    return None


def decide(
    root: partition.StrPath,
    date: dt.date,
    summary: dict[str, Any],
    champion: dict[str, Any] | None,
    gates: Gates,
    score: Scorer,
) -> dict[str, Any]:
    """The decision for one complete date (its summary) against `champion` (a history entry without its seq)."""
    challenger = model_record(date, summary)
    entry: dict[str, Any] = {
        "time": _now(),
        "date": date.isoformat(),
        "challenger": {key: challenger[key] for key in ("model", "digest", "accuracy")},
        "scores": None,
        "champion": champion,
    }
    failed = gate(root, date, summary, gates)
    if failed is not None:
        entry.update(decision="blocked", gate=failed[0], reason=failed[1])
        return entry
    if champion is None:
        entry.update(decision="promoted", reason="first date to pass the gates", champion=_since(challenger))
        return entry
    rows = test_rows(root, date.isoformat(), challenger["settings"])
    challenger_score = score.on_own_split(challenger)
    try:
        champion_score: float | None = score(champion, rows)
    except ModelUnusable as exc:
        champion_score, unusable = None, str(exc)
    entry["scores"] = {"challenger": challenger_score, "champion": champion_score, "rows": int(len(rows))}
    if champion_score is None:
        entry.update(decision="promoted", reason=f"the champion's model cannot be used: {unusable}")
    elif challenger_score - champion_score >= gates.margin - TOLERANCE:
        entry.update(
            decision="promoted",
            reason=f"{challenger_score:.3f} beats the champion's {champion_score:.3f} by at least {gates.margin:g}",
        )
    else:
        entry.update(
            decision="kept",
            reason=f"{challenger_score:.3f} does not beat the champion's {champion_score:.3f} by {gates.margin:g}",
        )
        return entry
    entry["champion"] = _since(challenger)
    return entry


def _since(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "since": _now()}


def _decide_from(writer: store.Writer, dates: list[dt.date], champion, gates: Gates, replay=False) -> list:
    """Decide `dates` in order, each against the champion the previous one left; stops before a date that
    is being built now, so it is decided once complete. Returns the history entries written."""
    from tasks.config import settings

    written, score, lease_seconds = [], Scorer(writer.root), settings().lease_seconds
    for date in dates:
        if partition.in_progress(writer.root, date, lease_seconds):
            break
        found = partition.inspect(writer.root, date)
        if found.state != "complete" or found.summary is None:
            continue
        entry = decide(writer.root, date, found.summary, champion, gates, score)
        if replay:
            entry["replay"] = True
        written.append(writer.append(entry))
        champion = entry["champion"]
    return written


def decide_pending(root: partition.StrPath, before: dt.date | None = None) -> list[dict[str, Any]]:
    """Decide every complete date newer than the last decided one (and older than `before`, when given),
    oldest first; returns the decisions."""
    gates = Gates.configured()
    root = partition.location(root)
    if not partition.is_object(root) and not root.is_dir():
        return []
    with store.locked(root) as writer:
        assert writer is not None
        ledger = writer.ledger()
        cursor = ledger.last_decided
        dates = [
            d
            for d in partition.dates_present(root)
            if (cursor is None or d.isoformat() > cursor) and (before is None or d < before)
        ]
        return _decide_from(writer, dates, ledger.champion, gates)


def replay(root: partition.StrPath, start: dt.date) -> list[dict[str, Any]]:
    """Decide again every complete date from `start` on, starting from the champion the history had before
    `start` (the last decision, automatic or manual, of an earlier date)."""
    gates = Gates.configured()
    root = partition.location(root)
    with store.locked(root) as writer:
        assert writer is not None
        earlier = [e for e in writer.ledger().entries if e["date"] < start.isoformat()]
        champion = earlier[-1]["champion"] if earlier else None
        dates = [d for d in partition.dates_present(root) if d >= start]
        return _decide_from(writer, dates, champion, gates, replay=True)


def override(root: partition.StrPath, date: dt.date, model: str, reason: str) -> dict[str, Any]:
    """Make `model` of `date` the champion by hand, recorded with the reason and how it and the champion
    it replaces score on the date's test split."""
    root = partition.location(root)
    with store.locked(root) as writer:
        assert writer is not None
        before = writer.ledger().champion
        chosen = model_record(date, _complete_summary(root, date), model)
        rows = test_rows(root, date.isoformat(), chosen["settings"])
        score = Scorer(root)
        scores = {"challenger": score.on_own_split(chosen), "champion": None, "rows": int(len(rows))}
        if before is not None:
            try:
                scores["champion"] = score(before, rows)
            except ModelUnusable:
                pass
        entry = {
            "time": _now(),
            "date": date.isoformat(),
            "decision": "overridden",
            "reason": reason,
            "challenger": {key: chosen[key] for key in ("model", "digest", "accuracy")},
            "scores": scores,
            "champion": _since(chosen),
        }
        return writer.append(entry)
