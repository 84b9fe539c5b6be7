"""The registry of model types a TrainModel may train, by name.

Each entry names the scikit-learn class and the defaults irisflow uses; the class is imported only when
a model is built, so checking configured names costs nothing.
"""

import hashlib
import importlib
import json

REGISTRY = {
    "logistic_regression": ("sklearn.linear_model", "LogisticRegression", {"max_iter": 1000}),
    "random_forest": ("sklearn.ensemble", "RandomForestClassifier", {"n_estimators": 50}),
    "svc": ("sklearn.svm", "SVC", {}),
    "knn": ("sklearn.neighbors", "KNeighborsClassifier", {"n_neighbors": 5}),
    "decision_tree": ("sklearn.tree", "DecisionTreeClassifier", {}),
}


class UnknownModel(ValueError):
    pass


def check_model_names(names):
    """Raise UnknownModel naming every name that is not in the registry."""
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise UnknownModel(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(REGISTRY))}")


def build_model(name, hyperparameters, seed):
    """A fresh, unfitted estimator: registry defaults, then the given hyperparameters, seeded if it can be."""
    check_model_names([name])
    module, class_name, defaults = REGISTRY[name]
    cls = getattr(importlib.import_module(module), class_name)
    params = {**defaults, **dict(hyperparameters)}
    if "random_state" in cls().get_params():
        params.setdefault("random_state", seed)
    return cls(**params)


def import_estimators():
    """Import every registered model's module now (see tasks.iris: done before Luigi forks task processes)."""
    for module, _, _ in REGISTRY.values():
        importlib.import_module(module)


def settings_digest(settings):
    """The short digest of a TrainModel's settings (model, features, hyperparameters, split) that names
    its folder, so a model can be found again from the settings its metrics.json records."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def model_folder(settings):
    """'models/{model}-{digest}': where a TrainModel with these settings writes, relative to the partition."""
    return f"models/{settings['model']}-{settings_digest(settings)}"
