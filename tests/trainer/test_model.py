"""The model: 11 schedule-only features, the leak guard, encoders that tolerate the unseen."""

from __future__ import annotations

from typing import ClassVar

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin, clone

from skfleet import data, model
from skfleet.errors import LeakError


def test_feature_matrix_is_the_eleven_schedule_features() -> None:
    frame = data.load(None, synthetic_rows=500).frame
    features, target = model.feature_matrix(frame)
    assert list(features.columns) == list(model.FEATURES)
    assert len(model.FEATURES) == 11
    assert not set(features.columns) & model.FORBIDDEN_COLUMNS
    assert target.name == "target"
    assert features["Route"].iloc[0] == f"{frame['Origin'].iloc[0]}_{frame['Dest'].iloc[0]}"


def test_original_demo_leak_is_refused() -> None:
    # The original demo kept every column but the label-encoded ones as features: the
    # target (Cancelled) and DepDelay sat in X, and it scored 1.00. The guard refuses it.
    frame = data.load(None, synthetic_rows=500, target="cancelled").frame
    demo_features = frame.drop(columns=["target", "UniqueCarrier", "Origin", "Dest"])
    assert {"Cancelled", "ArrDelay"} <= set(demo_features.columns)
    with pytest.raises(LeakError, match=r"label leak: the feature matrix holds .*ArrDelay.*Cancelled"):
        model.check_no_leak(demo_features.columns)


def test_search_refuses_a_leaky_matrix() -> None:
    from skfleet import search

    frame = data.load(None, synthetic_rows=200).frame
    features, target = model.feature_matrix(frame)
    leaky = features.assign(DepDelay=frame["DepDelay"])
    with pytest.raises(LeakError, match="DepDelay"):
        search.run(
            search.grid_search(model.build_pipeline(), {"classifier__n_estimators": [2]}, _config()), leaky, target, client=None
        )  # the guard runs before any cluster work


def _config():
    from skfleet.config import SearchConfig

    return SearchConfig()


def test_shared_vocabulary_encodes_origin_and_dest_alike() -> None:
    encoder = model.CategoryCodes(shared=True).fit(pd.DataFrame({"Origin": ["JFK", "LGA"], "Dest": ["ORD", "JFK"]}))
    codes = encoder.transform(pd.DataFrame({"Origin": ["ORD", "XYZ", None], "Dest": ["JFK", "LGA", "ORD"]}))
    assert [list(vocabulary) for vocabulary in encoder.categories_] == [["JFK", "LGA", "ORD"]] * 2
    assert codes.tolist() == [[2, 0], [model.UNKNOWN_CODE, 1], [model.MISSING_CODE, 2]]


def test_pipeline_tolerates_unseen_categories() -> None:
    frame = data.load(None, synthetic_rows=600).frame
    features, target = model.feature_matrix(frame)
    pipeline = model.build_pipeline().set_params(classifier__n_estimators=5).fit(features, target)
    unseen = features.head(3).assign(UniqueCarrier="ZZ", Origin="NEW", Dest="OLD", Route="NEW_OLD")
    probabilities = pipeline.predict_proba(unseen)
    assert probabilities.shape == (3, 2)
    assert np.isfinite(probabilities).all()


def test_separate_vocabularies_per_column() -> None:
    encoder = model.CategoryCodes().fit(pd.DataFrame({"UniqueCarrier": ["AA", "DL"], "Route": ["JFK_ORD", "ORD_JFK"]}))
    codes = encoder.transform(pd.DataFrame({"UniqueCarrier": ["DL", "ZZ"], "Route": ["ORD_JFK", "JFK_ORD"]}))
    assert codes.tolist() == [[1, 1], [model.UNKNOWN_CODE, 0]]


class BackendProbe(TransformerMixin, BaseEstimator):
    """A pass-through step that records the joblib backend and job count the forest's fit will get."""

    seen: ClassVar[list[tuple[str, int]]] = []

    def fit(self, X, y=None):
        forest_like = joblib.Parallel()  # what the forest's Parallel(n_jobs=None) gets
        BackendProbe.seen.append((type(forest_like._backend).__name__, forest_like.n_jobs))
        return self

    def transform(self, X):
        return X


def test_local_threads_reach_the_forest_only_inside_the_context() -> None:
    frame = data.load(None, synthetic_rows=2_000).frame
    features, target = model.feature_matrix(frame)
    pipeline = model.build_pipeline().set_params(classifier__n_estimators=8)
    pipeline.steps.insert(1, ("probe", BackendProbe()))
    BackendProbe.seen.clear()
    serial = clone(pipeline).fit(features, target)
    with model.local_threads(2):
        threaded = clone(pipeline).fit(features, target)
    again = clone(pipeline).fit(features, target)
    assert BackendProbe.seen == [("SequentialBackend", 1), ("ThreadingBackend", 2), ("SequentialBackend", 1)]
    # Trees get their seeds before they are built: threads change nothing in the model.
    np.testing.assert_array_equal(serial.predict_proba(features), threaded.predict_proba(features))
    np.testing.assert_array_equal(serial.predict_proba(features), again.predict_proba(features))
