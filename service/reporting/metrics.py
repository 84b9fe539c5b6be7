"""The Prometheus metrics of irisflow, in one registry, and how run reports update them.

Names follow Prometheus conventions: the `irisflow_` prefix, base units (seconds, ratios), `_total`
counters. No metric has a per-date label: dates are unbounded, so the partition date is a gauge value.
The daemon serves the registry on /metrics; one-shot CLI runs hand it over as a node_exporter textfile
or push it to a Pushgateway (`export`), as batch jobs do.
"""

import datetime as dt
import math
import platform
import socket
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    push_to_gateway,
    write_to_textfile,
)

from tasks import partition
from tasks.quality import read_drift

from .. import __version__

disable_created_metrics()  # the *_created series only double the scrape for no alert or panel
REGISTRY = CollectorRegistry()

BUILD_INFO = Gauge(
    "irisflow_build_info",
    "Always 1; labels tell the running version.",
    ["version", "python", "luigi"],
    registry=REGISTRY,
)
PIPELINE_RUNS = Counter(
    "irisflow_pipeline_runs_total", "Date pipelines run, by outcome (success, failure).", ["outcome"], registry=REGISTRY
)
RUN_DURATION = Histogram(
    "irisflow_run_duration_seconds",
    "Wall time of one run (a daemon tick, `run` or `backfill`) over all its dates.",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
LAST_RUN_SUCCESS = Gauge(
    "irisflow_last_run_success", "1 if every date of the last run succeeded, 0 if any failed.", registry=REGISTRY
)
TASK_DURATION = Histogram(
    "irisflow_task_duration_seconds",
    "Run time of a Luigi task, by task family.",
    ["task_family"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
TASK_FAILURES = Counter(
    "irisflow_task_failures_total", "Luigi task failures, by task family.", ["task_family"], registry=REGISTRY
)
LAST_SUCCESS = Gauge(
    "irisflow_last_success_timestamp_seconds",
    "Unix time when a date pipeline last completed successfully.",
    registry=REGISTRY,
)
LAST_PARTITION_NAME = "irisflow_last_completed_partition_timestamp_seconds"
LAST_PARTITION = Gauge(
    LAST_PARTITION_NAME, "The newest completed partition date, as Unix time of its midnight UTC.", registry=REGISTRY
)
LAST_FAILED_PARTITION = Gauge(
    "irisflow_last_failed_partition_timestamp_seconds",
    "The newest date that failed in the last run, as Unix time of its midnight UTC (0 if none failed).",
    registry=REGISTRY,
)
ROWS_VALIDATED = Counter("irisflow_rows_validated_total", "Input rows that passed validation.", registry=REGISTRY)
ROWS_REJECTED = Counter(
    "irisflow_rows_rejected_total",
    "Input rows that failed validation (dropped or in a rejected file).",
    registry=REGISTRY,
)
VALIDATION_FAILURES = Counter(
    "irisflow_validation_failures_total", "Failed validation checks, by check name.", ["check"], registry=REGISTRY
)
MODEL_ACCURACY = Gauge(
    "irisflow_model_accuracy_ratio",
    "Test accuracy of each model on the latest completed date.",
    ["model"],
    registry=REGISTRY,
)
BEST_MODEL_ACCURACY = Gauge(
    "irisflow_best_model_accuracy_ratio",
    "Test accuracy of the best model of the latest completed date.",
    registry=REGISTRY,
)
BEST_MODEL = Gauge(
    "irisflow_best_model_info",
    "Always 1; the label names the best model of the latest completed date.",
    ["model"],
    registry=REGISTRY,
)
FEATURE_DRIFT_PSI = Gauge(
    "irisflow_feature_drift_psi",
    "Population stability index of each feature of the latest completed date against its "
    "reference (0.1 moderate, 0.25 significant by default).",
    ["feature"],
    registry=REGISTRY,
)
FEATURE_DRIFT_KS = Gauge(
    "irisflow_feature_drift_ks",
    "Two-sample Kolmogorov-Smirnov statistic of each feature of the latest completed date against its reference.",
    ["feature"],
    registry=REGISTRY,
)
DRIFT_DETECTED = Gauge(
    "irisflow_drift_detected",
    "Whether the latest completed date drifted from its reference: 1 yes, 0 no, -1 no verdict "
    "(too little reference history).",
    registry=REGISTRY,
)
CATCHUP_MISSING = Gauge(
    "irisflow_catchup_missing_dates", "Dates in the catch-up window that are not complete.", registry=REGISTRY
)
WINDOW_DATES = Gauge(
    "irisflow_window_dates",
    "Dates in the catch-up window by state (service.state: complete, stale, running, waiting, failed, ...).",
    ["state"],
    registry=REGISTRY,
)
NEXT_RUN = Gauge("irisflow_next_run_timestamp_seconds", "Unix time of the next scheduled run.", registry=REGISTRY)
EMAILS_SENT = Counter("irisflow_emails_sent_total", "Notification emails handed to the mail server.", registry=REGISTRY)
EMAIL_FAILURES = Counter(
    "irisflow_email_failures_total", "Notification emails that could not be sent.", registry=REGISTRY
)
SCHEDULER_ERRORS = Counter(
    "irisflow_scheduler_errors_total", "Runs that could not reach the central Luigi scheduler.", registry=REGISTRY
)
CHAMPION_DECISIONS = Counter(
    "irisflow_champion_decisions_total",
    "Champion decisions, by decision (promoted, kept, blocked, overridden by hand).",
    ["decision"],
    registry=REGISTRY,
)
CHAMPION_ACCURACY = Gauge(
    "irisflow_champion_accuracy",
    "Test accuracy of the champion (the model `irisflow predict` uses) on its own date's test split; NaN: none yet.",
    registry=REGISTRY,
)
CHAMPION_AGE = Gauge(
    "irisflow_champion_age_seconds",
    "Seconds since midnight UTC of the champion's date (how old the data it learnt from is); NaN: none yet.",
    registry=REGISTRY,
)
CHAMPION_MAX_AGE = Gauge(
    "irisflow_champion_max_age_seconds",
    "[champion] max_age: the champion's age from which IrisflowChampionOld fires.",
    registry=REGISTRY,
)


PUSH_JOB = "irisflow_batch"  # the Pushgateway job of one-shot runs; the daemon is scraped as job "irisflow"
UNREADABLE_CHECK = "readable_csv"  # the check a file fails when it cannot be read as a CSV at all


def record(report, now=None):
    """Count one run (a daemon pass, `run` or `backfill`) from its RunReport; dates skipped or never
    started (an interrupted backfill) count nothing."""
    ran = [o for o in report.outcomes if o.status in ("success", "failure")]
    # The gauges move before the counters, so no scrape sees a new failure counted but the run still "ok".
    if ran:
        LAST_RUN_SUCCESS.set(0 if any(o.status == "failure" for o in ran) else 1)
        failed = max((o.date for o in ran if o.status == "failure"), default=None)
        LAST_FAILED_PARTITION.set(_midnight(failed) if failed else 0)
    if any(o.status == "success" for o in ran):
        LAST_SUCCESS.set(time.time() if now is None else now)
    for outcome in ran:
        PIPELINE_RUNS.labels(outcome.status).inc()
        for family, seconds, _ in outcome.tasks:
            TASK_DURATION.labels(family).observe(seconds)
        if outcome.status == "failure" and outcome.step and outcome.reason != "missing_input":
            TASK_FAILURES.labels(outcome.step).inc()
        if outcome.validation:
            _record_validation(outcome.validation)
    if ran:
        RUN_DURATION.observe(report.seconds)
    if any(o.reason == "scheduler" for o in ran):
        SCHEDULER_ERRORS.inc()
    for decision in report.decisions:
        CHAMPION_DECISIONS.labels(decision["decision"]).inc()
    if report.decisions:
        from tasks.config import iris

        record_champion(iris().output_root, now)
    newest = max((o for o in ran if o.accuracy), key=lambda o: o.date, default=None)
    if newest is not None:
        from tasks.config import iris

        record_partition(iris().output_root, newest.date)
    record_mails(report.emails_sent, report.email_failures)


def _record_validation(report):
    rows, valid = report.get("rows") or 0, report.get("valid_rows") or 0
    ROWS_VALIDATED.inc(valid)
    ROWS_REJECTED.inc(rows - valid)
    checks = [entry["check"] for entry in report.get("failures", []) + report.get("dropped", [])]
    if not report.get("passed", True) and not checks:
        checks = [UNREADABLE_CHECK]
    for check in checks:
        VALIDATION_FAILURES.labels(check).inc()


def record_window(states):
    """The catch-up window's dates by state (`service.state.DateState`s), every state present, 0 or more."""
    from ..state import SETTLED, State

    for state in State:
        WINDOW_DATES.labels(str(state)).set(sum(found.state == state for found in states))
    CATCHUP_MISSING.set(sum(found.state not in SETTLED for found in states))


def record_partition(root, date):
    """The newest complete date's models, best model and drift, read from its partition, unless a newer
    date is already recorded. A model or feature no longer in the partition leaves no stale series."""
    stamp = _midnight(date)
    if stamp < REGISTRY.get_sample_value(LAST_PARTITION_NAME):
        return
    summary = partition.read_summary(root, date)
    if summary is None:
        return  # removed or damaged since it completed: the next complete date reports
    LAST_PARTITION.set(stamp)
    for gauge in (MODEL_ACCURACY, BEST_MODEL, FEATURE_DRIFT_PSI, FEATURE_DRIFT_KS):
        gauge.clear()
    for model, metrics in summary["models"].items():
        MODEL_ACCURACY.labels(model).set(metrics["accuracy"])
    BEST_MODEL.labels(summary["best_model"]).set(1)
    BEST_MODEL_ACCURACY.set(summary["best_accuracy"])
    drift = read_drift(root, date) or {}
    verdict = drift.get("drift_detected")
    DRIFT_DETECTED.set(int(verdict) if verdict in (True, False) else -1)
    features = drift.get("features") if isinstance(drift.get("features"), dict) else {}
    for feature, score in features.items():
        if isinstance(score, dict) and all(isinstance(score.get(k), (int, float)) for k in ("psi", "ks_statistic")):
            FEATURE_DRIFT_PSI.labels(str(feature)).set(score["psi"])
            FEATURE_DRIFT_KS.labels(str(feature)).set(score["ks_statistic"])


def _midnight(date):
    """A date (YYYY-MM-DD or a date) as the Unix time of its midnight UTC."""
    return dt.datetime.combine(dt.date.fromisoformat(str(date)), dt.time(), dt.UTC).timestamp()


def record_mails(sent, failed):
    EMAILS_SENT.inc(sent)
    EMAIL_FAILURES.inc(failed)


def export(textfile=None, pushgateway=None):
    """Hand the registry over as a batch job does: an atomic textfile and/or a push (OSError if it fails)."""
    if textfile:
        write_to_textfile(str(textfile), REGISTRY)
    if pushgateway:
        push_to_gateway(
            pushgateway, job=PUSH_JOB, registry=REGISTRY, grouping_key={"instance": socket.gethostname()}, timeout=10
        )


def record_champion(root, now=None):
    """The champion's accuracy and age (since midnight UTC of its date) as they are at `now` (Unix time):
    set after each run that decided something and on each of the daemon's ticks, so a run that decided
    nothing changes no sample. NaN while there is no champion."""
    from ..champion.store import read_champion_file

    found = read_champion_file(root) or {}
    try:
        day = dt.date.fromisoformat(found["date"])
        accuracy = float(found["accuracy"])
    except (TypeError, KeyError, ValueError):
        CHAMPION_ACCURACY.set(math.nan)
        CHAMPION_AGE.set(math.nan)
        return
    CHAMPION_ACCURACY.set(accuracy)
    CHAMPION_AGE.set((time.time() if now is None else now) - dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())


def _champion_max_age():
    from ..config import champion

    try:
        return champion().max_age.total_seconds()
    except Exception:  # a bad [champion] is every command's one-line error; a scrape still answers
        return math.nan


def _init():
    import luigi

    BUILD_INFO.labels(__version__, platform.python_version(), luigi.__version__).set(1)
    for outcome in ("success", "failure"):
        PIPELINE_RUNS.labels(outcome)
    DRIFT_DETECTED.set(-1)  # no date judged yet
    from ..champion.store import DECISIONS

    for decision in DECISIONS:
        CHAMPION_DECISIONS.labels(decision)
    CHAMPION_ACCURACY.set(math.nan)  # no champion known yet
    CHAMPION_AGE.set(math.nan)
    CHAMPION_MAX_AGE.set_function(_champion_max_age)


_init()
