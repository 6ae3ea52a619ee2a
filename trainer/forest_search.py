"""A drop-in GridSearchCV that fits one forest per group of candidates differing only in `n_estimators`.

A random forest draws each tree's seed from its `random_state` in turn, so the forest of k
trees is exactly the first k trees of any larger forest with the same seed and data: the same
trees, and `predict_proba` averaged over them to the same bits. A grid over `n_estimators`
(2, 4, …, 10) times other parameters therefore needs, per fold and per combination of the other
parameters, one forest of the largest size: its first k trees answer every smaller candidate.
The seed grid (5 × 5, cv=3) builds 150 trees instead of 450.

`ForestGridSearchCV` takes GridSearchCV's parameters and gives its `cv_results_` (keys, rows,
order), scores, `best_*_` and refitted `best_estimator_` exactly: the test scores are equal, not
close (tests/trainer/test_forest_search.py). Only the timing columns differ: a shared forest's
fit time is shared out between the candidates it answers in proportion to their trees, so the
column still adds up to the time spent. Where sharing could change a result (no integer seed,
`warm_start`, `oob_score`, a callable scorer, an estimator that is not one of scikit-learn's
forests), it says why in the log and runs GridSearchCV's own per-candidate fits.
"""

from __future__ import annotations

import copy
import logging
import numbers
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import GridSearchCV, ParameterGrid, check_cv
from sklearn.model_selection._validation import _fit_and_score, _score, _warn_or_raise_about_fit_failures
from sklearn.pipeline import Pipeline
from sklearn.utils import indexable
from sklearn.utils.metaestimators import _safe_split
from sklearn.utils.validation import _check_method_params

log = logging.getLogger(__name__)

FORESTS = (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor)
SIZE = "n_estimators"


@dataclass(frozen=True)
class SharedTrees:
    """What a search shared: fits answered, forests fitted, trees built against one fit per candidate."""

    fits: int
    forest_fits: int
    trees_built: int
    trees_per_candidate: int
    fallback: str | None  # why every candidate was fitted on its own, or None

    def describe(self) -> str:
        """Give one line for a log or a summary: "75 fits answered by 15 forest fits (150 of 450 trees)"."""
        if self.fallback:
            return f"{self.fits} fits, one per candidate ({self.fallback})"
        return (
            f"{self.fits} fits answered by {self.forest_fits} forest fits "
            f"({self.trees_built:,} of {self.trees_per_candidate:,} trees)"
        )


