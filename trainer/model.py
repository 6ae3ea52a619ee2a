"""The model, declared: schedule-only features, the leak guard, the model kinds and the scikit-learn pipeline.

A model kind (ModelKind, in KINDS) is everything that differs between estimators: the classifier,
its default grid, the figures the report can draw of it and the types its model file holds.
Adding one is one entry here; the CLI (`--model`), the Dask config (skfleet.trainer.model), the
grid's checks, the report and the model file follow it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from skfleet.config import CLASSIFIER_STEP, DEFAULT_GRID
from skfleet.data import TARGET_COLUMN
from skfleet.errors import InputError, LeakError

NUMERIC_FEATURES = ("Month", "DayofMonth", "DayOfWeek", "CRSDepTime", "CRSArrTime", "FlightNum", "Distance")
AIRPORT_FEATURES = ("Origin", "Dest")
CATEGORY_FEATURES = ("UniqueCarrier", "Route")
# The text features: in the feature matrix as pandas categoricals (small integer codes, not text).
TEXT_FEATURES = (*CATEGORY_FEATURES, *AIRPORT_FEATURES)
# The 11 schedule-only features (README "Data formats"): all known before departure.
FEATURES = (*NUMERIC_FEATURES, "UniqueCarrier", *AIRPORT_FEATURES, "Route")

# Known only after departure (or the answer itself): never a feature.
FORBIDDEN_COLUMNS = frozenset(
    {
        "DepTime",
        "DepDelay",
        "ArrTime",
        "ArrDelay",
        "AirTime",
        "TaxiIn",
        "TaxiOut",
        "ActualElapsedTime",
        "Cancelled",
        "CancellationCode",
        "Diverted",
        "CarrierDelay",
        "WeatherDelay",
        "NASDelay",
        "SecurityDelay",
        "LateAircraftDelay",
        "ArrDel15",
        TARGET_COLUMN,
    }
)
UNKNOWN_CODE = -1
MISSING_CODE = -2


def check_no_leak(columns: Iterable[str]) -> None:
    """Refuse a feature matrix holding any column known only after departure."""
    leaked = sorted(set(columns) & FORBIDDEN_COLUMNS)
    if leaked:
        raise LeakError(
            f"label leak: the feature matrix holds {', '.join(leaked)}, known only after departure; "
            f"features must be schedule-only ({', '.join(FEATURES)})"
        )


def feature_matrix(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Give the schedule-only feature matrix X and the 0/1 target y of a prepared frame.

    The text features are categoricals: small integer codes and one copy of each text, so the
    matrix sent to the workers, and each fold's copy of it, is a fraction of the text's bytes.
    CategoryCodes gives them the codes it gives their text (the same trees, the same scores).
    """
    features = frame.assign(Route=frame["Origin"] + "_" + frame["Dest"])[list(FEATURES)]
    check_no_leak(features.columns)
    return features.astype({column: "category" for column in TEXT_FEATURES}), frame[TARGET_COLUMN]


def empty_features(features: pd.DataFrame) -> list[str]:
    """Give the feature columns empty (missing) in every row: the model can learn nothing from them."""
    return [column for column in features.columns if features[column].isna().all()]


class CategoryCodes(TransformerMixin, BaseEstimator):
    """Ordinal codes of text columns over vocabularies learned in `fit`.

    `shared=True` gives all columns one vocabulary (Origin and Dest share the airports).
    Fitted on the training fold only; a category never seen there becomes -1, a missing
    value -2, so a new airport in the test set is a value, not a crash. Hash-based
    (pandas Index lookups), about 10x faster than sorting object arrays on every fold.
    """

    def __init__(self, shared: bool = False):
        self.shared = shared

    def fit(self, X, y=None):  # noqa: N803 (scikit-learn's argument names)
        frame = _as_frame(X)
        if self.shared:
            vocabulary = np.unique(np.concatenate([_vocabulary(frame[column]) for column in frame]))
            self.categories_ = [vocabulary for _ in frame.columns]
        else:
            self.categories_ = [_vocabulary(frame[column]) for column in frame]
        self.n_features_in_ = frame.shape[1]
        return self

    def transform(self, X):  # noqa: N803
        check_is_fitted(self, "categories_")
        frame = _as_frame(X)
        codes = np.empty(frame.shape, dtype=np.float64)
        for index, column in enumerate(frame.columns):
            values = frame[column]
            vocabulary = pd.Index(self.categories_[index])
            if isinstance(values.dtype, pd.CategoricalDtype):
                # Each category looked up once, and every row takes its category's code: its text's code.
                lookup = vocabulary.get_indexer(values.cat.categories)
                row_codes = values.cat.codes.to_numpy()
                codes[:, index] = np.where(row_codes < 0, MISSING_CODE, lookup[row_codes])
            else:
                codes[:, index] = vocabulary.get_indexer(values)
                codes[values.isna().to_numpy(), index] = MISSING_CODE
        return codes

    def get_feature_names_out(self, input_features=None):
        return np.asarray(input_features, dtype=object)


def _as_frame(X) -> pd.DataFrame:  # noqa: N803
    return X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=object))


