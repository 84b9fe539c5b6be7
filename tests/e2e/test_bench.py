"""The benchmark harness works, and a benchmarked backfill writes exactly what a plain run writes."""
import datetime as dt
import io

import pytest

from bench import __main__ as bench_main
from bench import outputs
from bench.harness import Workspace

START = dt.date(2001, 1, 1)


def _backfill_and_reference(tmp_path, dates, **service):
    """A --workers 2 backfill and the plain reference loop over the same dates, in two workspaces."""
    end = str(START + dt.timedelta(days=dates - 1))
    backfill = Workspace(tmp_path, "backfill", service=service)
    backfill.run("-m", "service", "backfill", "--start", str(START), "--end", end, "--workers", "2")
    reference = Workspace(tmp_path, "reference")
    reference.run("-m", "bench.reference", "--start", str(START), "--end", end)
    return backfill, reference


@pytest.mark.slow
def test_a_backfill_over_two_processes_writes_the_reference_loops_files_byte_for_byte(tmp_path):
    # chunk_size 2 over 5 dates: this process and a helper process both build.
    backfill, reference = _backfill_and_reference(tmp_path, 5, chunk_size=2)
    compared, differing = outputs.differences(backfill.output_root, reference.output_root)
    assert differing == []
    assert len(compared) == 5 * (17 + 9)  # 17 outputs and 9 task receipts a date
    assert sum(name.endswith("model.joblib") for name in compared) == 25


def test_the_comparison_finds_a_changed_and_a_missing_file(tmp_path):
    for side in ("a", "b"):
        part = tmp_path / side / "2001-01-01"
        part.mkdir(parents=True)
        (part / "summary.json").write_text('{"snapshot": "%s/2001-01-01/input.csv"}' % (tmp_path / side))
        (part / "metrics.json").write_text("1")
    assert outputs.differences(tmp_path / "a", tmp_path / "b") == (["2001-01-01/metrics.json",
                                                                    "2001-01-01/summary.json"], [])
    (tmp_path / "b" / "2001-01-01" / "metrics.json").write_text("2")
    (tmp_path / "a" / "2001-01-01" / "extra.csv").write_text("")
    assert outputs.differences(tmp_path / "a", tmp_path / "b")[1] == ["2001-01-01/extra.csv",
                                                                      "2001-01-01/metrics.json"]


@pytest.mark.slow
def test_the_quick_benchmark_prints_every_figure_with_its_goal():
    out = io.StringIO()
    status = bench_main.main(["--quick", "--dates", "4", "--scale-dates", "8", "--repeats", "1",
                              "--scale-out-dates", "3"], out=out)
    text = out.getvalue()
    assert status == 0, text
    lines = text.splitlines()
    for number, goal in (("1", "<= 0.55x"), ("1b", "<= 0.6x"), ("2", "<= 0.5 s"), ("2b", "<= 2 s"),
                         ("3", "<= 1.2x"), ("4a", "<= 300 MB"), ("4b", "< 10 MB"), ("4c", "<= 60 MB"),
                         ("5", "(no goal)"), ("6", "<= 0.25x"), ("7", "<= 2 s"), ("8", "(no goal)"),
                         ("9", "<= 1.1x"), ("10", "<= 0.6x"), ("11", "(no goal)"), ("12", "<= 10%"),
                         ("13", "<= 1.5x"), ("14", "<= 3 s"), ("14b", "(no goal)")):
        assert any(line.startswith(f"{number}. ") and goal in line for line in lines), (number, text)
    assert "byte for byte: yes" in text
    assert "heavy libraries imported: none" in text
    assert "every date complete on the store after it" in text
