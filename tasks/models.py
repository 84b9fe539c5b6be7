"""The registry of model types a TrainModel may train, by name.

Each entry names the scikit-learn class and the defaults irisflow uses; the class is imported only when
a model is built, so checking configured names costs nothing.
"""

import importlib

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
