"""The partition view as a WSGI app called in-process, and `report` writing it as static files."""
import datetime as dt
import io
import json
import subprocess
import sys

import pytest
from prometheus_client import make_wsgi_app

from conftest import REPO, write_input
from service.reporting import metrics
from service.runner import run_dates
from service.view import configured_view, make_app

GOOD, DRIFTED, BAD = dt.date(2026, 2, 1), dt.date(2026, 2, 2), dt.date(2026, 2, 3)
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def tree(irisflow_config, tmp_path):
    """Three dates: complete, drifted (petal_length far off) and rejected (a species with markup in it)."""
    import pandas as pd

    incoming = tmp_path / "in"
    irisflow_config.set("iris", source=str(incoming / "{date}.csv"), models='["knn", "decision_tree"]')
    irisflow_config.set("quality", reference=str(REPO / "data" / "iris.csv"))
    write_input(incoming, GOOD)
    frame = pd.read_csv(REPO / "data" / "iris.csv")
    frame["petal_length"] += 4
    frame.to_csv(incoming / f"{DRIFTED}.csv", index=False)
    path = write_input(incoming, BAD)
    path.write_text(path.read_text().replace("setosa", HOSTILE, 1))
    run_dates([GOOD, DRIFTED, BAD])
    return irisflow_config


def get(path, method="GET"):
    """(status, headers, body text) of one request to the daemon's app."""
    path, _, query = path.partition("?")
    app = make_app(configured_view(), make_wsgi_app(metrics.REGISTRY))
    answer = {}
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "wsgi.input": io.BytesIO(),
               "SERVER_NAME": "test", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}
    body = b"".join(app(environ, lambda status, headers: answer.update(status=status, headers=dict(headers))))
    return int(answer["status"].split()[0]), answer["headers"], body.decode(errors="replace")


def test_the_grid_colours_each_date_and_step_and_counts_them(tree):
    status, headers, page = get("/?month=2026-02")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "28 dates:" in page and ">2 complete<" in page and ">1 failed<" in page and ">25 missing<" in page
    assert f'data-date="{DRIFTED}" data-state="complete" data-drift="true"' in page
    assert f'data-date="{GOOD}" data-state="complete" data-drift="false"' in page
    assert f'data-date="{BAD}" data-state="failed"' in page and 'class="cell failed" title="Validate: failed"' in page
    assert f'href="/dates/{BAD}"' in page and 'href="/?month=2026-03"' in page and 'href="/?year=2025"' in page
    assert HOSTILE not in page  # the failure line names the file only; nothing from the data unescaped anyway
    assert get("/")[2] == page  # the default is the newest date's month
    assert ">365 dates:" in get("/?year=2026")[2].replace("<p id=\"counts\">", ">")


def test_a_configuration_change_makes_complete_dates_stale(tree):
    tree.set("iris", models='["knn"]')
    page = get("/?start=2026-02-01&end=2026-02-03")[2]
    assert ">2 stale<" in page and "built with other settings: models: decision_tree, knn -&gt; knn" in page


def test_the_date_page_shows_the_failed_check_its_sample_row_and_the_rerun_command_escaped(tree):
    status, _, page = get(f"/dates/{BAD}")
    assert status == 200
    assert "isin((&#39;setosa&#39;, &#39;versicolor&#39;, &#39;virginica&#39;))" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and HOSTILE not in page
    assert "line 2: " in page and "5.1,3.5,1.4,0.2,&lt;script&gt;" in page  # the input's own line
    assert f"python -m service run --date {BAD}</code>" in page
    assert f'href="/files/failed/{BAD}/failure.json"' in page


def test_the_date_page_shows_models_with_confusion_matrices_and_the_drift_table(tree):
    page = get(f"/dates/{DRIFTED}")[2]
    assert "DETECTED</strong> in petal_length" in page and "the pinned reference" in page
    assert page.count('class="confusion"') == 2 and "macro F1" in page
    assert f"python -m service run --date {DRIFTED} --force" in page
    assert f'href="/files/{DRIFTED}/drift.json"' in page


def test_files_are_served_read_only_and_only_from_the_dates_own_folders(tree, tmp_path):
    status, headers, body = get(f"/files/{GOOD}/summary.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["date"] == str(GOOD)
    model = next((tree.output_root / str(GOOD)).glob("models/knn-*/model.joblib"))
    status, headers, _ = get(f"/files/{GOOD}/{model.relative_to(tree.output_root / str(GOOD))}")
    assert status == 200 and headers["Content-Disposition"].startswith("attachment")
    (tmp_path / "secret.txt").write_text("secret")
    (tree.output_root / str(GOOD) / "link.txt").symlink_to(tmp_path / "secret.txt")
    for path in (f"/files/{GOOD}/../../secret.txt", f"/files/{GOOD}/link.txt", f"/files/{GOOD}/%2e%2e/x",
                 f"/files/{GOOD}//etc/passwd", "/files/../luigi.cfg", f"/files/failed/{GOOD}/failure.json",
                 f"/files/{GOOD}/models"):
        assert get(path)[0] == 404, path
    assert get(f"/dates/{GOOD}", method="POST")[0] == 405
    assert get("/dates/2026-02-30")[0] == 404 and get("/?start=2026-02-05&end=2026-02-01")[0] == 400


def test_trend_charts_are_svg_from_the_dates_in_range(tree):
    page = get(f"/trends?start=2026-01-20&end={BAD}")[2]
    assert f'src="/charts/drift.svg?start=2026-01-20&amp;end={BAD}"' in page
    status, headers, svg = get(f"/charts/accuracy.svg?start=2026-01-20&end={BAD}")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml" and svg.lstrip().startswith("<?xml")
    assert "<path" in svg and "<script" not in svg
    assert get("/charts/other.svg")[0] == 404


def test_metrics_are_served_on_the_same_app(tree):
    status, _, text = get("/metrics")
    assert status == 200 and "irisflow_drift_detected" in text


def test_report_writes_the_same_pages_as_static_files(tree, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "service", "report", "--start", "2026-01-31", "--end", str(BAD),
                             "--out", str(out)], cwd=REPO, env=tree.env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["2026-01-31.html", f"{GOOD}.html", f"{DRIFTED}.html",
                                                    f"{BAD}.html", "champion.html", "charts", "index.html", "trends.html"]
    index = (out / "index.html").read_text()
    assert f'href="{BAD}.html"' in index and ">1 failed<" in index and "/?month=" not in index
    assert (tree.output_root / "failed" / str(BAD) / "failure.json").resolve().as_uri() in (out / f"{BAD}.html").read_text()
    assert all((out / "charts" / f"{name}.svg").read_bytes().startswith(b"<?xml") for name in ("accuracy", "rejected", "drift"))
    bad = subprocess.run([sys.executable, "-m", "service", "report", "--start", str(BAD), "--end", str(GOOD),
                          "--out", str(out)], cwd=REPO, env=tree.env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("irisflow: error: start 2026-02-03 is after end")
