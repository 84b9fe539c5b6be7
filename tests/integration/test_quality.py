"""Drift per date: the statistics on known values, and drift.json, the metrics and fail_on_drift on real runs."""
import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest

from conftest import IRIS_CSV
from service.reporting import metrics
from service.runner import run_dates
from tasks import quality

DAY = dt.date(2026, 3, 10)
THRESHOLDS = {"psi_moderate": 0.1, "psi_significant": 0.25, "ks_pvalue": 0.01, "chi2_pvalue": 0.01}


def test_psi_is_zero_for_the_same_sample_and_matches_a_hand_computed_value():
    reference = np.arange(100.0)
    assert quality.psi(reference, reference) == 0.0
    # Two bins split at the median (49.5): shares 0.5/0.5 against 0.2/0.8.
    current = np.array([10.0] * 20 + [90.0] * 80)
    expected = (0.2 - 0.5) * math.log(0.2 / 0.5) + (0.8 - 0.5) * math.log(0.8 / 0.5)
    assert quality.psi(reference, current, bins=2) == pytest.approx(expected)


def test_psi_stays_finite_when_the_day_leaves_the_reference_range():
    value = quality.psi(np.arange(100.0), np.full(50, 1000.0))
    assert math.isfinite(value) and value > 5


def test_ks_and_chi_square_on_known_samples():
    assert quality.ks_test([1, 2, 3, 4], [1, 2, 3, 4]) == (0.0, 1.0)
    statistic, pvalue = quality.ks_test(list(range(50)), list(range(100, 150)))
    assert statistic == 1.0 and pvalue < 1e-20
    classes = ("a", "b", "c")
    assert quality.class_shares(["a", "a", "b", "c"], classes) == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert quality.class_test(["a"] * 30 + ["b"] * 30, ["a"] * 30 + ["b"] * 30, classes) == (0.0, 1.0)
    # 2x2 table [[30, 30], [60, 0]]: chi-square with Yates' correction is 43.35 (scipy's default for 1 dof).
    statistic, pvalue = quality.class_test(["a"] * 30 + ["b"] * 30, ["a"] * 60, classes)
    assert statistic == pytest.approx(((abs(30 - 45) - 0.5) ** 2 / 45 + (abs(30 - 15) - 0.5) ** 2 / 15) * 2)
    assert pvalue < 1e-9


def test_a_class_missing_from_the_day_is_drift_even_on_a_small_sample():
    verdict = quality.species_drift(["a", "b", "c"] * 40, ["a", "b"] * 2, ("a", "b", "c"), THRESHOLDS)
    assert verdict["drift"] and verdict["missing_classes"] == ["c"] and verdict["shares"]["c"] == 0.0


def _iris():
    return pd.read_csv(IRIS_CSV)


def _write(folder, date, frame):
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{date.isoformat()}.csv", index=False)


def _same_distribution(seed):
    """150 rows resampled from the Iris data: the reference's own distribution."""
    return _iris().sample(n=150, replace=True, random_state=seed).reset_index(drop=True)


def _shifted(feature, stds):
    frame = _iris()
    frame[feature] = (frame[feature] + stds * frame[feature].std()).round(1)
    return frame


@pytest.fixture
def pinned(irisflow_config, tmp_path):
    """Days from {tmp_path}/in/{date}.csv judged against the Iris data as the pinned reference; one model."""
    irisflow_config.set("iris", source=str(tmp_path / "in" / "{date}.csv"), models='["decision_tree"]')
    irisflow_config.set("quality", reference=str(IRIS_CSV))
    return tmp_path / "in"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_day_drawn_from_the_reference_distribution_is_not_flagged(pinned, irisflow_config, seed):
    _write(pinned, DAY, _same_distribution(seed))
    assert run_dates([DAY]).outcomes[0].status == "success"
    report = json.loads((irisflow_config.output_root / str(DAY) / "drift.json").read_text())
    assert report["drift_detected"] is False, report
    assert report["reference"]["kind"] == "pinned" and report["reference"]["rows"] == 150
    assert not any(score["drift"] for score in report["features"].values())


