"""The model, declared: schedule-only features, the leak guard and the scikit-learn pipeline."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder
from sklearn.utils.validation import check_is_fitted

from trainer.data import TARGET_COLUMN
from trainer.errors import LeakError

NUMERIC_FEATURES = ("Month", "DayofMonth", "DayOfWeek", "CRSDepTime", "CRSArrTime", "FlightNum", "Distance")
AIRPORT_FEATURES = ("Origin", "Dest")
CATEGORY_FEATURES = ("UniqueCarrier", "Route")
# The 11 schedule-only features of AIRLINE_DATA.md: all known before departure.
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
    """Give the schedule-only feature matrix X and the 0/1 target y of a prepared frame."""
    features = frame.assign(Route=frame["Origin"] + "_" + frame["Dest"])[list(FEATURES)]
    check_no_leak(features.columns)
    return features, frame[TARGET_COLUMN]


class SharedVocabularyEncoder(TransformerMixin, BaseEstimator):
    """Ordinal codes for several columns over one vocabulary (Origin and Dest share airports).

    Fitted on the training fold only; a category never seen there becomes -1, a
    missing value -2, so a new airport in the test set is a value, not a crash.
    """

    def fit(self, X, y=None):  # noqa: N803 (scikit-learn's argument names)
        values = _as_text(X)
        self.categories_ = np.unique(values[~_missing(values)]).astype(object)
        self.n_features_in_ = values.shape[1]
        return self

    def transform(self, X):  # noqa: N803
        check_is_fitted(self, "categories_")
        values = _as_text(X)
        missing = _missing(values)
        filled = np.where(missing, "", values).astype(object)
        positions = np.searchsorted(self.categories_, filled)
        clipped = np.minimum(positions, len(self.categories_) - 1)
        known = (len(self.categories_) > 0) & (self.categories_[clipped] == filled)
        codes = np.where(known, positions, UNKNOWN_CODE)
        return np.where(missing, MISSING_CODE, codes).astype(np.float64)

    def get_feature_names_out(self, input_features=None):
        return np.asarray(input_features if input_features is not None else AIRPORT_FEATURES, dtype=object)


def _as_text(X) -> np.ndarray:  # noqa: N803
    values = np.asarray(X, dtype=object)
    return values.reshape(-1, 1) if values.ndim == 1 else values


def _missing(values: np.ndarray) -> np.ndarray:
    return pd.isna(pd.DataFrame(values)).to_numpy()


def build_pipeline(random_state: int = 10) -> Pipeline:
    """Give the unfitted pipeline: encoders fitted inside each fold, then the forest."""
    encoders = ColumnTransformer(
        [
            ("schedule", "passthrough", list(NUMERIC_FEATURES)),
            (
                "categories",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=UNKNOWN_CODE,
                    encoded_missing_value=MISSING_CODE,
                ),
                list(CATEGORY_FEATURES),
            ),
            ("airports", SharedVocabularyEncoder(), list(AIRPORT_FEATURES)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return Pipeline(
        [
            ("features", encoders),
            ("classifier", RandomForestClassifier(random_state=random_state)),
        ]
    )
