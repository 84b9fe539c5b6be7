"""The partition view in a real browser: Debian's headless Chromium against a real `python -m service serve`.

Chromium comes from Debian's `chromium` package (`make tools`); its own --dump-dom and --screenshot
modes load each page as a user would, with no driver in between.
"""
import datetime as dt
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, free_port, poll, scrape, write_input

SPECIES_CHECK = "isin(('setosa', 'versicolor', 'virginica'))"


def chromium(tmp_path, *args):
    """Run headless Chromium with a throw-away profile; its stdout."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `make tools` installs it from Debian's packages")
    result = subprocess.run([path, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def ran_all(port):
    found = scrape(port) or {}
    return (found.get(("irisflow_pipeline_runs_total", (("outcome", "success"),))) == 2
            and found.get(("irisflow_pipeline_runs_total", (("outcome", "failure"),))) == 1)


@pytest.mark.slow
def test_chromium_finds_the_failed_and_the_drifted_date_and_reads_the_failed_check(irisflow_config, tmp_path):
    import pandas as pd
    from PIL import Image, ImageStat

    today = dt.datetime.now(dt.timezone.utc).date()
    good, drifted, bad = today - dt.timedelta(days=2), today - dt.timedelta(days=1), today
    incoming = tmp_path / "incoming"
    write_input(incoming, good)
    write_input(incoming, bad, bad=True)
    frame = pd.read_csv(REPO / "data" / "iris.csv")
    frame["sepal_width"] += 3 * frame["sepal_width"].std()
    frame.round(1).to_csv(incoming / f"{drifted}.csv", index=False)
    port = free_port()
    irisflow_config.set("iris", source=str(incoming / "{date}.csv"), models='["knn", "svc"]')
    irisflow_config.set("quality", reference=str(REPO / "data" / "iris.csv"))
    irisflow_config.set("service", metrics_port=port, schedule="0 3 1 1 *", catchup_days=3, timezone="UTC")
    with open(tmp_path / "daemon.err", "w") as err:
        daemon = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO, env=irisflow_config.env(),
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        poll("the start-up pass over three dates", lambda: daemon.poll() is None and ran_all(port), timeout=120)
        base = f"http://127.0.0.1:{port}"
        grid = chromium(tmp_path, "--dump-dom", base + "/")
        rows = {date: (state, drift) for date, state, drift in
                re.findall(r'data-date="([\d-]+)" data-state="(\w+)" data-drift="(\w+)"', grid)}
        assert rows[str(bad)][0] == "failed" and rows[str(drifted)] == ("complete", "true")
        assert rows[str(good)] == ("complete", "false")

        failed_link = re.search(rf'<a href="([^"]+)">{bad}</a>', grid).group(1)
        page = chromium(tmp_path, "--dump-dom", base + failed_link)
        check = re.search(r'<tr class="check"><td>(.*?)</td><td>(.*?)</td>', page)
        assert check.groups() == (SPECIES_CHECK, "species")
        assert "line 5: dandelion" in page and f"python -m service run --date {bad}" in page

        drifted_link = re.search(rf'<a href="([^"]+)">{drifted}</a>', grid).group(1)
        assert "DETECTED</strong> in sepal_width" in chromium(tmp_path, "--dump-dom", base + drifted_link)

        shot = tmp_path / "failed-date.png"
        chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", base + failed_link)
        image = Image.open(shot).convert("RGB")
        assert image.size == (1200, 900)
        assert len(image.getcolors(maxcolors=1 << 20)) > 20  # text, the red failed badge, table shading
        assert max(ImageStat.Stat(image).stddev) > 20  # not one flat colour
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=60) == 0, (tmp_path / "daemon.err").read_text()
