"""How the tasks read and write their files: JSON reports, CSV tables and pickled models.

Plain functions of a path (or a Luigi target for reading), so every task writes the same way into the
temporary paths `tasks.partition.publishing` hands it, and the rehearsal (`tasks.rehearsal`) goes
through the very same calls.
"""

import contextlib
import io
import json
import os
import pickle
import shutil
import tempfile

from .partition import is_object


def write_json(path, obj):
    with open(path, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)


def read_json(target):
    """The JSON content of a Luigi target (a local file, or an object of an S3Target)."""
    from .partition import durable, location

    return json.loads(durable.read_bytes(location(target.path)))


@contextlib.contextmanager
def local_copy(path, max_bytes):
    """(a local file with the content at `path`, the folder it is in or None): the path itself when it is a
    local file; an object is downloaded, at most `max_bytes` of it, into a temporary folder removed after."""
    from .partition import location, objects

    where = location(path)
    if not is_object(where):
        yield path, None
        return
    folder = tempfile.mkdtemp(prefix="irisflow-input-")
    try:
        local = os.path.join(folder, where.name)
        objects.download(where, local, max_bytes)
        yield local, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_csv(path, frame):
    frame.to_csv(path, index=False)


def read_csv(target):
    """A Luigi target's CSV as a DataFrame (a local file, or an object of an S3Target)."""
    return read_table(target.path)


def read_table(path):
    """The CSV at a contract path (a file, or an object on a store) as a DataFrame."""
    import pandas as pd

    from .partition import durable, location

    where = location(path)
    return pd.read_csv(io.BytesIO(durable.read_bytes(where)) if is_object(where) else where)


def write_model(path, estimator):
    """The fitted estimator as a plain pickle, which joblib's loader reads as well. joblib's own dump walks
    the model through Python's pure-Python pickler to set numpy arrays aside, which for arrays this small
    costs far more than it saves over the C pickler."""
    with open(path, "wb") as handle:
        pickle.dump(estimator, handle, protocol=pickle.HIGHEST_PROTOCOL)