def test_a_feature_shifted_by_three_standard_deviations_is_flagged_in_drift_json_summary_and_metrics(
        pinned, irisflow_config):
    _write(pinned, DAY, _shifted("petal_width", 3))
    metrics.LAST_PARTITION.set(0)  # the registry is per process: forget dates other tests completed
    report_of_run = run_dates([DAY])
    assert report_of_run.outcomes[0].status == "success"  # drift alone never fails a date
    part = irisflow_config.output_root / str(DAY)
    report = json.loads((part / "drift.json").read_text())
    assert report["drift_detected"] is True and report["drifted"] == ["petal_width"]
    assert report["features"]["petal_width"]["psi"] > 0.25 and report["features"]["petal_width"]["ks_pvalue"] < 1e-6
    assert report["features"]["sepal_length"]["drift"] is False
    summary = json.loads((part / "summary.json").read_text())
    assert summary["drift_detected"] is True and "drift.json" in summary["manifest"]

    metrics.record(report_of_run)
    sample = metrics.REGISTRY.get_sample_value
    assert sample("irisflow_drift_detected") == 1
    assert sample("irisflow_feature_drift_psi", {"feature": "petal_width"}) == report["features"]["petal_width"]["psi"]
    assert sample("irisflow_feature_drift_ks", {"feature": "sepal_length"}) == 0.0
    assert sample("irisflow_best_model_info", {"model": "decision_tree"}) == 1
    assert sample("irisflow_best_model_accuracy_ratio") == summary["best_accuracy"]


def test_recent_dates_are_the_reference_and_too_little_history_gives_no_verdict(irisflow_config, tmp_path):
    incoming = tmp_path / "in"
    irisflow_config.set("iris", source=str(incoming / "{date}.csv"), models='["decision_tree"]')
    irisflow_config.set("quality", min_reference_dates=3, reference_days=5)
    days = [DAY - dt.timedelta(days=n) for n in range(4, -1, -1)]
    for day in days[:-1]:
        _write(incoming, day, _iris())
    _write(incoming, days[-1], _shifted("sepal_length", 4))
    run_dates(days[:-2])
    run_dates(days[-2:])  # the last date is judged against the four before it
    reports = [json.loads((irisflow_config.output_root / str(day) / "drift.json").read_text()) for day in days]
    assert [r["drift_detected"] for r in reports] == [None, None, None, False, True]
    assert "2 complete dates in the previous 5 days, fewer than [quality] min_reference_dates = 3" in \
        reports[2]["reason"]
    assert reports[-1]["reference"]["dates"] == [str(day) for day in days[:-1]]
    assert reports[-1]["reference"]["rows"] == 600 and reports[-1]["drifted"] == ["sepal_length"]


def test_fail_on_drift_rejects_the_date_naming_the_feature_mails_it_and_keeps_the_report(pinned, irisflow_config,
                                                                                        mailbox, cli):
    irisflow_config.set("quality", fail_on_drift="true")
    _write(pinned, DAY, _shifted("petal_width", 3))
    outcome = run_dates([DAY]).outcomes[0]
    assert (outcome.status, outcome.step, outcome.reason) == ("failure", "Drift", "validation")
    assert "\n" not in outcome.error and "data drift against the pinned reference" in outcome.error
    assert "petal_width (PSI" in outcome.error and "[quality] fail_on_drift = true" in outcome.error
    failed = irisflow_config.output_root / "failed" / str(DAY)
    assert json.loads((failed / "drift.json").read_text())["drifted"] == ["petal_width"]
    assert json.loads((failed / "failure.json").read_text())["step"] == "Drift"
    assert not (irisflow_config.output_root / str(DAY) / "summary.json").exists()
    assert mailbox.messages == []  # run_dates reports; the command that ran it sends the run's one mail
    result = cli("run", "--date", str(DAY))
    assert result.returncode == 1 and "petal_width (PSI" in result.stderr
    message, = mailbox.wait_for(1)
    assert str(DAY) in message["Subject"] and "FAILED" in message["Subject"]
    assert "Drift" in mailbox.text(message) and "petal_width (PSI" in mailbox.text(message)


def test_bad_quality_settings_are_a_one_line_usage_error(irisflow_config, cli):
    irisflow_config.set("quality", reference="/nonexistent/ref.csv", psi_moderate="0.5", psi_significant="0.2")
    result = cli("run", "--date", str(DAY))
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "[quality] reference /nonexistent/ref.csv: no such file" in result.stderr
    assert "psi_moderate <= psi_significant" in result.stderr
