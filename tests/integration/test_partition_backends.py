"""The partition contract on both backends: a local disk and object storage (a real SeaweedFS)."""
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
