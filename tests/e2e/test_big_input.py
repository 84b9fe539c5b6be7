"""Every kind of bad input is rejected with a message naming file, column and check (exit 1, nothing
downstream for that date, the rejected input quarantined), every harmless variation is accepted after
normalising, and the other dates of the same backfill still complete."""
import resource
import subprocess
import sys

import pytest

from conftest import IRIS_CSV, REPO

HEADER, *ROWS = IRIS_CSV.read_text().splitlines()


def _million_rows(path, row):
    with open(path, "w") as handle:
        handle.write(HEADER + "\n")
        for i in range(1_000_000):
            handle.write((row or ROWS[i % len(ROWS)]) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("row, status, seconds, megabytes", [
    (None, 0, 60, 600),  # a good million rows
    ("-1,x,1,1,rose", 1, 120, 800),  # a million rows that each fail several checks
])
def test_a_million_rows_validate_in_bounded_time_and_memory(irisflow_config, tmp_path, row, status, seconds,
                                                           megabytes):
    path = tmp_path / "big.csv"
    _million_rows(path, row)
    measure = ("import resource, sys\nfrom service.cli import main\nstatus = main(sys.argv[1:])\n"
               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(status)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    result = subprocess.run([sys.executable, "-c", measure, "validate", str(path)], cwd=REPO,
                            env=irisflow_config.env(), capture_output=True, text=True, timeout=seconds * 3)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before
    assert result.returncode == status, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1000000 rows" in result.stdout
    peak_mb = int(result.stderr.strip().splitlines()[-1]) / 1024
    assert peak_mb < megabytes, f"peak memory {peak_mb:.0f} MB"
    assert cpu < seconds, f"{cpu:.1f} s of CPU"


