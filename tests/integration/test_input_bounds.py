"""A day's input is bounded before it is parsed: a file too wide, too long or with too long a cell is
refused within seconds and in no more memory than a normal day takes; only regular files whose content is
theirs are read (no hard link, no FIFO); a quarantined copy is no more readable than its source."""

import datetime as dt
import os
import re
import stat
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import IRIS_CSV, REPO, write_input
from hypothesis import HealthCheck, given, settings, strategies as st

from service.cli import main

DAY = dt.date(2026, 1, 1)
HEADER, *ROWS = IRIS_CSV.read_bytes().splitlines(keepends=True)


def measured(config, *args, timeout=60):
    """`python -m service ARGS` as a real subprocess: (exit status, stdout, stderr, seconds, peak RSS in KiB).

    os.wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would be the largest of every child the test
    process ever waited for). A child still running at `timeout` is killed, and the test fails."""
    started = time.monotonic()
    with open(os.devnull, "rb") as stdin:
        child = subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            cwd=REPO,
            env=config.env(),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    killer = threading.Timer(timeout, child.kill)
    killer.start()
    try:
        out, err = _drain(child)
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        killer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    assert seconds < timeout, f"{args} still running after {timeout} s"
    return child.returncode, out, err, seconds, usage.ru_maxrss


def _drain(child):
    """Both pipes read to their end (threads, so neither can fill up and stall the child); no wait."""
    chunks = {"out": [], "err": []}
    readers = [
        threading.Thread(target=lambda pipe=pipe, key=key: chunks[key].append(pipe.read()))
        for key, pipe in (("out", child.stdout), ("err", child.stderr))
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    child.stdout.close()
    child.stderr.close()
    return b"".join(chunks["out"]).decode(errors="replace"), b"".join(chunks["err"]).decode(errors="replace")


@pytest.fixture
def incoming(irisflow_config, tmp_path):
    """The data folder; `[iris] source` is {incoming}/{date}.csv."""
    folder = tmp_path / "in"
    folder.mkdir()
    irisflow_config.set("iris", source=folder / "{date}.csv")
    return folder


def test_a_million_column_header_is_refused_in_seconds_and_in_a_normal_days_memory(irisflow_config, incoming):
    write_input(incoming, DAY)
    wide = incoming / "2026-01-02.csv"
    wide.write_bytes(b",".join(b"c%d" % i for i in range(1_000_000)) + b"\n1\n")  # 7.9 MB
    status, _, err, _, normal = measured(irisflow_config, "run", "--date", DAY.isoformat())
    assert status == 0, err

    fields = wide.read_bytes()[:65536].count(b",") + 1  # in the first max_line_bytes, all that is read of it
    refusal = f"line 1 has at least {fields} fields, more than [iris] max_columns = 64"
    told = {  # validate names the file; run names the day's source and the snapshot it read
        ("validate", str(wide)): lambda out, err: out.strip() == f"{wide}: {refusal}",
        ("run", "--date", "2026-01-02"): lambda out, err: f"{wide} (snapshot 2026-01-02/input.csv): {refusal}" in err,
    }
    for command, said in told.items():
        status, out, err, seconds, peak = measured(irisflow_config, *command, timeout=60)
        assert status == 1 and said(out, err), out + err
        assert "Traceback" not in out + err and "unexpected" not in out + err
        assert seconds < 30, (command, seconds)
        assert peak <= normal, f"{command}: peak RSS {peak} KiB, a normal day's run {normal} KiB"


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (
            HEADER + b"5.1,3.5,1.4,0.2," + b"s" * 50_000 + b"\n",
            "line 2 field 5 is 50000 bytes long, more than [iris] max_cell_bytes = 4096",
        ),
        (
            HEADER + b'5.1,3.5,1.4,0.2,"' + b"s" * 30_000_000 + b'"\n',  # one 30 MB cell: longer than any row may be
            "line 2 is longer than [iris] max_line_bytes = 65536 bytes",
        ),
        (
            HEADER + ROWS[0] + b"x" * 30_000_000,  # a 30 MB line without a comma or a line end
            "line 3 is longer than [iris] max_line_bytes = 65536 bytes",
        ),
        (
            HEADER + ROWS[0] + b'"' + b"\n" * 1_000_000 + b'"\n',  # a quoted cell of a million line breaks
            "line 3 is longer than [iris] max_line_bytes = 65536 bytes",
        ),
    ],
    ids=["long-cell", "huge-cell", "long-line", "line-breaks-in-quotes"],
)
def test_an_over_long_cell_or_line_is_refused_naming_line_and_setting(irisflow_config, tmp_path, content, said):
    normal = measured(irisflow_config, "validate", str(IRIS_CSV))
    assert normal[0] == 0, normal
    path = tmp_path / "day.csv"
    path.write_bytes(content)
    status, out, err, seconds, peak = measured(irisflow_config, "validate", str(path))
    assert (status, out.strip(), err) == (1, f"{path}: {said}", "")
    assert seconds < 30 and peak <= normal[4], (seconds, peak, normal[4])