class ForestGridSearchCV(GridSearchCV):
    """GridSearchCV, with the candidates that differ only in a forest's `n_estimators` answered by one forest.

    Same parameters, attributes and results as `sklearn.model_selection.GridSearchCV`, plus
    `shared_trees_` (a `SharedTrees`). Runs its fits through joblib like GridSearchCV, so
    `joblib.parallel_backend("dask")` sends them to a Dask cluster; each task is one forest,
    the largest first.
    """

    def fit(self, X: Any, y: Any = None, **params: Any) -> ForestGridSearchCV:  # noqa: N803 (scikit-learn's names)
        """Run the search; give self."""
        self._validate_params()
        candidates = list(ParameterGrid(self.param_grid))
        reason = self._why_not_shared(candidates)
        if reason is not None:
            log.info("fitting every candidate on its own: %s", reason)
            super().fit(X, y, **params)
            n_fits = len(candidates) * self.n_splits_
            trees = sum(_trees(self.estimator, candidate) for candidate in candidates) * self.n_splits_
            self.shared_trees_ = SharedTrees(n_fits, n_fits, trees, trees, reason)
            return self
        return self._fit_shared(candidates, X, y, **params)

    def _why_not_shared(self, candidates: list[dict[str, Any]]) -> str | None:
        """Give why the forests can't be shared (a phrase), or None when they can."""
        if callable(self.scoring):
            return "a callable scoring may look at more of the fitted estimator than its predictions"
        size_keys = {key for candidate in candidates for key in candidate if _is_size(key)}
        if len(size_keys) != 1:
            return f"the grid varies {len(size_keys)} n_estimators parameters, not one"
        (size_key,) = size_keys
        if any(size_key not in candidate for candidate in candidates):
            return f"some of the grid's candidates leave {size_key} at its default"
        for candidate in candidates:
            forest = _forest(clone(self.estimator).set_params(**candidate), size_key)
            if forest is None:
                return f"{size_key} is not a parameter of a scikit-learn forest inside a Pipeline"
            settings = forest.get_params(deep=False)
            if not isinstance(settings["random_state"], numbers.Integral):
                return "the forest has no integer random_state, so no two fits grow the same trees"
            if settings["warm_start"]:
                return "warm_start grows a forest from the one before"
            if settings["oob_score"]:
                return "oob_score is computed over all of a forest's trees"
        return None

    def _fit_shared(self, candidates: list[dict[str, Any]], X: Any, y: Any, **params: Any) -> ForestGridSearchCV:  # noqa: N803
        scorers, refit_metric = self._get_scorers()
        X, y = indexable(X, y)  # noqa: N806
        params = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(params)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        self._checked_cv_orig = cv
        self.n_splits_ = cv.get_n_splits(X, y, **routed.splitter.split)
        splits = list(cv.split(X, y, **routed.splitter.split))
        if len(splits) != self.n_splits_:
            raise ValueError(f"cv.split and cv.get_n_splits return inconsistent results: {len(splits)} and {self.n_splits_}")
        base_estimator = clone(self.estimator)
        size_key = next(key for key in candidates[0] if _is_size(key))
        groups = _groups(candidates, size_key)
        if self.verbose > 0:
            print(
                f"Fitting {self.n_splits_} folds for each of {len(candidates)} candidates, totalling "
                f"{len(candidates) * self.n_splits_} fits, with {len(groups) * self.n_splits_} forests"
            )
        # One task per group and fold, the largest forests first: they end last otherwise.
        tasks = sorted(
            ((members, split_index) for members in groups for split_index in range(len(splits))),
            key=lambda task: -candidates[task[0][0]][size_key],
        )
        settings = {
            "scorer": scorers,
            "fit_params": routed.estimator.fit,
            "score_params": routed.scorer.score,
            "return_train_score": self.return_train_score,
            "error_score": self.error_score,
        }
        answers = Parallel(n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch)(
            delayed(_fit_group)(
                clone(base_estimator), X, y, splits[split_index], [candidates[i] for i in members], size_key, settings
            )
            for members, split_index in tasks
        )
        by_fit: dict[tuple[int, int], dict[str, Any]] = {}
        for (members, split_index), results in zip(tasks, answers, strict=True):
            for candidate_index, result in zip(members, results, strict=True):
                by_fit[candidate_index, split_index] = result
        out = [by_fit[c, s] for c in range(len(candidates)) for s in range(self.n_splits_)]
        _warn_or_raise_about_fit_failures(out, self.error_score)
        results = self._format_results(candidates, self.n_splits_, out, defaultdict(list))
        self.multimetric_ = isinstance(out[0]["test_scores"], dict)
        self._select_and_refit(results, refit_metric, base_estimator, X, y, routed.estimator.fit)
        self.scorer_ = getattr(scorers, "_scorers", scorers)
        self.cv_results_ = results
        sizes = [candidate[size_key] for candidate in candidates]
        self.shared_trees_ = SharedTrees(
            fits=len(candidates) * self.n_splits_,
            forest_fits=len(tasks),
            trees_built=sum(max(sizes[i] for i in members) for members in groups) * self.n_splits_,
            trees_per_candidate=sum(sizes) * self.n_splits_,
            fallback=None,
        )
        log.info("%s", self.shared_trees_.describe())
        return self

    def _select_and_refit(
        self,
        results: dict[str, Any],
        refit_metric: str,
        base_estimator: BaseEstimator,
        X: Any,  # noqa: N803
        y: Any,
        fit_params: dict,
    ) -> None:
        """Set best_index_, best_score_, best_params_ and the refitted best_estimator_ as GridSearchCV does."""
        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(self.refit, refit_metric, results)
            if not callable(self.refit):
                self.best_score_ = results[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]
        if self.refit:
            self.best_estimator_ = clone(base_estimator).set_params(**clone(self.best_params_, safe=False))
            started = time.time()
            if y is None:
                self.best_estimator_.fit(X, **fit_params)
            else:
                self.best_estimator_.fit(X, y, **fit_params)
            self.refit_time_ = time.time() - started
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_


