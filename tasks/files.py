"""How the tasks read and write their files: JSON reports, CSV tables and pickled models.

Plain functions of a path (or a Luigi target for reading), so every task writes the same way into the
temporary paths `tasks.partition.publishing` hands it, and the rehearsal (`tasks.rehearsal`) goes
through the very same calls.
"""

import json
import pickle


def write_json(path, obj):
    with open(path, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)


def read_json(target):
    """The JSON content of a Luigi target."""
    with target.open("r") as handle:
        return json.load(handle)


def write_csv(path, frame):
    frame.to_csv(path, index=False)


def read_csv(target):
    """A Luigi target's CSV as a DataFrame."""
    import pandas as pd

    return pd.read_csv(target.path)


def write_model(path, estimator):
    """The fitted estimator as a plain pickle, which joblib's loader reads as well. joblib's own dump walks
    the model through Python's pure-Python pickler to set numpy arrays aside, which for arrays this small
    costs far more than it saves over the C pickler."""
    with open(path, "wb") as handle:
        pickle.dump(estimator, handle, protocol=pickle.HIGHEST_PROTOCOL)
