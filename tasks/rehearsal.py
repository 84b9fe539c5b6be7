"""One rehearsal of a date's work on made-up rows, run once in a process before Luigi forks task processes.

Stock Luigi with `--workers N` (and `python -m service worker --workers N`) forks a process per task.
Whatever the task touches for the first time there is paid in every task: modules that pandas,
scikit-learn, pandera and narwhals load on first use, and the caches and specialised bytecode Python
builds as code runs. Rehearsing every step once in the parent, through the same functions the tasks
call and on the configured models, leaves all of that in memory the children inherit.
"""

import tempfile
from pathlib import Path

from .config import FEATURES, SPECIES

ROWS_PER_SPECIES = 10


def made_up_rows():
    """A small valid Iris-shaped DataFrame, the same every time: three species apart on every feature."""
    import pandas as pd

    return pd.DataFrame(
        [
            {**{name: 1.0 + kind + 0.1 * (row % 5) for name in FEATURES}, "species": species}
            for kind, species in enumerate(SPECIES)
            for row in range(ROWS_PER_SPECIES)
        ]
    )


def rehearse(settings, thresholds):
    """Run snapshot → read → validate → drift → split → train, evaluate and save every model → summary once,
    in a temporary folder; `settings` is the `[iris]` section, `thresholds` the `[quality]` ones."""
    import pandas as pd

    from .files import write_model
    from .quality import drift_report
    from .reading import read_source, snapshot_source
    from .schema import validate_frame
    from .steps import evaluate, split, summarize, train

    with tempfile.TemporaryDirectory(prefix="irisflow-rehearsal-") as folder:
        source, snapshot = Path(folder, "source.csv"), Path(folder, "input.csv")
        made_up_rows().to_csv(source, index=False)
        snapshot_source(source, snapshot, data_dir=folder, max_bytes=None)
        valid, _ = validate_frame(read_source(snapshot), source="(rehearsal)", min_rows=1)
        valid.to_csv(source, index=False)
        valid = pd.read_csv(source)
        drift_report(valid, valid, list(settings.features), SPECIES, thresholds)
        training, test = split(valid, settings.test_size, settings.seed)
        metrics = {}
        for name in settings.models:
            hyperparameters = settings.hyperparameters.get(name, {})
            estimator = train(training, name, settings.features, hyperparameters, settings.seed)
            metrics[name] = evaluate(estimator, test, settings.features)
            write_model(Path(folder, f"{name}.model"), estimator)
    summarize("rehearsal", metrics)
