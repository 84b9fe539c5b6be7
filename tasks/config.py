"""The `[iris]` section of luigi.cfg: the one place the pipeline's settings are read from.

Luigi resolves every key from luigi.cfg in the working directory, /etc/luigi/luigi.cfg and the file
named by LUIGI_CONFIG_PATH (later files override earlier ones), so an operator overrides any key there.
"""

import functools
import os

import luigi

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SPECIES = ("setosa", "versicolor", "virginica")
DEFAULT_MODELS = ("logistic_regression", "random_forest", "svc", "knn", "decision_tree")


class iris(luigi.Config):  # noqa: N801 - the class name is the luigi.cfg section name
    source = luigi.Parameter(
        default="data/iris.csv", description="The day's input CSV; '{date}' in the path is replaced by YYYY-MM-DD."
    )
    output_root = luigi.Parameter(
        default="output",
        description="Directory (or s3://bucket/prefix on object storage) holding one YYYY-MM-DD partition per date.",
    )
    models = luigi.ListParameter(default=DEFAULT_MODELS, description="Model names to train per date.")
    features = luigi.ListParameter(default=FEATURES, description="Feature columns the models use.")
    hyperparameters: luigi.DictParameter[dict] = luigi.DictParameter(
        default={}, description='Per-model keyword arguments, e.g. {"random_forest": {"n_estimators": 50}}.'
    )
    test_size = luigi.FloatParameter(default=0.3, description="Share of rows held out for evaluation.")
    seed = luigi.IntParameter(default=42, description="Seed of the split and of randomised models.")
    max_invalid_fraction = luigi.FloatParameter(
        default=0.0, description="Share of invalid rows that are dropped instead of rejecting the file."
    )
    min_rows = luigi.IntParameter(default=30, description="Fewest valid rows a day's file may have.")
    max_source_bytes = luigi.IntParameter(
        default=200 * 1024 * 1024, description="Larger input files are refused before they are read."
    )
    # The shape of a file is bounded before pandas parses it: pandas sizes its work by the widest row, so
    # a header of a million columns in an 8 MB file takes gigabytes. An Iris day has 5 columns, ~30-byte rows.
    max_columns = luigi.IntParameter(default=64, description="A row (the header too) with more fields is refused.")
    max_line_bytes = luigi.IntParameter(
        default=64 * 1024, description="A longer row (quoted line breaks included) is refused."
    )
    max_cell_bytes = luigi.IntParameter(default=4096, description="A file with a longer cell is refused.")
    # On object storage a task's lock is a lease its holder renews every third of this time: a holder that
    # died is taken over after at most this long (by the store's clock).
    lease_seconds = luigi.FloatParameter(
        default=120.0, description="How long a lease on object storage outlives its holder's last renewal."
    )


@functools.lru_cache(maxsize=1)
def settings():
    """The `[iris]` section, resolved once per process: a luigi.Config resolves every key on each
    instantiation, and tasks ask for the output root on every target path. Call
    `settings.cache_clear()` after changing the configuration in a running process."""
    return iris()


class quality(luigi.Config):  # noqa: N801 - the class name is the luigi.cfg section name
    reference_days = luigi.IntParameter(
        default=28,
        description="The reference is the validated data of the complete dates among this many before a date.",
    )
    reference = luigi.OptionalParameter(
        default=None, description="A pinned reference CSV (Iris columns) used instead of the recent dates."
    )
    min_reference_dates = luigi.IntParameter(
        default=7, description="Fewest complete recent dates for a verdict; fewer give drift_detected null."
    )
    min_reference_rows = luigi.IntParameter(default=100, description="Fewest reference rows for a verdict.")
    psi_moderate = luigi.FloatParameter(default=0.1, description="PSI from which a feature has moved moderately.")
    psi_significant = luigi.FloatParameter(default=0.25, description="PSI from which a feature has drifted.")
    ks_pvalue = luigi.FloatParameter(default=0.01, description="KS p-value below which a moderate PSI counts as drift.")
    chi2_pvalue = luigi.FloatParameter(
        default=0.01, description="Chi-square p-value below which the species shares have drifted."
    )
    fail_on_drift = luigi.BoolParameter(
        default=False, description="Make drift a validation failure of the date (mailed like one)."
    )

    def thresholds(self):
        return {
            "psi_moderate": self.psi_moderate,
            "psi_significant": self.psi_significant,
            "ks_pvalue": self.ks_pvalue,
            "chi2_pvalue": self.chi2_pvalue,
        }


def source_path(date):
    """The day's input file: `[iris] source` with '{date}' replaced by YYYY-MM-DD."""
    return settings().source.replace("{date}", date.isoformat())


def data_dir():
    """The directory every day's input must stay inside: `[iris] source` up to its first '{date}'."""
    return os.path.dirname(settings().source.split("{date}", 1)[0]) or "."


def plain(value):
    """A Luigi parameter value (frozen dicts, tuples) as plain JSON data."""
    if isinstance(value, (str, bytes)):
        return value
    if hasattr(value, "items"):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def pipeline_settings():
    """The `[iris]` settings that shape a date's results, as summary.json records them."""
    current = settings()
    return {
        "models": list(current.models),
        "features": list(current.features),
        "hyperparameters": {name: plain(current.hyperparameters.get(name, {})) for name in current.models},
        "test_size": current.test_size,
        "seed": current.seed,
    }