def _vocabulary(values: pd.Series) -> np.ndarray:
    """Give the values' distinct texts, missing left out, sorted (a categorical's: the categories its rows use)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        used = np.unique(values.cat.codes.to_numpy())
        return np.sort(values.cat.categories[used[used >= 0]].to_numpy(dtype=object))
    return np.sort(values.dropna().unique().astype(object))


# Threads a pipeline's fit may use in this process; 1 (serial) unless `local_threads` says more.
_LOCAL_THREADS: ContextVar[int] = ContextVar("skfleet_local_threads", default=1)


@contextlib.contextmanager
def local_threads(threads: int) -> Iterator[None]:
    """Let fits run in this process, in this context, build their trees on THREADS local threads.

    The grid search's refit runs in the client process once the cluster has finished every
    fit, so the client's cores are idle: threads halve it on two cores. Fits sent to the
    cluster don't carry the setting and stay serial, one per worker thread.
    """
    token = _LOCAL_THREADS.set(max(1, threads))
    try:
        yield
    finally:
        _LOCAL_THREADS.reset(token)


def _in_process() -> joblib.parallel_config:
    """Give the joblib context that keeps nested Parallel calls in this process and quiet: serial, or `local_threads`."""
    threads = _LOCAL_THREADS.get()
    if threads > 1:
        return joblib.parallel_config(backend="threading", n_jobs=threads, verbose=0)
    return joblib.parallel_config(backend="sequential", verbose=0)


class InProcessPipeline(Pipeline):
    """A Pipeline whose nested joblib work (encoders, the forest's trees) stays in its process.

    Under joblib's Dask backend every nested `Parallel` call, even with `n_jobs=1`,
    becomes Dask tasks (joblib#1013): each fit then waits on sub-tasks queued behind
    other fits, and a 1-thread worker spends most of its time waiting. The grid search
    already keeps every worker thread busy with one fit, so the fit itself runs serially
    (on `local_threads` for the refit in the client).
    """

    def fit(self, X, y=None, **params):  # noqa: N803
        with _in_process():
            return super().fit(X, y, **params)

    def predict(self, X, **params):  # noqa: N803
        with _in_process():
            return super().predict(X, **params)

    def predict_proba(self, X, **params):  # noqa: N803
        with _in_process():
            return super().predict_proba(X, **params)

    def score(self, X, y=None, sample_weight=None, **params):  # noqa: N803
        with _in_process():
            return super().score(X, y, sample_weight=sample_weight, **params)


@dataclass(frozen=True)
class ModelKind:
    """One kind of model the trainer can search: what differs between estimators, declared once.

    `classifier` gives the unfitted estimator for a seed; its parameters are the grid keys the
    kind accepts (bare names, e.g. max_depth). Which of them shares fits (a forest's
    n_estimators, boosting's max_iter) skfleet/forest_search.py knows from the classifier's type.
    `figures` are the ids of the report's model-specific figures it can draw (every kind gets the
    others), `trusted_types` what its model file holds beyond skops' defaults.
    """

    name: str  # the --model value
    title: str  # in words, for messages and the report
    classifier: Callable[[int], Any]
    default_grid: dict[str, list[Any]]
    figures: tuple[str, ...]
    trusted_types: tuple[str, ...]

    def parameters(self) -> list[str]:
        """Give the grid keys the kind accepts: its classifier's parameters."""
        return sorted(self.classifier(0).get_params(deep=False))


RANDOM_FOREST = ModelKind(
    name="random-forest",
    title="random forest",
    classifier=lambda seed: RandomForestClassifier(random_state=seed),
    default_grid=DEFAULT_GRID,  # the original demo's
    figures=("importances",),
    trusted_types=("sklearn.tree._tree.Tree",),
)
HIST_GRADIENT_BOOSTING = ModelKind(
    name="hist-gradient-boosting",
    title="histogram gradient boosting",
    # Early stopping off: every candidate runs its max_iter iterations, so the first k of the
    # largest are the model of max_iter=k (one fit answers every max_iter), and the search picks
    # max_iter itself on its folds instead of a validation split carved out of each.
    classifier=lambda seed: HistGradientBoostingClassifier(early_stopping=False, random_state=seed),
    default_grid={"max_iter": [50, 100, 200, 400], "learning_rate": [0.1, 0.2, 0.4]},
    figures=(),  # no impurity importances: the page leaves that figure out
    trusted_types=("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
)
KINDS = {kind.name: kind for kind in (RANDOM_FOREST, HIST_GRADIENT_BOOSTING)}
DEFAULT_KIND = RANDOM_FOREST.name
# Every type a model file of skfleet's may hold beyond skops' defaults: our pipeline, our encoder, each kind's.
TRUSTED_MODEL_TYPES = sorted(
    {"skfleet.model.InProcessPipeline", "skfleet.model.CategoryCodes"}.union(*(kind.trusted_types for kind in KINDS.values()))
)


def kind(name: str, source: str = "--model") -> ModelKind:
    """Give the model kind NAME; refuse an unknown one, SOURCE naming where it came from."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise InputError(f"{source}: unknown model {name!r}; the models are {', '.join(KINDS)}") from None


def build_pipeline(random_state: int = 10, model: str = DEFAULT_KIND) -> Pipeline:
    """Give the unfitted pipeline: encoders fitted inside each fold, then the MODEL kind's classifier."""
    encoders = ColumnTransformer(
        [
            ("schedule", "passthrough", list(NUMERIC_FEATURES)),
            ("categories", CategoryCodes(), list(CATEGORY_FEATURES)),
            ("airports", CategoryCodes(shared=True), list(AIRPORT_FEATURES)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return InProcessPipeline(
        [
            ("features", encoders),
            (CLASSIFIER_STEP, kind(model).classifier(random_state)),
        ]
    )
