"""Exact tree chunks: a forest fitted in pieces is the forest, a chunked search GridSearchCV's, and the plan fills the threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dask.config
import joblib
import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream
from sklearn.base import BaseEstimator, clone
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import GridSearchCV

from skfleet import chunks, data, model
from skfleet.checkpoint import FitCheckpoint
from skfleet.forest_search import ForestGridSearchCV, TreeChunks, _fit_chunk, _fit_group, _joined_estimator
from tests.trainer.test_backend import task_functions
from tests.trainer.test_forest_search import assert_same_search


def assert_same_forest(ours: BaseEstimator, theirs: BaseEstimator, X: object) -> None:
    """The same parameters, the same trees node for node, and the same answers to the last bit."""
    mine = ours.get_params(deep=True)
    assert {key: repr(value) for key, value in mine.items()} == {
        key: repr(value) for key, value in theirs.get_params(deep=True).items()
    }
    forest_ours = ours[-1] if hasattr(ours, "steps") else ours
    forest_theirs = theirs[-1] if hasattr(theirs, "steps") else theirs
    assert len(forest_ours.estimators_) == len(forest_theirs.estimators_)
    for tree_ours, tree_theirs in zip(forest_ours.estimators_, forest_theirs.estimators_, strict=True):
        assert tree_ours.random_state == tree_theirs.random_state
        grown, expected = tree_ours.tree_.__getstate__(), tree_theirs.tree_.__getstate__()
        np.testing.assert_array_equal(grown["nodes"], expected["nodes"])
        np.testing.assert_array_equal(grown["values"], expected["values"])
    answer = "predict_proba" if hasattr(theirs, "predict_proba") else "predict"
    np.testing.assert_array_equal(getattr(ours, answer)(X), getattr(theirs, answer)(X))


def fitted_in_chunks(
    estimator: BaseEstimator, X: object, y: object, bounds: list[tuple[int, int]], size_key: str
) -> BaseEstimator:
    size = bounds[-1][1]
    pieces = [
        _fit_chunk(clone(estimator), X, y, train=None, parameters={size_key: size}, size_key=size_key, trees=trees,
                   fit_params=None, error_score="raise")
        for trees in bounds
    ]  # fmt: skip
    return _joined_estimator(pieces, size_key, size)


@pytest.mark.parametrize(
    ("estimator", "bounds"),
    [
        (RandomForestClassifier(random_state=3, class_weight="balanced_subsample"), [(0, 1), (1, 7), (7, 12)]),
        (RandomForestClassifier(random_state=0, max_samples=0.5, max_features=None), [(0, 6), (6, 12)]),
        (ExtraTreesRegressor(random_state=5, bootstrap=False, max_depth=6), [(0, 4), (4, 8), (8, 12)]),
        (RandomForestRegressor(random_state=1, min_samples_leaf=3), [(index, index + 1) for index in range(12)]),
    ],
    ids=["balanced subsample", "half the rows", "extra trees", "one tree a chunk"],
)
def test_a_forest_fitted_in_chunks_is_the_forest(estimator: BaseEstimator, bounds: list[tuple[int, int]]) -> None:
    classifier = isinstance(estimator, RandomForestClassifier)
    X, y = (
        make_classification(n_samples=300, n_features=9, n_informative=5, n_classes=3, random_state=2)
        if classifier
        else make_regression(n_samples=300, n_features=9, random_state=2)
    )
    whole = clone(estimator).set_params(n_estimators=12).fit(X, y)
    assert_same_forest(fitted_in_chunks(estimator, X, y, bounds, "n_estimators"), whole, X)


def test_the_trainers_pipeline_fitted_in_chunks_is_its_pipeline(asa_csv: Path) -> None:
    X, y = model.feature_matrix(data.load(asa_csv).frame)
    pipeline = model.build_pipeline(random_state=10).set_params(classifier__max_depth=8)
    whole = clone(pipeline).set_params(classifier__n_estimators=10).fit(X, y)
    assert_same_forest(fitted_in_chunks(pipeline, X, y, [(0, 3), (3, 10)], "classifier__n_estimators"), whole, X)


def test_a_chunk_whose_fit_fails_says_so_and_raises_where_asked() -> None:
    X, y = make_classification(n_samples=50, random_state=0)
    broken = RandomForestClassifier(random_state=0, min_samples_split=1)  # at least 2
    settings = {"train": None, "parameters": {"n_estimators": 4}, "size_key": "n_estimators", "trees": (2, 4), "fit_params": None}
    failed = _fit_chunk(clone(broken), X, y, error_score=np.nan, **settings)
    assert failed.fitted is None and "min_samples_split" in failed.fit_error
    with pytest.raises(ValueError, match="min_samples_split"):
        _fit_chunk(clone(broken), X, y, error_score="raise", **settings)


def seed_grid_works(rows: int, folds: int = 3) -> list[chunks.Work]:
    """The seed grid's 15 forests (n_estimators 2...10, max_depth 2...10, cv=3) on ROWS training rows, modelled."""
    forest = model.build_pipeline()[-1]
    train = rows * (folds - 1) // folds
    return [
        chunks.forest_work(clone(forest).set_params(max_depth=depth), 10, train, len(model.FEATURES))
        for depth in (2, 4, 6, 8, 10)
        for _ in range(folds)
    ]


