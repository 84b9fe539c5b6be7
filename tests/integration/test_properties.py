"""Property-based tests: whatever the input file, the CLI's arguments or a date string, the result is a
clean pass or a clear rejection, never a traceback, and no date can point outside output_root."""
import datetime as dt
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import IRIS_CSV
from service.cli import main
from tasks import partition
from tasks import config as task_config
from tasks.config import FEATURES, SPECIES
from tasks.iris import IrisPipeline
from tasks.reading import read_source
from tasks.schema import MAX_CM, InputRejected, validate_frame

HEADER, *ROWS = IRIS_CSV.read_text().splitlines()
FIXTURES_REUSED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None,
                           max_examples=150)

cells = st.one_of(
    st.sampled_from(["", "NaN", "inf", "-1", "0", "1e308", "abc", '"5.1"', "5,1", "setosa ", "SETOSA", "\x00"]),
    st.sampled_from(SPECIES),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)
names = st.one_of(st.sampled_from([*FEATURES, "species", "Species", " petal_width ", "extra", ""]), st.text(max_size=6))


@st.composite
def csv_like(draw):
    """Text close to an Iris CSV: real rows, some mutated, under a header that may be permuted or damaged."""
    header = draw(st.one_of(st.just(HEADER.split(",")), st.permutations(HEADER.split(",")),
                            st.lists(names, min_size=0, max_size=7)))
    rows = draw(st.lists(st.sampled_from(ROWS), min_size=0, max_size=60))
    mutated = [draw(st.lists(cells, min_size=1, max_size=7)) if draw(st.integers(0, 9)) == 0 else row.split(",")
               for row in rows]
    delimiter = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    line_end = draw(st.sampled_from(["\n", "\r\n"]))
    text = line_end.join(delimiter.join(fields) for fields in [header, *mutated])
    cut = draw(st.integers(0, 20))
    encoded = (("\ufeff" if draw(st.booleans()) else "") + text + line_end).encode("utf-8", "surrogatepass")
    return encoded[:-cut] if cut and draw(st.booleans()) else encoded


def _check_validation(path, content):
    path.write_bytes(content)
    try:
        frame, report = validate_frame(read_source(path), source=path, min_rows=1)
    except InputRejected as exc:
        assert str(exc).startswith(str(path)), str(exc)
        return
    assert report["passed"] and list(frame.columns) == [*FEATURES, "species"]
    assert not frame.isna().any().any()
    assert set(frame["species"]) == set(SPECIES)
    assert all(0 < value <= MAX_CM and math.isfinite(value) for value in frame[list(FEATURES)].to_numpy().ravel())


@FIXTURES_REUSED
@given(content=st.binary(max_size=400))
def test_any_bytes_pass_cleanly_or_are_rejected_clearly(tmp_path, content):
    _check_validation(tmp_path / "input.csv", content)


@FIXTURES_REUSED
@given(content=csv_like())
def test_any_near_csv_passes_cleanly_or_is_rejected_clearly(tmp_path, content):
    _check_validation(tmp_path / "input.csv", content)


words = st.one_of(
    st.sampled_from(["run", "backfill", "status", "validate", "--date", "--start", "--end", "--workers", "--force",
                     "--json", "--verbose", "--help", "-h", "0", "-1", "99999999999", "2026-02-30", "../..",
                     "/etc/passwd", "2026-1-1", "２０２６-01-01", "2026-01-01T00:00", "", "--", "x\ny", "\r\x1b[2J", "\x85", "\u2028"]),
    st.dates(dt.date(2026, 1, 1), dt.date(2026, 1, 4)).map(str),  # valid dates: small ranges only
    st.text(max_size=12),
)


@FIXTURES_REUSED
@given(argv=st.lists(words, max_size=6).filter(lambda argv: "serve" not in argv))
def test_any_command_line_exits_0_1_or_2_without_a_traceback(irisflow_config, tmp_path, capsys, argv):
    irisflow_config.set("iris", source=tmp_path / "absent-{date}.csv", output_root=tmp_path / "output")
    try:
        status = main(argv)
    except SystemExit as exit_:  # --help: argparse prints it and exits 0
        status = exit_.code
    said = capsys.readouterr()
    assert status in (0, 1, 2), (argv, status)
    assert "Traceback" not in said.out + said.err
    if status == 2:
        assert said.err.startswith("irisflow: error:") and len(said.err.strip().splitlines()) == 1, said.err
    assert {p.name for p in tmp_path.iterdir()} <= {"luigi.cfg", "output"}
    for entry in (tmp_path / "output").glob("*"):
        assert entry.name in ("failed", ".locks", ".staging") or partition.parse_date(entry.name)


@given(text=st.one_of(st.text(max_size=30), st.dates().map(str), st.from_regex(r"\d{4}-\d{2}-\d{2}", fullmatch=True)))
def test_a_date_string_is_a_real_day_or_refused_and_stays_under_the_root(text):
    root = Path("/srv/irisflow/output")
    try:
        date = partition.parse_date(text)
    except ValueError:
        return
    assert date.isoformat() == text
    assert partition.partition_dir(root, text).parent == root
    assert partition.failed_dir(root, text).parent == root / "failed"


@given(text=st.text(max_size=30))
def test_the_stock_luigi_date_parameter_cannot_point_outside_the_root(text):
    """`luigi --module tasks.iris IrisPipeline --date TEXT`: Luigi parses TEXT to a date or refuses it."""
    try:
        task = IrisPipeline.from_str_params({"date": text})
    except ValueError:
        return
    assert Path(task.output().path).parent == Path(task_config.settings().output_root) / task.date.isoformat()


@given(token=st.text(max_size=30))
def test_a_forced_rebuild_token_cannot_point_outside_the_staging_root(token):
    """`--rebuild TOKEN` on the stock command: a token that is not hex is refused."""
    task = IrisPipeline.from_str_params({"date": "2026-11-24", "rebuild": token})
    try:
        path = Path(task.output().path)
    except ValueError:
        return
    staging = Path(task_config.settings().output_root) / ".staging"
    assert path.parent.parent.parent == staging if token else path.parent.parent == Path(task_config.settings().output_root)


@FIXTURES_REUSED
@given(entries=st.lists(st.text(min_size=1, max_size=12).filter(lambda n: "/" not in n and n not in (".", "..")
                                                                 and "\x00" not in n), max_size=8))
def test_status_ignores_any_stray_names_in_the_output_root(tmp_path, entries):
    root = tmp_path / "output"
    for name in entries:
        (root / "failed" / name).mkdir(parents=True, exist_ok=True)
    for date in partition.dates_present(root):
        assert (root / "failed" / date.isoformat()).is_dir()
