"""Every page, chart and `report` renders for every state a date can be in, whatever its files hold: a file
rejected while being read (no row counts), a date failed before Validate, a summary of the wrong shape, and
reports (validation, drift, metrics) damaged on disk."""
import datetime as dt
import json

from conftest import IRIS_CSV, write_input
from service.view import configured_view, make_app
from tasks import partition

DAYS = [dt.date(2026, 4, 1) + dt.timedelta(days=n) for n in range(6)]


def _get(app, path, query=""):
    answer = {}
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query},
                        lambda status, headers: answer.update(status=status)))
    return answer["status"], body


def test_pages_charts_and_report_render_whatever_a_date_holds(irisflow_config, cli, tmp_path):
    incoming = tmp_path / "in"
    irisflow_config.set("iris", source=f"{incoming}/{{date}}.csv", models='["knn"]')
    write_input(incoming, DAYS[0])
    write_input(incoming, DAYS[1])
    (incoming / f"{DAYS[2]}.csv").write_text(IRIS_CSV.read_text().replace(",", ";"))  # refused while read
    (incoming / f"{DAYS[3]}.csv").symlink_to(IRIS_CSV)  # refused at Extract, before Validate
    write_input(incoming, DAYS[4])
    # DAYS[5]: no input at all (missing_input, in IrisData)
    cli("backfill", "--start", str(DAYS[0]), "--end", str(DAYS[-1]))
    root = irisflow_config.output_root
    (partition.partition_dir(root, DAYS[1]) / partition.SUMMARY).write_text(
        json.dumps({"date": str(DAYS[1]), "models": {"knn": "not metrics"}, "best_model": 3})
    )
    for name, content in (("validation.json", '{"rows": "many", "failures": [1, {"examples": "x"}]}'),
                          ("drift.json", '{"features": {"x": {"psi": "high"}}, "species": {"shares": 1}}')):
        (partition.partition_dir(root, DAYS[4]) / name).write_text(content)
    for metrics in partition.partition_dir(root, DAYS[4]).glob("models/*/metrics.json"):
        metrics.write_text('{"accuracy": "best", "confusion_matrix": [[1], 2]}')
    failed = partition.failed_dir(root, DAYS[2]) / "validation.json"
    assert "rows" not in json.loads(failed.read_text())  # rejected while being read: no row counts

    app = make_app(configured_view(), lambda environ, start: [])
    pages = [("/", ""), ("/", "month=2026-04"), ("/", f"start={DAYS[0]}&end={DAYS[-1]}"),
             ("/trends", f"start={DAYS[0]}&end={DAYS[-1]}"),
             *((f"/charts/{name}.svg", f"start={DAYS[0]}&end={DAYS[-1]}") for name in ("accuracy", "rejected", "drift")),
             *((f"/dates/{day}", "") for day in DAYS)]
    for path, query in pages:
        status, body = _get(app, path, query)
        assert status.startswith("200"), (path, query, status, body[:300])
    status, page = _get(app, f"/dates/{DAYS[2]}")
    assert b"refused while being read" in page and b"delimiter" in page

    out = tmp_path / "report"
    result = cli("report", "--start", str(DAYS[0]), "--end", str(DAYS[-1]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert all((out / f"{day}.html").stat().st_size > 0 for day in DAYS)