def test_the_limits_are_settings_checked_at_start(irisflow_config, cli):
    irisflow_config.set("iris", max_columns=4)
    result = cli("validate", str(IRIS_CSV))
    assert result.returncode == 1
    assert result.stdout.strip() == f"{IRIS_CSV}: line 1 has 5 fields, more than [iris] max_columns = 4"
    irisflow_config.set("iris", max_columns=0, max_cell_bytes=-5)
    result = cli("validate", str(IRIS_CSV))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "irisflow: error: luigi.cfg: [iris] max_columns, max_cell_bytes must be positive integers (input limits)"
    )


def test_a_hard_link_to_a_private_file_elsewhere_is_refused_and_nothing_is_copied(irisflow_config, incoming, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    private = elsewhere / "private.csv"
    secret = HEADER + b"".join(ROWS).replace(b"setosa", b"setosa_is_a_secret")  # the day would fail Validate
    private.write_bytes(secret)
    private.chmod(0o600)
    os.link(private, incoming / f"{DAY}.csv")

    status, out, err, seconds, _ = measured(irisflow_config, "run", "--date", DAY.isoformat())
    assert status == 1, out + err
    assert "FAILED (validation) in Extract" in err
    assert f"{incoming / f'{DAY}.csv'}: has 2 hard links; refused: its content may belong to a file outside" in err
    root = irisflow_config.output_root
    assert not (root / "failed" / DAY.isoformat() / "input.csv").exists()
    copies = [p for p in root.rglob("*") if p.is_file() and b"setosa_is_a_secret" in p.read_bytes()]
    assert copies == []


def test_a_quarantined_copy_is_no_more_readable_than_its_source(irisflow_config, incoming):
    for date, mode in ((DAY, 0o600), (DAY + dt.timedelta(days=1), 0o644)):
        source = write_input(incoming, date, bad=True)  # fails Validate: its snapshot is quarantined
        source.chmod(mode)
        status, _, err, _, _ = measured(irisflow_config, "run", "--date", date.isoformat())
        assert status == 1 and "FAILED (validation) in Validate" in err, err
        kept = irisflow_config.output_root / "failed" / date.isoformat() / "input.csv"
        assert kept.read_bytes() == source.read_bytes()
        assert stat.S_IMODE(kept.stat().st_mode) == mode & ~_umask(), (date, oct(kept.stat().st_mode))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_fifo_as_the_days_input_is_refused_at_once(irisflow_config, incoming):
    fifo = incoming / f"{DAY}.csv"
    os.mkfifo(fifo)
    status, _, err, seconds, _ = measured(irisflow_config, "run", "--date", DAY.isoformat(), timeout=60)
    assert status == 1 and f"{fifo}: not a regular file; refused" in err, err
    assert seconds < 30
    status, _, err, _, _ = measured(irisflow_config, "validate", str(fifo), timeout=60)
    assert (status, err.strip()) == (2, f"irisflow: error: {fifo}: is a FIFO (named pipe), not a regular file")


# -- whatever the bytes: a clean outcome --------------------------------------------------------------------
SMALL_LIMITS = {"max_columns": 8, "max_line_bytes": 300, "max_cell_bytes": 40}

pieces = st.one_of(
    st.sampled_from([b",", b"\n", b"\r\n", b"\r", b'"', b'""', b" ", b"\xff", b"\x00", "é".encode(), b"\xef\xbb\xbf"]),
    st.sampled_from(ROWS[::10]),
    st.sampled_from([HEADER, HEADER.rstrip() + b",extra\n", b"x" * 41, b"," * 9, b"y" * 301]),
    st.binary(max_size=12),
)


@st.composite
def day_files(draw):
    """Bytes near the limits: an Iris file with pieces spliced in, or pieces alone."""
    spliced = draw(st.lists(pieces, max_size=12))
    if draw(st.booleans()):
        return b"".join(spliced)
    rows = draw(st.lists(st.sampled_from(ROWS), min_size=30, max_size=60))
    at = draw(st.integers(0, len(rows)))
    return HEADER + b"".join(rows[:at]) + b"".join(spliced) + b"".join(rows[at:])


def _clean(status, out, err, seconds):
    said = out + err
    assert status in (0, 1, 2), (status, said)
    assert "Traceback" not in said and "unexpected" not in said, said
    assert seconds < 60
    for line in said.splitlines():
        if re.search(r"\[iris\] max_(columns|line_bytes|cell_bytes|source_bytes)", line):  # refused before parsing
            assert said.strip().endswith(line.strip()), said


def fresh(tmp_path):
    """An output root of its own for one example (a date complete in the last one would be skipped)."""
    return tmp_path / f"output-{uuid.uuid4().hex[:8]}"


IN_PROCESS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@IN_PROCESS
@given(content=day_files())
def test_validate_any_bytes_ends_cleanly(irisflow_config, tmp_path, capsys, content):
    irisflow_config.set("iris", **SMALL_LIMITS)
    path = tmp_path / "day.csv"
    path.write_bytes(content)
    started = time.monotonic()
    status = main(["validate", str(path)])
    said = capsys.readouterr()
    _clean(status, said.out, said.err, time.monotonic() - started)
    if status == 1:
        assert said.out.startswith(f"{path}: "), said.out


@IN_PROCESS
@given(content=day_files())
def test_run_any_bytes_ends_cleanly(irisflow_config, tmp_path, capsys, content):
    irisflow_config.set(
        "iris", source=tmp_path / "in" / "{date}.csv", output_root=fresh(tmp_path), models='["knn"]', **SMALL_LIMITS
    )
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / f"{DAY}.csv").write_bytes(content)
    started = time.monotonic()
    status = main(["run", "--date", DAY.isoformat()])
    said = capsys.readouterr()
    _clean(status, said.out, said.err, time.monotonic() - started)
    if status == 1:
        assert "FAILED (validation) in Validate" in said.err, said.err


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=day_files(), command=st.sampled_from(["validate", "run"]))
def test_the_real_command_on_any_bytes_ends_cleanly(irisflow_config, tmp_path, content, command):
    irisflow_config.set(
        "iris", source=tmp_path / "in" / "{date}.csv", output_root=fresh(tmp_path), models='["knn"]', **SMALL_LIMITS
    )
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / "in" / f"{DAY}.csv"
    path.write_bytes(content)
    args = ["validate", str(path)] if command == "validate" else ["run", "--date", DAY.isoformat()]
    status, out, err, seconds, _ = measured(irisflow_config, *args)
    _clean(status, out, err, seconds)
