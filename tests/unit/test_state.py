"""service.state on a clock the test sets: each state of a date from the partition contract, the failure
records, the locks and the Schedule alone, and "today" in the schedule's time zone."""
import datetime as dt
import json

import pytest

from service.schedule import Schedule, build_trigger
from service.state import DateStates, State, today
from tasks import partition

UTC = dt.timezone.utc
DAY = dt.date(2026, 3, 10)
SETTINGS = {"models": ["knn"], "features": ["petal_length"], "hyperparameters": {"knn": {}}, "test_size": 0.3,
            "seed": 42}


def states(root, now, zone="UTC"):
    schedule = Schedule(build_trigger("0 6 * * *", zone), catchup_days=7, data_deadline=dt.timedelta(hours=4))
    return DateStates(root, SETTINGS, schedule, lambda: now)


def seal(root, date, settings=SETTINGS):
    """A complete partition: one file and the summary that seals it."""
    part = partition.partition_dir(root, date)
    part.mkdir(parents=True)
    (part / "input.csv").write_text("a,b\n1,2\n")
    summary = {"date": date.isoformat(), "models": {"knn": {"accuracy": 0.9, "macro_f1": 0.9}}, "best_model": "knn",
               "best_accuracy": 0.9, "settings": settings,
               "manifest": {"input.csv": partition.file_record(part / "input.csv")}}
    (part / partition.SUMMARY).write_text(json.dumps(summary))
    return part


def at(date, hour, minute=0):
    return dt.datetime.combine(date, dt.time(hour, minute), UTC)


def test_nothing_there_is_not_due_until_its_scheduled_time_then_missing(tmp_path):
    assert states(tmp_path, at(DAY, 5, 59)).of(DAY).state == State.NOT_DUE
    assert states(tmp_path, at(DAY, 6)).of(DAY).state == State.MISSING
    assert states(tmp_path, at(DAY, 5)).of(DAY + dt.timedelta(days=1)).until == at(DAY + dt.timedelta(days=1), 6)


def test_missing_input_is_waited_for_until_the_deadline_then_failed(tmp_path):
    partition.record_failure(tmp_path, DAY, {"reason": "missing_input", "step": "IrisData", "error": "input not found"})
    waiting = states(tmp_path, at(DAY, 9, 59)).of(DAY)
    assert waiting.state == State.WAITING and waiting.until == at(DAY, 10)
    assert "looked for until 2026-03-10 10:00 UTC" in waiting.detail
    failed = states(tmp_path, at(DAY, 10)).of(DAY)
    assert failed.state == State.FAILED and failed.detail == "missing_input in IrisData: input not found"


def test_a_rejected_file_is_failed_at_once(tmp_path):
    partition.record_failure(tmp_path, DAY, {"reason": "validation", "step": "Validate", "error": "f.csv: bad\nmore"})
    found = states(tmp_path, at(DAY, 7)).of(DAY)
    assert (found.state, found.detail) == (State.FAILED, "validation in Validate: f.csv: bad")


def test_complete_stale_damaged_incomplete(tmp_path):
    part = seal(tmp_path, DAY)
    assert states(tmp_path, at(DAY, 7)).of(DAY).state == State.COMPLETE
    stale = states(tmp_path, at(DAY, 7))
    stale.wanted = {**SETTINGS, "models": ["knn", "svc"]}
    assert stale.of(DAY).state == State.STALE and stale.of(DAY).problems == ["models: knn -> knn, svc"]
    (part / "input.csv").write_text("a,b\n1,3\n")  # same size, other bytes: only a verified look sees it
    assert states(tmp_path, at(DAY, 7)).of(DAY).state == State.COMPLETE
    assert states(tmp_path, at(DAY, 7)).of(DAY, verify=True).state == State.DAMAGED
    (part / "input.csv").unlink()
    assert states(tmp_path, at(DAY, 7)).of(DAY).state == State.INCOMPLETE


def test_a_date_someone_builds_is_running_whatever_its_files_say(tmp_path):
    seal(tmp_path, DAY)
    with partition.building(tmp_path, [DAY]):
        assert states(tmp_path, at(DAY, 7)).of(DAY).state == State.RUNNING
    assert states(tmp_path, at(DAY, 7)).of(DAY).state == State.COMPLETE
    with partition.task_lock(tmp_path, DAY, "Extract-0123456789.json"):
        assert states(tmp_path, at(DAY, 7)).of(DAY).state == State.RUNNING


@pytest.mark.parametrize("zone, date", [("UTC", DAY), ("Pacific/Kiritimati", DAY + dt.timedelta(days=1)),
                                        ("America/Los_Angeles", DAY)])
def test_today_is_the_date_in_the_schedule_time_zone(irisflow_config, zone, date):
    now = at(DAY, 12)
    irisflow_config.set("service", timezone=zone)
    assert today(now) == date
    assert states(irisflow_config.output_root, now, zone).today() == date
