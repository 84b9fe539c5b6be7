"""The `[iris]` section of luigi.cfg: the one place the pipeline's settings are read from.

Luigi resolves every key from luigi.cfg in the working directory, /etc/luigi/luigi.cfg and the file
named by LUIGI_CONFIG_PATH (later files override earlier ones), so an operator overrides any key there.
"""
import functools

import luigi

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SPECIES = ("setosa", "versicolor", "virginica")
DEFAULT_MODELS = ("logistic_regression", "random_forest", "svc", "knn", "decision_tree")


class iris(luigi.Config):  # noqa: N801 - the class name is the luigi.cfg section name
    source = luigi.Parameter(
        default="data/iris.csv",
        description="The day's input CSV; '{date}' in the path is replaced by YYYY-MM-DD.")
    output_root = luigi.Parameter(
        default="output", description="Directory holding one YYYY-MM-DD partition per date.")
    models = luigi.ListParameter(default=DEFAULT_MODELS, description="Model names to train per date.")
    features = luigi.ListParameter(default=FEATURES, description="Feature columns the models use.")
    hyperparameters = luigi.DictParameter(
        default={}, description='Per-model keyword arguments, e.g. {"random_forest": {"n_estimators": 50}}.')
    test_size = luigi.FloatParameter(default=0.3, description="Share of rows held out for evaluation.")
    seed = luigi.IntParameter(default=42, description="Seed of the split and of randomised models.")
    max_invalid_fraction = luigi.FloatParameter(
        default=0.0, description="Share of invalid rows that are dropped instead of rejecting the file.")
    min_rows = luigi.IntParameter(default=30, description="Fewest valid rows a day's file may have.")
    max_source_bytes = luigi.IntParameter(
        default=200 * 1024 * 1024, description="Larger input files are refused before they are read.")


@functools.lru_cache(maxsize=1)
def settings():
    """The `[iris]` section, resolved once per process: a luigi.Config resolves every key on each
    instantiation, and tasks ask for the output root on every target path. Call
    `settings.cache_clear()` after changing the configuration in a running process."""
    return iris()
