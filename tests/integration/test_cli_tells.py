"""What a command tells its operator: a refused file says how much of it broke which check, printed commands
name the program as it was invoked, and under systemd every line reaches the journal at its priority."""
import datetime as dt
import os
import subprocess
import sys

from conftest import IRIS_CSV, REPO, write_input

DAY = dt.date(2026, 3, 1)


def _three_bad_rows(path):
    lines = IRIS_CSV.read_text().splitlines()
    for number in (3, 40, 90):
        lines[number] = lines[number].replace(lines[number].split(",")[0], "-1.0", 1)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_refused_file_says_how_many_rows_broke_which_check_and_that_the_whole_file_was_refused(
        irisflow_config, cli, tmp_path):
    bad = _three_bad_rows(tmp_path / "bad.csv")
    result = cli("validate", str(bad))
    assert result.returncode == 1
    headline = result.stdout.splitlines()[0]
    assert "validation REJECTED, the whole file refused: 3 of 150 rows break a check" in headline
    assert "[iris] max_invalid_fraction = 0 allows (0 rows)" in headline
    assert "column 'sepal_length' check 'greater_than(0)' (3 cases" in result.stdout

    irisflow_config.set("iris", source=f"{tmp_path}/{{date}}.csv")
    bad.rename(tmp_path / f"{DAY}.csv")
    assert cli("run", "--date", str(DAY)).returncode == 1
    status = cli("status", "--start", str(DAY), "--end", str(DAY))
    assert "3 of 150 rows break a check" in status.stdout and "0 of 150 rows valid" not in status.stdout


def test_printed_commands_name_the_program_as_it_was_invoked(irisflow_config, tmp_path):
    incoming = tmp_path / "in"
    write_input(incoming, DAY, bad=True)
    irisflow_config.set("iris", source=f"{incoming}/{{date}}.csv")
    irisflow = os.path.join(os.path.dirname(sys.executable), "irisflow")
    for command, shown in (([irisflow], "irisflow"), ([sys.executable, "-m", "service"], "python -m service")):
        result = subprocess.run([*command, "backfill", "--start", str(DAY), "--end", str(DAY)], cwd=REPO,
                                env=irisflow_config.env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 1
        assert f"rerun: {shown} backfill --dates {DAY}" in result.stderr, result.stderr


def test_under_systemd_a_failed_backfill_reaches_the_journal_at_error_priority(irisflow_config, tmp_path):
    incoming = tmp_path / "in"
    for day in (DAY, DAY + dt.timedelta(days=1)):
        write_input(incoming, day, bad=True)
    irisflow_config.set("iris", source=f"{incoming}/{{date}}.csv")
    journal = tmp_path / "journal"
    with open(journal, "w") as stream:  # both streams are the journal's, as systemd connects them
        info = os.fstat(stream.fileno())
        result = subprocess.run(
            [sys.executable, "-m", "service", "backfill", "--start", str(DAY), "--end", str(DAY + dt.timedelta(days=1))],
            cwd=REPO, env=irisflow_config.env(JOURNAL_STREAM=f"{info.st_dev}:{info.st_ino}"),
            stdout=stream, stderr=stream, timeout=300)
    assert result.returncode == 1
    lines = journal.read_text().splitlines()
    errors = [line for line in lines if line.startswith("<3>")]
    assert any("FAILED (validation)" in line for line in errors), lines
    assert any(line.startswith("<3>backfill ") and "2 failed" in line for line in errors), lines
    assert any(line.startswith("<6>") for line in lines), lines  # progress and results at info
    assert all(line[:3] in ("<3>", "<4>", "<6>") for line in lines), lines
