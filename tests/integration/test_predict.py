"""`irisflow predict`: the champion's predictions of rows without labels, and one-line refusals."""
import datetime as dt
import io
import json

import pandas as pd

from conftest import IRIS_CSV

DAY = dt.date(2026, 2, 1)
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_predict_without_a_champion_then_with_one_class_by_class(irisflow_config, cli, tmp_path):
    irisflow_config.set("iris", models='["knn", "decision_tree"]')
    rows = tmp_path / "rows.csv"
    iris = pd.read_csv(IRIS_CSV)
    iris[FEATURES].to_csv(rows, index=False)

    none_yet = cli("predict", "--input", str(rows))
    assert none_yet.returncode == 2 and "no champion yet" in none_yet.stderr
    assert len(none_yet.stderr.splitlines()) == 1 and not none_yet.stdout

    assert cli("run", "--date", DAY.isoformat()).returncode == 0
    champion = json.loads((irisflow_config.output_root / "champion.json").read_text())
    metrics = json.loads(
        (irisflow_config.output_root / champion["model_file"]).with_name("metrics.json").read_text()
    )
    done = cli("predict", "--input", str(rows))
    assert done.returncode == 0, done.stderr
    predicted = pd.read_csv(io.StringIO(done.stdout))
    assert list(predicted.columns) == [*FEATURES, "predicted_species"] and len(predicted) == len(iris)
    assert (predicted["predicted_species"] == iris["species"]).mean() >= champion["accuracy"] - 0.05

    # The champion's own test rows (packaged Iris rows), labels removed: class by class, the predictions
    # give exactly the confusion matrix the champion was recorded with.
    test = pd.read_csv(next((irisflow_config.output_root / DAY.isoformat() / "split").glob("*/test.csv")))
    unlabelled = tmp_path / "test-rows.csv"
    test[FEATURES].to_csv(unlabelled, index=False)
    scored = cli("predict", "--input", str(unlabelled))
    assert scored.returncode == 0, scored.stderr
    guesses = pd.read_csv(io.StringIO(scored.stdout))["predicted_species"]
    labels = metrics["labels"]
    matrix = [[int(((test["species"] == truth) & (guesses == guess)).sum()) for guess in labels] for truth in labels]
    assert matrix == metrics["confusion_matrix"]
    assert (guesses == test["species"]).mean() == champion["accuracy"]

    out = tmp_path / "predicted.csv"
    assert cli("predict", "--input", str(rows), "--out", str(out)).returncode == 0
    assert pd.read_csv(out).equals(predicted)


def test_a_missing_or_extra_column_is_a_one_line_error(irisflow_config, cli, tmp_path):
    irisflow_config.set("iris", models='["knn"]')
    assert cli("run", "--date", DAY.isoformat()).returncode == 0
    iris = pd.read_csv(IRIS_CSV)
    cases = {
        "missing.csv": (iris[FEATURES[:3]], "missing column(s) petal_width"),
        "extra.csv": (iris, "extra column(s) species"),
        "bad.csv": (iris[FEATURES].assign(sepal_width=-1.0), "column 'sepal_width' check"),
    }
    for name, (frame, message) in cases.items():
        frame.to_csv(tmp_path / name, index=False)
        refused = cli("predict", "--input", str(tmp_path / name))
        assert refused.returncode == 2, name
        assert len(refused.stderr.splitlines()) == 1 and message in refused.stderr and name in refused.stderr
        assert not refused.stdout


class _Planted:
    """A pickle that, once loaded, writes a file: what a planted model would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_only_the_bytes_its_date_sealed_are_ever_unpickled(irisflow_config, cli, tmp_path):
    import pickle

    irisflow_config.set("iris", models='["knn"]')
    assert cli("run", "--date", DAY.isoformat()).returncode == 0
    rows = tmp_path / "rows.csv"
    pd.read_csv(IRIS_CSV)[FEATURES].to_csv(rows, index=False)
    root = irisflow_config.output_root
    champion_file = root / "champion.json"
    champion = json.loads(champion_file.read_text())
    marker = tmp_path / "code-ran"

    # A model file replaced with other bytes.
    (root / champion["model_file"]).write_bytes(pickle.dumps(_Planted(marker)))
    replaced = cli("predict", "--input", str(rows))
    assert replaced.returncode != 0 and "sha256" in replaced.stderr and not marker.exists()

    # A record pointing elsewhere, with that file's own hash (champion.json is rewritten from the history
    # before predict reads it, so the loader is asked directly).
    import hashlib

    import pytest

    from service.champion.rule import ModelUnusable, load_model

    planted = tmp_path / "planted.joblib"
    planted.write_bytes(pickle.dumps(_Planted(marker)))
    forged = {**champion, "model_file": f"{DAY.isoformat()}/../../{planted.name}",
              "sha256": hashlib.sha256(planted.read_bytes()).hexdigest()}
    for record in (forged, {**forged, "model_file": str(planted)}, {**forged, "model_file": "not-a-date/x"}):
        with pytest.raises(ModelUnusable, match="not a model file its date sealed"):
            load_model(root, record)
    assert not marker.exists()
