"""The Prometheus metrics of irisflow, in one registry, and how run reports update them.

Names follow Prometheus conventions: the `irisflow_` prefix, base units (seconds, ratios), `_total`
counters. No metric has a per-date label: dates are unbounded, so the partition date is a gauge value.
"""
import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from . import __version__

disable_created_metrics()  # the *_created series only double the scrape for no alert or panel
REGISTRY = CollectorRegistry()

BUILD_INFO = Gauge("irisflow_build_info", "Always 1; labels tell the running version.",
                   ["version", "python", "luigi"], registry=REGISTRY)
PIPELINE_RUNS = Counter("irisflow_pipeline_runs_total",
                        "Date pipelines run, by outcome (success, failure).", ["outcome"], registry=REGISTRY)
RUN_DURATION = Histogram("irisflow_run_duration_seconds",
                         "Wall time of one run (a daemon tick, `run` or `backfill`) over all its dates.",
                         buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=REGISTRY)
LAST_RUN_SUCCESS = Gauge("irisflow_last_run_success",
                         "1 if every date of the last run succeeded, 0 if any failed.", registry=REGISTRY)
TASK_DURATION = Histogram("irisflow_task_duration_seconds", "Run time of a Luigi task, by task family.",
                          ["task_family"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                          registry=REGISTRY)
TASK_FAILURES = Counter("irisflow_task_failures_total", "Luigi task failures, by task family.",
                        ["task_family"], registry=REGISTRY)
LAST_SUCCESS = Gauge("irisflow_last_success_timestamp_seconds",
                     "Unix time when a date pipeline last completed successfully.", registry=REGISTRY)
LAST_PARTITION = Gauge("irisflow_last_completed_partition_timestamp_seconds",
                       "The newest completed partition date, as Unix time of its midnight UTC.",
                       registry=REGISTRY)
ROWS_VALIDATED = Counter("irisflow_rows_validated_total", "Input rows that passed validation.",
                         registry=REGISTRY)
ROWS_REJECTED = Counter("irisflow_rows_rejected_total",
                        "Input rows that failed validation (dropped or in a rejected file).", registry=REGISTRY)
VALIDATION_FAILURES = Counter("irisflow_validation_failures_total",
                              "Failed validation checks, by check name.", ["check"], registry=REGISTRY)
MODEL_ACCURACY = Gauge("irisflow_model_accuracy_ratio",
                       "Test accuracy of each model on the latest completed date.", ["model"],
                       registry=REGISTRY)
CATCHUP_MISSING = Gauge("irisflow_catchup_missing_dates",
                        "Dates in the catch-up window that are not complete.", registry=REGISTRY)
NEXT_RUN = Gauge("irisflow_next_run_timestamp_seconds", "Unix time of the next scheduled run.",
                 registry=REGISTRY)
EMAILS_SENT = Counter("irisflow_emails_sent_total", "Notification emails handed to the mail server.",
                      registry=REGISTRY)
EMAIL_FAILURES = Counter("irisflow_email_failures_total", "Notification emails that could not be sent.",
                         registry=REGISTRY)
SCHEDULER_ERRORS = Counter("irisflow_scheduler_errors_total",
                           "Runs that could not reach the central Luigi scheduler.", registry=REGISTRY)


def _init():
    import luigi

    BUILD_INFO.labels(__version__, platform.python_version(), luigi.__version__).set(1)
    for outcome in ("success", "failure"):
        PIPELINE_RUNS.labels(outcome)


_init()