@pytest.mark.parametrize("rows", [1_360_882, 6_804_410])  # the training rows of 2M and 10M
@pytest.mark.parametrize("threads", [16, 32, 100])
def test_the_seed_grid_keeps_every_thread_busy_where_15_forests_could_not(rows: int, threads: int) -> None:
    works = seed_grid_works(rows)
    whole = [work.overhead + work.trees * work.tree_cost for work in works]
    split = chunks.chunk_costs(works, chunks.plan(works, threads))
    today = chunks.efficiency(whole, threads)
    assert today <= 15 / threads  # one task a forest: most threads idle
    # The useful work (what one task a forest costs) over the threads' time, the chunks' own overheads not counted.
    useful = sum(whole) / (threads * chunks.makespan(split, threads))
    if threads <= 32:
        assert max(split) <= 1.2 * sum(split) / threads
        assert chunks.efficiency(split, threads) >= 0.9 and useful >= 0.85, (chunks.efficiency(split, threads), useful)
    else:  # 150 trees on 100 threads: mostly one tree a task, and what each task costs beside it shows
        assert useful >= 6 * today


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_on_few_threads_the_seed_grids_forests_stay_whole(threads: int) -> None:
    assert chunks.plan(seed_grid_works(1_360_882), threads) == [1] * 15


def test_the_refit_is_split_between_the_threads() -> None:
    forest = model.build_pipeline()[-1].set_params(max_depth=10)
    (work,) = [chunks.forest_work(forest, 10, 1_360_882, len(model.FEATURES))]
    assert chunks.plan([work], 2) == [2]
    assert chunks.plan([work], 16) == [10]
    assert chunks.ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]


def test_how_a_forest_is_fitted_is_not_part_of_its_checkpoint_key(tmp_path: Path) -> None:
    X, y = make_classification(n_samples=60, random_state=0)
    search = ForestGridSearchCV(RandomForestClassifier(random_state=0), {"n_estimators": [2, 4]}, cv=2)
    checkpoint = FitCheckpoint(tmp_path, X, y, search)
    kwargs = {"train": np.arange(30), "test": np.arange(30, 60), "members": [{"n_estimators": 4}], "size_key": "n_estimators"}
    plan = TreeChunks({"n_estimators": 4}, "n_estimators", [(0, 2), (2, 4)], [-1, -2], "raise")
    args = (search.estimator, X, y)
    assert checkpoint.key(_fit_group, args, {**kwargs, "chunks": plan}) == checkpoint.key(_fit_group, args, kwargs) is not None


@pytest.fixture(scope="module")
def eight_threads() -> Iterator[Client]:
    with (
        dask.config.set({"distributed.scheduler.active-memory-manager.start": False}),
        LocalCluster(n_workers=4, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


GRID = {"n_estimators": [4, 8, 12], "max_depth": [3, None]}


@pytest.mark.cluster
def test_a_search_with_fewer_forests_than_threads_fits_them_in_chunks_to_grid_searchs_results(eight_threads: Client) -> None:
    X, y = make_classification(n_samples=400, n_features=10, n_informative=6, random_state=0)
    forest = RandomForestClassifier(random_state=7)
    with get_task_stream(eight_threads) as stream, joblib.parallel_backend("skfleet"):
        ours = ForestGridSearchCV(forest, GRID, cv=2, n_jobs=-1, scoring=["accuracy", "roc_auc"], refit="roc_auc").fit(X, y)
    functions = task_functions(stream.data)
    # 2 groups x 2 folds: 4 forests for 8 threads, each in chunks, then joined and scored; the refit too.
    assert functions["_fit_group"] == 4 and functions["_join_refit"] == 1
    assert functions["_fit_chunk"] == ours.shared_trees_.chunk_tasks + ours.shared_trees_.refit_tasks
    assert ours.shared_trees_.chunk_tasks > 4 and ours.shared_trees_.refit_tasks > 1
    assert "fitted in" in ours.shared_trees_.describe()
    theirs = GridSearchCV(forest, GRID, cv=2, scoring=["accuracy", "roc_auc"], refit="roc_auc").fit(X, y)
    assert_same_search(ours, theirs, X)
    assert_same_forest(ours.best_estimator_, theirs.best_estimator_, X)
