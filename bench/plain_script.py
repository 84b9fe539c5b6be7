"""The plain script a user would write instead of irisflow: read the day's CSV, split, fit the configured
models, pickle them, next date; one process, one date after another.

No validation, no drift, no metrics, no receipts, no fsync: only the fits and the model pickles, done as
the pipeline does them (the same split and the same registry models and settings, from `[iris]`), so a
backfill's time over this script's is what everything irisflow adds costs or saves (figure 1b).

    python -m bench.plain_script --start 2024-01-01 --end 2024-12-30
"""

import argparse
import pickle
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from tasks import partition
from tasks.config import pipeline_settings, settings, source_path
from tasks.models import build_model


def run_date(date, settings_, output_root):
    frame = pd.read_csv(source_path(date))
    train, _ = train_test_split(
        frame, test_size=settings_["test_size"], random_state=settings_["seed"], stratify=frame["species"]
    )
    folder = Path(output_root) / date.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for name in settings_["models"]:
        model = build_model(name, settings_["hyperparameters"][name], settings_["seed"])
        model.fit(train[settings_["features"]], train["species"])
        with open(folder / f"{name}.pickle", "wb") as handle:
            pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.plain_script", description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=partition.parse_date, required=True)
    parser.add_argument("--end", type=partition.parse_date, required=True)
    args = parser.parse_args(argv)
    chosen, root = pipeline_settings(), settings().output_root
    for date in partition.date_range(args.start, args.end):
        run_date(date, chosen, root)


if __name__ == "__main__":
    main()
