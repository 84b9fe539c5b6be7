"""The work of each pipeline step as plain functions of DataFrames and parameters.

Luigi tasks only read their inputs, call one of these and write the result; unit tests and the
benchmark's reference loop call the same functions, so they do exactly the pipeline's work.
"""

import contextlib

from .config import SPECIES


@contextlib.contextmanager
def checked_inputs():
    """scikit-learn without its own checks of what the pipeline has checked already.

    Every frame a step hands scikit-learn passed the pandera schema (finite floats, known species), and
    scikit-learn would check it again in every call, and a random forest in every one of its trees; its
    parameter checks, repeated for every tree too, are made once per model by `train` instead. The
    results are the same: the checks only raise."""
    import sklearn

    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        yield


def split(frame, test_size, seed):
    """Stratified, deterministic train/test split of the validated data: (train, test) DataFrames."""
    from sklearn.model_selection import train_test_split

    with checked_inputs():
        train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=frame["species"])
    return train.reset_index(drop=True), test.reset_index(drop=True)


def train(frame, model, features, hyperparameters, seed):
    """A fitted estimator of the registry type `model` on the `features` columns of `frame`."""
    from .models import build_model

    estimator = build_model(model, hyperparameters, seed)
    estimator._validate_params()  # noqa: SLF001 - the configured hyperparameters, with scikit-learn's own message
    with checked_inputs():
        estimator.fit(frame[list(features)], frame["species"])
    _zero_tree_padding(estimator)
    return estimator


def _zero_tree_padding(estimator):
    """Zero the padding bytes of every fitted tree's nodes, so the pickle depends on the model alone.

    scikit-learn keeps a tree's nodes in C structs whose padding is never written, and pickles them as raw
    bytes: the same tree would otherwise be saved with whatever the allocator left there, and a rebuilt
    model.joblib would differ from the first, byte for byte, while being the same model.
    """
    import numpy as np

    for tree in [getattr(e, "tree_", None) for e in [estimator, *getattr(estimator, "estimators_", [])]]:
        if tree is None:
            continue
        state = tree.__getstate__()
        nodes = np.zeros(state["nodes"].shape, state["nodes"].dtype)
        for name in nodes.dtype.names:
            nodes[name] = state["nodes"][name]
        tree.__setstate__({**state, "nodes": nodes})


def evaluate(estimator, frame, features):
    """Accuracy, macro F1 and the confusion matrix (rows: true species, columns: predicted) on `frame`."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    truth = frame["species"]
    with checked_inputs():
        predicted = estimator.predict(frame[list(features)])
        return {
            "accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", labels=list(SPECIES))),
            "labels": list(SPECIES),
            "confusion_matrix": confusion_matrix(truth, predicted, labels=list(SPECIES)).tolist(),
            "test_rows": int(len(frame)),
        }


def summarize(date, metrics_by_model):
    """The date's summary: every model's metrics and the best model (highest accuracy, then macro F1)."""
    best = max(
        metrics_by_model, key=lambda name: (metrics_by_model[name]["accuracy"], metrics_by_model[name]["macro_f1"])
    )
    return {
        "date": str(date),
        "models": metrics_by_model,
        "best_model": best,
        "best_accuracy": metrics_by_model[best]["accuracy"],
    }
