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

    where = location(target.path)
    return json.loads(read_sealed(target) if is_object(where) else durable.read_bytes(where))


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
    import pandas as pd

    from .partition import location

    if not is_object(location(target.path)):
        return read_table(target.path)
    return pd.read_csv(io.BytesIO(read_sealed(target)))


def read_sealed(target):
    """The bytes of an object target; when the target carries the sha256 its writer's receipt sealed
    (`DatePartitionTask.input`), bytes this process already holds with that sha256 are used as they are."""
    import hashlib

    from .partition import durable, location, objects

    where, sha256 = location(target.path), getattr(target, "sealed_sha256", None)
    data = objects.known(where, sha256) if sha256 else None
    if data is None:
        data = durable.read_bytes(where)
        if sha256 and hashlib.sha256(data).hexdigest() == sha256:
            objects.remember(where, sha256, data)
    return data


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
