"""Every kind of bad input is rejected with a message naming file, column and check (exit 1, nothing
downstream for that date, the rejected input quarantined), every harmless variation is accepted after
normalising, and the other dates of the same backfill still complete."""
import json
import os
import subprocess
import sys

import pytest

from conftest import IRIS_CSV, REPO
from service.cli import main
from tasks import partition

HEADER, *ROWS = IRIS_CSV.read_text().splitlines()


def csv_bytes(header=HEADER, rows=ROWS, end="\n"):
    return (end.join([header, *rows]) + end).encode()


def _replace_first(row_text, old, new):
    rows = list(ROWS)
    rows[0] = rows[0].replace(old, new, 1) if row_text is None else row_text
    return rows


# name -> (file content, words the message must contain: the column and the check, or what is wrong)
REJECTED = {
    "missing_column": (csv_bytes(HEADER.rsplit(",", 1)[0].replace(",petal_width", "") + ",species",
                                 [",".join(r.split(",")[:3] + r.split(",")[4:]) for r in ROWS]),
                       ["'petal_width'", "column_in_dataframe"]),
    "wrong_type": (csv_bytes(rows=_replace_first(None, "3.5", "abc")), ["'sepal_width'", "coerce_dtype", "line 2"]),
    "nan": (csv_bytes(rows=_replace_first(None, "3.5", "")), ["'sepal_width'", "not_nullable", "line 2"]),
    "nan_literal": (csv_bytes(rows=_replace_first(None, "3.5", "NaN")), ["'sepal_width'", "not_nullable"]),
    "negative": (csv_bytes(rows=_replace_first(None, "5.1", "-5.1")), ["'sepal_length'", "greater_than(0)", "line 2"]),
    "absurd": (csv_bytes(rows=_replace_first(None, "5.1", "5100")),
               ["'sepal_length'", "less_than_or_equal_to(30.0)", "line 2"]),
    "infinite": (csv_bytes(rows=_replace_first(None, "5.1", "inf")), ["'sepal_length'", "less_than_or_equal_to"]),
    "unknown_species": (csv_bytes(rows=_replace_first(None, "setosa", "rose")), ["'species'", "isin", "'rose'"]),
    "missing_class": (csv_bytes(rows=[r for r in ROWS if not r.endswith("virginica")]),
                      ["'species'", "check 'at least one virginica row'"]),
    "too_few_rows": (csv_bytes(rows=ROWS[:5]), ["at_least_30_rows"]),
    "empty_file": (b"", ["empty file"]),
    "header_only": (csv_bytes(rows=[]), ["at_least_30_rows"]),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), ["binary data"]),
    "json_not_csv": (json.dumps({"flowers": 150, "by": "anderson"}).encode(),
                     ["'sepal_length'", "column_in_dataframe"]),
    "semicolons": (csv_bytes(HEADER.replace(",", ";"), [r.replace(",", ";") for r in ROWS]), ["';' as delimiter"]),
    "tabs": (csv_bytes(HEADER.replace(",", "\t"), [r.replace(",", "\t") for r in ROWS]), ["'\\t' as delimiter"]),
    "duplicated_column": (csv_bytes(HEADER + ",Species", [r + ",setosa" for r in ROWS]),
                          ["'species'", "more than once"]),
    "repeated_header_row": (csv_bytes(rows=ROWS[:75] + [HEADER] + ROWS[75:]),
                            ["'sepal_length'", "coerce_dtype", "line 77"]),
    "truncated_last_line": (csv_bytes(rows=ROWS)[:-12], ["line 151", "cut short", "still being written"]),
    "extra_field_in_first_row": (csv_bytes(rows=_replace_first(None, "setosa", "setosa,7")), ["line 2 has 6 fields"]),
    "extra_field_in_a_later_row": (csv_bytes(rows=ROWS[:3] + [ROWS[3] + ",7"] + ROWS[4:]), ["Expected 5 fields in line 5"]),
    "latin1": (csv_bytes(rows=_replace_first(None, "setosa", "setosa")).replace(b"setosa", "sétosa".encode("latin-1"), 1),
               ["not UTF-8", "line 2", "0xe9"]),
    "utf16": ("\n".join([HEADER, *ROWS]).encode("utf-16"), ["binary data"]),
}

# name -> content that must pass, normalised to the canonical frame
ACCEPTED = {
    "byte_order_mark": b"\xef\xbb\xbf" + csv_bytes(),
    "crlf": csv_bytes(end="\r\n"),
    "bom_and_crlf": b"\xef\xbb\xbf" + csv_bytes(end="\r\n"),
    "quoted_numbers": csv_bytes(rows=[",".join(f'"{v}"' for v in r.split(",")) for r in ROWS]),
    "other_order_and_case": csv_bytes("Species,PETAL_WIDTH,petal_length,Sepal_Width,sepal_length",
                                      [",".join(reversed(r.split(","))) for r in ROWS]),
    "spaces_around_names_and_values": csv_bytes(" " + HEADER.replace(",", " , "),
                                                [r.replace(",", ", ") for r in ROWS]),
    "extra_columns": csv_bytes(HEADER + ",collector,notes", [r + ",ann,ok" for r in ROWS]),
    "no_final_line_end": csv_bytes()[:-1],
}


