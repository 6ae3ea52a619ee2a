"""ForestGridSearchCV against GridSearchCV: equal scores, ranks, best candidate and refitted model, fewer trees.

Forests share their trees (n_estimators), histogram gradient boosting its stages (max_iter).
"""

from __future__ import annotations

import logging

import joblib
import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.metrics import brier_score_loss, f1_score, make_scorer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, ExtraTreeRegressor

from skfleet import model
from skfleet.forest_search import ForestGridSearchCV, _with_trees


def binary() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=240, n_features=8, n_informative=4, random_state=0)


def three_classes() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=300, n_features=8, n_informative=5, n_classes=3, random_state=1)


def assert_same_search(ours: ForestGridSearchCV, theirs: GridSearchCV, X: np.ndarray) -> None:
    """Every cv_results_ column equal (timings aside), the same best candidate and the same refitted predictions."""
    assert list(ours.cv_results_) == list(theirs.cv_results_)
    for key, expected in theirs.cv_results_.items():
        found = ours.cv_results_[key]
        assert len(found) == len(expected), key
        if key.endswith("_time"):
            continue
        if key.startswith("param") or key == "params":
            assert list(found) == list(expected), key
            continue
        np.testing.assert_array_equal(np.asarray(found), np.asarray(expected), err_msg=key)
    for attribute in ("best_index_", "best_params_", "best_score_", "n_splits_", "multimetric_", "refit_time_"):
        assert hasattr(ours, attribute) == hasattr(theirs, attribute), attribute
        if hasattr(theirs, attribute) and attribute != "refit_time_":
            assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    if theirs.refit:
        predict = "predict_proba" if hasattr(theirs, "predict_proba") else "predict"
        np.testing.assert_array_equal(getattr(ours, predict)(X), getattr(theirs, predict)(X))


def both(estimator, param_grid, X, y, **settings) -> tuple[ForestGridSearchCV, GridSearchCV]:
    ours = ForestGridSearchCV(estimator, param_grid, **settings).fit(X, y)
    theirs = GridSearchCV(estimator, param_grid, **settings).fit(X, y)
    return ours, theirs


