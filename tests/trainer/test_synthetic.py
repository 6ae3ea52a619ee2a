"""The synthetic generator's planted signal: a working pipeline finds it, shuffled labels don't."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from skfleet import data, model, synthetic


def test_generator_follows_the_spec() -> None:
    frame = synthetic.generate(20_000, seed=0)
    assert (frame["Origin"] != frame["Dest"]).all()
    dates = frame["Month"].astype(str) + "/" + frame["DayofMonth"].astype(str) + "/2008"
    import pandas as pd

    weekday = pd.to_datetime(dates, format="%m/%d/%Y").dt.day_of_week + 1
    assert (weekday == frame["DayOfWeek"]).all()
    pair_distances = frame.groupby(["Origin", "Dest"])["Distance"].nunique()
    assert (pair_distances == 1).all()
    assert frame["Distance"].between(150, 2599).all()
    delayed = (frame["ArrDelay"] >= 15)[frame["ArrDelay"].notna()]
    assert 0.25 < delayed.mean() < 0.35  # about 30 % positives
    assert 0.015 < frame["Cancelled"].mean() < 0.035
    assert frame.loc[frame["Cancelled"] == 1, "ArrDelay"].isna().all()
    assert set(frame["UniqueCarrier"]) == set(synthetic.CARRIERS)


def _search_gain(shuffle: bool) -> float:
    frame = data.load(None, synthetic_rows=2000, synthetic_seed=0).frame
    if shuffle:
        frame = frame.assign(target=np.random.default_rng(7).permutation(frame["target"].to_numpy()))
    train, test = data.split(frame, test_size=0.3, seed=100)
    features, target = model.feature_matrix(train)
    test_features, test_target = model.feature_matrix(test)
    grid = {"classifier__n_estimators": [5, 10], "classifier__max_depth": [4, 8]}
    search = GridSearchCV(model.build_pipeline(), grid, cv=3).fit(features, target)
    baseline = float(np.mean(test_target == target.mode().iloc[0]))
    return search.score(test_features, test_target) - baseline


def test_pipeline_finds_the_planted_signal() -> None:
    assert _search_gain(shuffle=False) >= 0.05


def test_shuffled_labels_carry_no_signal() -> None:
    assert _search_gain(shuffle=True) <= 0.03


@pytest.mark.parametrize("rows", [10, 1000])
def test_every_row_is_valid(rows: int) -> None:
    data.validate(synthetic.generate(rows, seed=rows), "synthetic", "delayed")
