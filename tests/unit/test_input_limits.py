"""tasks.shape.check_shape: a file's rows, fields and cells are bounded by streaming, before pandas, and the
fast path for unquoted files judges exactly as the csv module does."""

import io
import types

import pytest
from hypothesis import given, settings, strategies as st

from tasks import shape
from tasks.schema import InputRejected
from tasks.shape import check_shape

LIMITS = types.SimpleNamespace(max_columns=6, max_line_bytes=40, max_cell_bytes=12)


def verdict(content, limits=LIMITS, *, quoted=False):
    """None when accepted, else the message; `quoted` forces the csv module's path."""
    handle = io.BytesIO(content)
    try:
        if quoted:
            shape._quoted_shape(handle, "f.csv", limits)
        else:
            check_shape(handle, "f.csv", limits)
    except InputRejected as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("quoted", [False, True])
@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"a,b,c,d,e\n1,2,3,4,x\n", None),
        (b"a,b,c,d,e,f,g\n", "f.csv: line 1 has 7 fields, more than [iris] max_columns = 6"),
        (
            b"a,b\r\n1,2\r\n" + b"1," * 30 + b"\r\n",
            "f.csv: line 3 has at least 21 fields, more than [iris] max_columns = 6",
        ),
        (b"a,b\n1,2\n3,4\n" + b"x" * 41 + b"\n", "f.csv: line 4 is longer than [iris] max_line_bytes = 40 bytes"),
        (b"a,b\r1,2\r" + b"xxxxxxx," * 5 + b"\r", None),  # CR-only line ends; a line of exactly the limit
        (b"a,b\n1," + b"y" * 13, "f.csv: line 2 field 2 is 13 bytes long, more than [iris] max_cell_bytes = 12"),
        (b"a,b\n1,   " + b"y" * 12 + b"\n", None),  # skipinitialspace: leading blanks are not the cell's
        ("a,b\n1,ééééééé\n".encode(), "f.csv: line 2 field 2 is 14 bytes long, more than [iris] max_cell_bytes = 12"),
    ],
)
def test_rows_fields_and_cells_are_bounded(content, said, quoted):
    assert verdict(content, quoted=quoted) == said


def test_a_quoted_cell_spanning_lines_is_one_row_and_its_line_breaks_count():
    assert verdict(b'a,b\n1,"x\ny"\n') is None
    assert verdict(b'a,b\n1,"' + b"\n" * 50 + b'"\n') == "f.csv: line 2 is longer than [iris] max_line_bytes = 40 bytes"
    assert verdict(b'a,"1,2,3,4,5,6"\n') is None  # quoted commas are not fields
    assert verdict(b'a,b\n"\n\n",' + b"z" * 13 + b"\n") == (
        "f.csv: line 2 field 2 is 13 bytes long, more than [iris] max_cell_bytes = 12"
    )


def test_a_wide_line_is_refused_after_reading_a_bounded_part_of_it():
    """Neither path reads an over-long line whole: a line of 50 MB in 1 MiB blocks."""
    reads = []

    class Recording(io.BytesIO):
        def read(self, size=-1):
            reads.append(size)
            return super().read(size)

        def readinto(self, buffer):
            reads.append(len(buffer))
            return super().readinto(buffer)

    huge = b"c," * (25 * 1024 * 1024) + b"\n"
    for header in (b"a,b\n", b'"a",b\n'):  # the quote sends the file through the csv module
        reads.clear()
        handle = Recording(header + huge)
        limits = types.SimpleNamespace(max_columns=64, max_line_bytes=65536, max_cell_bytes=4096)
        with pytest.raises(InputRejected, match=r"line 2 has at least \d+ fields, more than \[iris\] max_columns = 64"):
            check_shape(handle, "f.csv", limits)
        assert sum(size for size in reads if size > 0) <= 3 * shape.SCAN_BLOCK, reads


def test_the_csv_field_limit_is_raised_only_as_far_as_the_row_limit():
    import csv

    before = csv.field_size_limit()
    shape._allow_fields_of(before - 1)
    assert csv.field_size_limit() == before
    shape._allow_fields_of(before + 10)
    assert csv.field_size_limit() == before + 10
    csv.field_size_limit(before)


unquoted = (
    st.lists(
        st.one_of(
            st.sampled_from([b",", b"\n", b"\r\n", b"\r", b" ", b"a", b"1.5", "é".encode(), b"\xff"]),
            st.binary(max_size=3),
        ),
        max_size=60,
    )
    .map(b"".join)
    .filter(lambda content: b'"' not in content)
)


@settings(max_examples=300, deadline=None)
@given(content=unquoted, columns=st.integers(1, 8), line=st.integers(1, 30), cell=st.integers(1, 12))
def test_the_fast_path_judges_unquoted_files_as_the_csv_module_does(content, columns, line, cell):
    limits = types.SimpleNamespace(max_columns=columns, max_line_bytes=line, max_cell_bytes=cell)
    assert verdict(content, limits) == verdict(content, limits, quoted=True)


@settings(max_examples=300, deadline=None)
@given(content=st.binary(max_size=300), block=st.integers(1, 16))
def test_block_boundaries_change_nothing(content, block):
    expected = verdict(content)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(shape, "SCAN_BLOCK", block)
        assert verdict(content) == expected