CASES = {
    "random forest in a pipeline, accuracy": (
        Pipeline([("scale", StandardScaler()), ("classifier", RandomForestClassifier(random_state=3))]),
        {"classifier__n_estimators": [2, 4, 6, 8, 10], "classifier__max_depth": [2, 4, None]},
        binary,
        {"scoring": "accuracy", "cv": 3},
    ),
    "extra trees, roc_auc, train scores": (
        ExtraTreesClassifier(random_state=7),
        {"n_estimators": [1, 3, 5], "max_features": [0.5, "sqrt"]},
        binary,
        {"scoring": "roc_auc", "cv": 4, "return_train_score": True},
    ),
    "three classes, log loss, bootstrap samples": (
        RandomForestClassifier(random_state=11, max_samples=0.7, class_weight="balanced_subsample"),
        {"n_estimators": [3, 9, 6], "min_samples_leaf": [1, 5]},
        three_classes,
        {"scoring": "neg_log_loss", "cv": 3},
    ),
    "three classes, two metrics, refit on f1": (
        Pipeline([("classifier", ExtraTreesClassifier(random_state=5, bootstrap=True))]),
        {"classifier__n_estimators": [2, 5, 7], "classifier__max_depth": [3, None]},
        three_classes,
        {"scoring": ["accuracy", "f1_macro"], "refit": "f1_macro", "cv": 3, "return_train_score": True},
    ),
    "a list of grids, a metric dict, no refit": (
        RandomForestClassifier(random_state=2),
        [{"n_estimators": [2, 6], "max_depth": [3]}, {"n_estimators": [4, 8, 1], "criterion": ["entropy"]}],
        binary,
        {"scoring": {"acc": "accuracy", "auc": "roc_auc"}, "refit": False, "cv": 3},
    ),
    "string classes, the forest's own score": (
        RandomForestClassifier(random_state=6),
        {"n_estimators": [3, 1, 5], "max_depth": [2, None]},
        lambda: (binary()[0], np.where(binary()[1] == 1, "late", "on time")),
        {"scoring": None, "cv": 3},
    ),
    "string classes, scikit-learn scorer objects for one label": (
        ExtraTreesClassifier(random_state=6),
        {"n_estimators": [3, 1, 5]},
        lambda: (binary()[0], np.where(binary()[1] == 1, "late", "on time")),
        {
            "scoring": {
                "f1 late": make_scorer(f1_score, pos_label="late"),
                "brier late": make_scorer(brier_score_loss, response_method="predict_proba", pos_label="late"),
            },
            "refit": "f1 late",
            "cv": 3,
        },
    ),
    "two outputs (answers through the forest itself), mean squared error": (
        RandomForestRegressor(random_state=8),
        {"n_estimators": [2, 4, 8], "max_depth": [3, None]},
        lambda: make_regression(n_samples=200, n_features=6, n_targets=2, noise=5.0, random_state=0),
        {"scoring": "neg_mean_squared_error", "cv": 3},
    ),
    "a regressor, r2": (
        RandomForestRegressor(random_state=4),
        {"n_estimators": [2, 4, 8], "max_depth": [3, None]},
        lambda: make_regression(n_samples=200, n_features=6, noise=5.0, random_state=0),
        {"scoring": "r2", "cv": 3},
    ),
    # Gradient boosting's stages: one fit of the largest max_iter answers every smaller one.
    "boosting in a pipeline, accuracy": (
        Pipeline(
            [("scale", StandardScaler()), ("classifier", HistGradientBoostingClassifier(early_stopping=False, random_state=3))]
        ),
        {"classifier__max_iter": [3, 6, 12], "classifier__max_depth": [2, None]},
        binary,
        {"scoring": "accuracy", "cv": 3},
    ),
    "boosting, roc_auc on its decision function, train scores, learning rates": (
        HistGradientBoostingClassifier(early_stopping=False, random_state=7),
        {"max_iter": [3, 12, 6], "learning_rate": [0.05, 0.3]},
        binary,
        {"scoring": "roc_auc", "cv": 4, "return_train_score": True},
    ),
    "boosting, three classes, log loss, feature subsampling": (
        HistGradientBoostingClassifier(early_stopping=False, random_state=11, max_features=0.5),
        {"max_iter": [3, 6, 9], "min_samples_leaf": [5, 20]},
        three_classes,
        {"scoring": "neg_log_loss", "cv": 3},
    ),
    "boosting, string classes, two metrics, refit on f1": (
        HistGradientBoostingClassifier(early_stopping=False, random_state=5),
        {"max_iter": [2, 5, 9], "max_depth": [3, None]},
        lambda: (binary()[0], np.where(binary()[1] == 1, "late", "on time")),
        {
            "scoring": {"accuracy": "accuracy", "f1 late": make_scorer(f1_score, pos_label="late")},
            "refit": "f1 late",
            "cv": 3,
        },
    ),
    "a boosting regressor, r2": (
        HistGradientBoostingRegressor(early_stopping=False, random_state=4),
        {"max_iter": [4, 8, 16], "max_depth": [3, None]},
        lambda: make_regression(n_samples=200, n_features=6, noise=5.0, random_state=0),
        {"scoring": "r2", "cv": 3},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_shared_search_equals_grid_search(case: str) -> None:
    estimator, param_grid, data, settings = CASES[case]
    X, y = data()
    ours, theirs = both(estimator, param_grid, X, y, **settings)
    assert_same_search(ours, theirs, X)
    shared = ours.shared_trees_
    assert shared.fallback is None and shared.fits == len(ours.cv_results_["params"]) * ours.n_splits_
    assert shared.forest_fits < shared.fits and shared.trees_built < shared.trees_per_candidate


def test_the_seed_grid_builds_a_third_of_the_trees_and_the_fit_times_add_up() -> None:
    X, y = binary()
    grid = {"n_estimators": [2, 4, 6, 8, 10], "max_depth": [2, 4, 6, 8, 10]}
    search = ForestGridSearchCV(RandomForestClassifier(random_state=10), grid, cv=3).fit(X, y)
    shared = search.shared_trees_
    assert (shared.fits, shared.forest_fits, shared.trees_built, shared.trees_per_candidate) == (75, 15, 150, 450)
    assert shared.describe() == "75 fits answered by 15 forest fits (150 of 450 trees)"
    # Shared out in proportion to trees: a 2-tree candidate is charged a fifth of the 10-tree one.
    mean = search.cv_results_["mean_fit_time"].reshape(5, 5)  # max_depth major, n_estimators minor
    np.testing.assert_allclose(mean[:, 0] * 5, mean[:, 4])


@pytest.mark.parametrize(
    ("tree", "forest"), [(DecisionTreeClassifier, RandomForestClassifier), (ExtraTreeRegressor, ExtraTreesRegressor)]
)
@pytest.mark.parametrize("return_train_score", [False, True])
def test_each_tree_predicts_each_fold_once(monkeypatch, tree, forest, return_train_score: bool) -> None:
    """The smaller sizes' answers come from the largest forest's running sum, not from predicting again."""
    method = "predict_proba" if tree is DecisionTreeClassifier else "predict"
    calls = []
    original = getattr(tree, method)

    def counted(self, X, check_input=True):
        calls.append(len(X))
        return original(self, X, check_input=check_input)

    X, y = binary() if tree is DecisionTreeClassifier else make_regression(n_samples=300, n_features=6, random_state=0)
    grid = {"n_estimators": [2, 4, 6], "max_depth": [2, 3]}
    monkeypatch.setattr(tree, method, counted)
    search = ForestGridSearchCV(forest(random_state=0), grid, cv=3, refit=False, return_train_score=return_train_score)
    search.fit(X, y)
    # 6 trees per max_depth and fold, each over the test fold (and the training rows when they are scored).
    assert len(calls) == 6 * 2 * 3 * (2 if return_train_score else 1)
    assert sum(calls) == 6 * 2 * len(X) * (3 if return_train_score else 1)
    monkeypatch.undo()
    reference = GridSearchCV(forest(random_state=0), grid, cv=3, refit=False, return_train_score=return_train_score).fit(X, y)
    for key in [key for key in reference.cv_results_ if key.endswith(("test_score", "train_score"))]:
        np.testing.assert_array_equal(search.cv_results_[key], reference.cv_results_[key], err_msg=key)


def test_the_trainer_pipeline_on_flights_equals_grid_search(asa_csv) -> None:
    from skfleet import data

    frame = data.load(asa_csv).frame
    X, y = model.feature_matrix(frame)
    pipeline = model.build_pipeline(random_state=10)
    grid = {"classifier__n_estimators": [2, 4, 6], "classifier__max_depth": [2, 6]}
    ours, theirs = both(pipeline, grid, X, y, cv=3)
    assert_same_search(ours, theirs, X)


@pytest.mark.parametrize(
    ("estimator", "reason"),
    [
        (RandomForestClassifier(), "no integer random_state"),
        (RandomForestClassifier(random_state=1, oob_score=True), "oob_score"),
        (RandomForestClassifier(random_state=1, warm_start=True), "warm_start"),
        (HistGradientBoostingClassifier(random_state=1), "early_stopping='auto' may end a model before max_iter"),
        (HistGradientBoostingClassifier(random_state=1, early_stopping=True), "set early_stopping=False"),
        (HistGradientBoostingClassifier(early_stopping=False), "no integer random_state"),
        (HistGradientBoostingClassifier(early_stopping=False, random_state=1, warm_start=True), "warm_start"),
    ],
)
def test_settings_that_break_the_shared_trees_fall_back_to_one_fit_per_candidate(estimator, reason, caplog) -> None:
    X, y = binary()
    size = "max_iter" if isinstance(estimator, HistGradientBoostingClassifier) else "n_estimators"
    grid = {size: [2, 4], "max_depth": [2, 3]}
    with caplog.at_level(logging.INFO, logger="skfleet.forest_search"):
        ours = ForestGridSearchCV(estimator, grid, cv=3).fit(X, y)
    assert reason in ours.shared_trees_.fallback
    assert reason in caplog.text
    assert ours.shared_trees_.forest_fits == ours.shared_trees_.fits == 12
    if estimator.random_state is not None:
        assert_same_search(ours, GridSearchCV(estimator, grid, cv=3).fit(X, y), X)


def accuracy_of_its_own(estimator, X_test, y_test) -> float:
    """A user's scorer: a function that could look at anything the fitted estimator holds."""
    return float((estimator.predict(X_test) == y_test).mean())


@pytest.mark.parametrize(
    ("scoring", "refit"), [(accuracy_of_its_own, True), ({"own": accuracy_of_its_own, "auc": "roc_auc"}, "auc")]
)
def test_a_function_as_scorer_falls_back_and_still_equals_grid_search(scoring, refit) -> None:
    X, y = binary()
    estimator, grid = RandomForestClassifier(random_state=1), {"n_estimators": [2, 4]}
    ours, theirs = both(estimator, grid, X, y, scoring=scoring, refit=refit, cv=3)
    assert "callable scoring" in ours.shared_trees_.fallback
    assert_same_search(ours, theirs, X)


def test_it_is_a_scikit_learn_estimator_like_grid_search() -> None:
    search = ForestGridSearchCV(RandomForestClassifier(random_state=1), {"n_estimators": [1, 2]}, cv=3, n_jobs=1)
    copy = clone(search)
    assert copy.get_params(deep=False).keys() == GridSearchCV(RandomForestClassifier(), {}).get_params(deep=False).keys()
    assert copy.set_params(cv=4).cv == 4
    with pytest.raises(ValueError, match="cv"):
        ForestGridSearchCV(RandomForestClassifier(random_state=1), {"n_estimators": [1, 2]}, cv="three").fit(*binary())


@pytest.mark.cluster
def test_under_joblibs_dask_backend_the_forests_are_cluster_tasks() -> None:
    X, y = binary()
    grid = {"n_estimators": [2, 4, 6], "max_depth": [2, None]}
    estimator = RandomForestClassifier(random_state=3)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, Client(cluster), joblib.parallel_backend("dask"):
        ours = ForestGridSearchCV(estimator, grid, cv=3, n_jobs=-1).fit(X, y)
    assert_same_search(ours, GridSearchCV(estimator, grid, cv=3).fit(X, y), X)
    assert ours.shared_trees_.forest_fits == 6


@pytest.mark.parametrize("X", [binary()[0], three_classes()[0]])
def test_a_boosting_model_cut_to_its_first_stages_is_the_smaller_model(X) -> None:
    """The fallback where staged answers can't serve (the model inside a pipeline's middle): a copy of the first k stages."""
    y = binary()[1] if len(X) == 240 else three_classes()[1]
    largest = HistGradientBoostingClassifier(max_iter=12, early_stopping=False, random_state=2).fit(X, y)
    for k in (1, 5, 12):
        smaller = HistGradientBoostingClassifier(max_iter=k, early_stopping=False, random_state=2).fit(X, y)
        for method in ("predict", "predict_proba", "decision_function"):
            np.testing.assert_array_equal(getattr(_with_trees(largest, [], k), method)(X), getattr(smaller, method)(X))
    assert largest.n_iter_ == 12  # the copy left the fitted model whole


def test_each_boosting_answer_is_read_once_per_fold(monkeypatch) -> None:
    """accuracy (predict) and roc_auc (decision_function): each staged method once per fold, for every max_iter."""
    calls: list[str] = []
    for method in ("staged_predict", "staged_predict_proba", "staged_decision_function"):
        original = getattr(HistGradientBoostingClassifier, method)

        def counted(self, X, original=original, method=method):
            calls.append(method)
            yield from original(self, X)

        monkeypatch.setattr(HistGradientBoostingClassifier, method, counted)
    X, y = binary()
    estimator = HistGradientBoostingClassifier(early_stopping=False, random_state=0)
    search = ForestGridSearchCV(estimator, {"max_iter": [2, 4, 8]}, scoring=["accuracy", "roc_auc"], refit=False, cv=3)
    search.fit(X, y)
    assert sorted(calls) == ["staged_decision_function"] * 3 + ["staged_predict"] * 3
    assert search.shared_trees_.describe() == "9 fits answered by 3 boosting fits (24 of 42 iterations)"
