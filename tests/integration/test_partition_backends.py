"""The partition contract on both backends: a local disk and object storage (a real SeaweedFS)."""
import datetime as dt

from conftest import PartitionFiles
from service.runner import run_dates
from service.state import configured
from tasks import partition

DAY = partition.parse_date("2026-11-24")


def test_a_date_is_built_whole_and_a_second_run_changes_nothing(backend_config):
    root = backend_config.output_root
    assert [o.status for o in run_dates([DAY]).outcomes] == ["success"]
    assert partition.is_complete(root, DAY, verify=True)
    assert str(configured().of(DAY).state) == "complete"
    files = PartitionFiles(root, DAY)
    before = files.read_all()
    assert "summary.json" in before and any(name.endswith("model.joblib") for name in before)
    assert [o.status for o in run_dates([DAY]).outcomes] == ["skipped"]
    assert files.read_all() == before


def test_dates_inspected_together_read_as_each_date_inspected_alone(backend_config):
    # On a store a run of dates is listed together (partition.inspect_many): the run's first and last
    # dates, dates missing inside it and damaged ones must read as they do asked one by one, and the dates
    # just outside the run (which a store may list in the same pages) must not leak into it.
    root = backend_config.output_root
    days = [DAY + dt.timedelta(days=offset) for offset in range(-1, 6)]
    assert {o.status for o in run_dates([days[0], days[1], days[3], days[4], days[5], days[6]]).outcomes} == {
        "success"}
    files = PartitionFiles(root, days[4])
    files.delete(files.match("models/*/metrics.json"))
    asked = days[1:6]  # days[0] and days[6] are complete, just outside
    together = partition.inspect_many(root, asked)
    alone = [partition.inspect(root, day) for day in asked]
    assert [(found.state, found.problems) for found in together] == [(found.state, found.problems) for found in alone]
    assert [found.state for found in together] == ["complete", "missing", "complete", "incomplete", "complete"]
    assert partition.incomplete_dates(root, asked) == [days[2], days[4]]