def _validate(tmp_path, content, capsys, name="input.csv"):
    path = tmp_path / name
    path.write_bytes(content)
    status = main(["validate", str(path)])
    out = capsys.readouterr()
    return path, status, out.out + out.err


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_bad_input_is_rejected_naming_file_column_and_check(irisflow_config, tmp_path, capsys, name):
    content, words = REJECTED[name]
    path, status, said = _validate(tmp_path, content, capsys)
    assert status == 1, said
    assert said.startswith(str(path)), said
    for word in words:
        assert word in said, (word, said)
    assert "Traceback" not in said


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_harmless_variations_are_accepted_after_normalising(irisflow_config, tmp_path, capsys, name):
    from tasks.reading import read_source
    from tasks.schema import validate_frame

    path, status, said = _validate(tmp_path, ACCEPTED[name], capsys)
    assert status == 0, said
    assert "validation passed: 150 of 150 rows valid" in said
    valid, _ = validate_frame(read_source(path), source=path, min_rows=30)
    canonical, _ = validate_frame(read_source(IRIS_CSV), source=IRIS_CSV, min_rows=30)
    assert valid.equals(canonical)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(irisflow_config, tmp_path, capsys):
    irisflow_config.set("iris", max_source_bytes=1000)
    path, status, said = _validate(tmp_path, csv_bytes(), capsys)
    assert status == 1 and said.startswith(f"{path}: file is") and "max_source_bytes" in said


@pytest.mark.slow
def test_a_backfill_rejects_each_bad_date_cleanly_and_completes_the_others(irisflow_config, cli, tmp_path):
    incoming, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    incoming.mkdir()
    elsewhere.mkdir()
    (elsewhere / "iris.csv").write_bytes(csv_bytes())
    good = {"2026-01-01": ACCEPTED["bom_and_crlf"], "2026-01-02": ACCEPTED["other_order_and_case"]}
    bad = {f"2026-02-{i:02d}": name for i, name in enumerate(sorted(REJECTED), start=1)}
    for date, content in good.items():
        (incoming / f"{date}.csv").write_bytes(content)
    for date, name in bad.items():
        (incoming / f"{date}.csv").write_bytes(REJECTED[name][0])
    (incoming / "2026-01-03.csv").symlink_to(incoming / "2026-01-01.csv")  # inside the data dir: fine
    (incoming / "2026-03-01.csv").symlink_to(elsewhere / "iris.csv")  # a valid file, but outside: refused
    (incoming / "2026-03-02.csv").write_bytes(csv_bytes() * 10)  # over the limit set below
    irisflow_config.set("iris", source=incoming / "{date}.csv", models='["knn"]', max_source_bytes=20000)

    result = cli("backfill", "--start", "2026-01-01", "--end", "2026-03-02", timeout=600)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    root = irisflow_config.output_root
    for date in [*good, "2026-01-03"]:
        assert partition.is_complete(root, partition.parse_date(date)), date
    for date, name in bad.items():
        assert not (root / date).exists(), f"{name}: outputs left for a rejected date"
        failed = root / "failed" / date
        record = json.loads((failed / "failure.json").read_text())
        assert (record["reason"], record["step"]) == ("validation", "Validate"), name
        assert str(incoming / f"{date}.csv") in record["error"], name
        for word in REJECTED[name][1]:
            assert word in record["error"], (name, word)
        assert (failed / "input.csv").read_bytes() == REJECTED[name][0], f"{name}: input not quarantined"
        assert (failed / "validation.json").is_file()
    for date, words in {"2026-03-01": ["outside the data directory"], "2026-03-02": ["max_source_bytes"]}.items():
        assert not (root / date).exists()
        record = json.loads((root / "failed" / date / "failure.json").read_text())
        assert record["step"] == "Extract" and all(word in record["error"] for word in words), record
    assert "2 dates FAILED (validation) in Extract: 2026-03-01..2026-03-02" in result.stderr  # grouped
    assert "rerun: python -m service backfill --dates 2026-03-01..2026-03-02" in result.stderr

    # The design's promise: a corrected source is picked up by the next run.
    (incoming / "2026-02-01.csv").write_bytes(csv_bytes())
    fixed = cli("run", "--date", "2026-02-01")
    assert fixed.returncode == 0, fixed.stderr
    assert not (root / "failed" / "2026-02-01").exists()


@pytest.mark.slow
def test_the_stock_luigi_command_refuses_a_symlink_out_of_the_data_dir(irisflow_config, tmp_path):
    incoming = tmp_path / "in"
    incoming.mkdir()
    (incoming / "2026-11-24.csv").symlink_to(IRIS_CSV)
    irisflow_config.set("iris", source=incoming / "{date}.csv")
    luigi_cli = os.path.join(os.path.dirname(sys.executable), "luigi")
    result = subprocess.run([luigi_cli, "--module", "tasks.iris", "IrisPipeline", "--date", "2026-11-24",
                             "--local-scheduler"], cwd=REPO, env=irisflow_config.env(),
                            capture_output=True, text=True, timeout=300)
    assert "outside the data directory" in result.stderr
    assert not (irisflow_config.output_root / "2026-11-24" / "summary.json").exists()
