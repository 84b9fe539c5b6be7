"""The CLI as a user meets it: exit statuses, one-line errors, backfill ranges, status, validate, --force."""
import datetime as dt


from tasks import partition


def test_backfill_far_in_the_past_runs_every_date(irisflow_config, cli):
    """Unlike Luigi's RangeDaily (days_back=100, task_limit=50), every one of 400 old dates runs."""
    irisflow_config.set("iris", models='["decision_tree"]')
    start, end = dt.date(2024, 1, 1), dt.date(2024, 1, 1) + dt.timedelta(days=399)
    result = cli("backfill", "--start", start.isoformat(), "--end", end.isoformat(), "--workers", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "400 ran, 0 already complete, 0 failed" in result.stdout
    assert all(partition.is_complete(irisflow_config.output_root, d) for d in partition.date_range(start, end))
    again = cli("backfill", "--start", start.isoformat(), "--end", end.isoformat())
    assert again.returncode == 0 and "0 ran, 400 already complete" in again.stdout