def _groups(candidates: list[dict[str, Any]], size_key: str) -> list[list[int]]:
    """Give the candidates' indices grouped by every parameter but SIZE_KEY, each group largest first."""
    found: dict[tuple, list[int]] = {}
    for index, candidate in enumerate(candidates):
        rest = tuple(sorted((key, repr(value)) for key, value in candidate.items() if key != size_key))
        found.setdefault(rest, []).append(index)
    return [sorted(members, key=lambda i: -candidates[i][size_key]) for members in found.values()]


def _fit_group(
    estimator: BaseEstimator,
    X: Any,  # noqa: N803
    y: Any,
    split: tuple[np.ndarray, np.ndarray],
    members: list[dict[str, Any]],
    size_key: str,
    settings: dict[str, Any],
) -> list[dict[str, Any]]:
    """Fit the group's largest forest on one fold; give every member's `_fit_and_score` result, in order."""
    train, test = split
    largest = _fit_and_score(
        estimator,
        X,
        y,
        train=train,
        test=test,
        parameters=members[0],
        verbose=0,
        return_n_test_samples=True,
        return_times=True,
        return_estimator=True,
        **settings,
    )
    fitted = largest.pop("estimator")
    if largest["fit_error"] is not None:
        # Exact or not at all: a smaller forest might have fitted; fit each on its own.
        return [largest] + [
            _fit_and_score(
                clone(estimator), X, y, train=train, test=test, parameters=member, verbose=0,
                return_n_test_samples=True, return_times=True, **settings,
            )
            for member in members[1:]
        ]  # fmt: skip
    sizes = [member[size_key] for member in members]
    X_train, y_train = _safe_split(fitted, X, y, train)  # noqa: N806
    X_test, y_test = _safe_split(fitted, X, y, test, train)  # noqa: N806
    score_train = _check_method_params(X, params=settings["score_params"] or {}, indices=train)
    score_test = _check_method_params(X, params=settings["score_params"] or {}, indices=test)
    results = []
    for size in sizes:
        if size == sizes[0]:
            result = dict(largest)
        else:
            prefix = _with_trees(fitted, size_key.split("__")[:-1], size)
            started = time.time()
            scorer, error_score = settings["scorer"], settings["error_score"]
            result = {"fit_error": None, "test_scores": _score(prefix, X_test, y_test, scorer, score_test, error_score)}
            result["score_time"] = time.time() - started
            if settings["return_train_score"]:
                result["train_scores"] = _score(prefix, X_train, y_train, scorer, score_train, error_score)
            result["n_test_samples"] = largest["n_test_samples"]
        # The forest's fit time, shared out in proportion to the trees each candidate takes from it.
        result["fit_time"] = largest["fit_time"] * size / sum(sizes)
        results.append(result)
    return results


def _forest(estimator: BaseEstimator, size_key: str) -> BaseEstimator | None:
    """Give the forest SIZE_KEY sets, when it is a scikit-learn forest reached through Pipelines only."""
    path = size_key.split("__")[:-1]
    node = estimator
    for name in path:
        if not isinstance(node, Pipeline) or name not in node.named_steps:
            return None
        node = node.named_steps[name]
    return node if type(node) in FORESTS else None


def _with_trees(fitted: BaseEstimator, path: list[str], size: int) -> BaseEstimator:
    """Give a shallow copy of FITTED whose forest (at PATH) keeps only its first SIZE trees."""
    if not path:
        forest = copy.copy(fitted)
        forest.estimators_ = fitted.estimators_[:size]
        forest.n_estimators = size
        return forest
    pipeline = copy.copy(fitted)
    name = path[0]
    pipeline.steps = [
        (step_name, _with_trees(step, path[1:], size) if step_name == name else step) for step_name, step in fitted.steps
    ]
    return pipeline


def _is_size(key: str) -> bool:
    """Say whether the grid key KEY sets an ensemble's size (`n_estimators`, `classifier__n_estimators`)."""
    return key.split("__")[-1] == SIZE


def _trees(estimator: BaseEstimator, candidate: dict[str, Any]) -> int:
    """Give the trees one fit of CANDIDATE builds: its n_estimators, else its forest's default (0 without a forest)."""
    key = next((key for key in candidate if _is_size(key)), None)
    if key is not None:
        return int(candidate[key])
    configured = clone(estimator).set_params(**candidate)
    sizes = [
        value for key, value in configured.get_params(deep=True).items() if _is_size(key) and _forest(configured, key) is not None
    ]
    return int(sizes[0]) if sizes else 0
