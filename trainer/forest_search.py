"""A drop-in GridSearchCV that fits one model per group of candidates differing only in the ensemble's size.

A random forest draws each tree's seed from its `random_state` in turn, so the forest of k
trees is exactly the first k trees of any larger forest with the same seed and data: the same
trees, and `predict_proba` averaged over them to the same bits. A grid over `n_estimators`
(2, 4, …, 10) times other parameters therefore needs, per fold and per combination of the other
parameters, one forest of the largest size: its first k trees answer every smaller candidate.
The seed grid (5 × 5, cv=3) builds 150 trees instead of 450.

Gradient boosting has the same prefix property in its stages: without early stopping,
`HistGradientBoostingClassifier(max_iter=n)` after k iterations (`staged_predict_proba`,
`staged_decision_function`, `staged_predict`) is the model of `max_iter=k`, to the last bit.
One boosting fit of the largest `max_iter` per group and fold answers every `max_iter`.

Predictions are shared too: a forest's trees predict a fold once, into a running sum whose
value after k trees, divided by k, is the k-tree forest's own `predict_proba` (or `predict`) to
the last bit; a boosting model's stages are read once per answer the scorers ask for.

`ForestGridSearchCV` (the name from when it shared forests only) takes GridSearchCV's parameters
and gives its `cv_results_` (keys, rows, order), scores, `best_*_` and refitted `best_estimator_`
exactly: the test scores are equal, not close (tests/trainer/test_forest_search.py). Only the
timing columns differ: a shared model's fit and prediction time is shared out between the
candidates it answers in proportion to their size, so the columns still add up to the time
spent. Where sharing could change a result (no integer seed, `warm_start`, `oob_score`, early
stopping, a scoring function of the user's, an estimator that is not one of scikit-learn's
forests or histogram gradient boosting models), it says why in the log and runs GridSearchCV's
own per-candidate fits.
"""

from __future__ import annotations

import copy
import logging
import numbers
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import parallel_config
from joblib.parallel import get_active_backend
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone, is_classifier
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.metrics._scorer import _Scorer
from sklearn.model_selection import GridSearchCV, ParameterGrid, check_cv
from sklearn.model_selection._validation import _fit_and_score, _score, _warn_or_raise_about_fit_failures
from sklearn.pipeline import Pipeline
from sklearn.utils import indexable
from sklearn.utils.metaestimators import _safe_split, available_if
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import _check_method_params, _num_features, _num_samples

from skfleet import chunks as chunking
from skfleet.subtasks import Call, Subtasks

log = logging.getLogger(__name__)

FORESTS = (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor)
# The bound of the seeds a forest draws for its trees (scikit-learn's, sklearn/ensemble/_forest.py).
SEED_BOUND = np.iinfo(np.int32).max
BOOSTING = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)


@dataclass(frozen=True)
class Ensemble:
    """A kind of model whose smaller sizes are prefixes of its largest: its types, its size parameter, its unit."""

    name: str  # "forest", "boosting": the word a log line uses
    types: tuple[type, ...]
    size: str  # the parameter a prefix answers: n_estimators, max_iter
    unit: str  # what the size counts: trees, iterations

    def why_not(self, settings: dict[str, Any]) -> str | None:
        """Give why a model with these SETTINGS (get_params) has no exact prefixes (a phrase), or None."""
        if not isinstance(settings["random_state"], numbers.Integral):
            return f"the {self.name} has no integer random_state, so no two fits grow the same trees"
        if settings["warm_start"]:
            return f"warm_start grows a {self.name} from the one before"
        if settings.get("oob_score"):
            return "oob_score is computed over all of a forest's trees"
        if "early_stopping" in settings and settings["early_stopping"] is not False:
            return (
                f"early_stopping={settings['early_stopping']!r} may end a model before max_iter, so its first k iterations "
                "are not the model of max_iter=k (set early_stopping=False)"
            )
        return None


FOREST = Ensemble("forest", FORESTS, "n_estimators", "trees")
GRADIENT_BOOSTING = Ensemble("boosting", BOOSTING, "max_iter", "iterations")
ENSEMBLES = (FOREST, GRADIENT_BOOSTING)
SIZES = frozenset(ensemble.size for ensemble in ENSEMBLES)


@dataclass(frozen=True)
class SharedTrees:
    """What a search shared: fits answered, models fitted, trees (or boosting iterations) built against one fit per candidate."""

    fits: int
    forest_fits: int  # the models fitted: forests, or boosting models
    trees_built: int
    trees_per_candidate: int
    fallback: str | None  # why every candidate was fitted on its own, or None
    # What was shared: "forest" (trees) or "boosting" (iterations). Last, with a default: older results.json still read.
    ensemble: str = FOREST.name
    # The tasks the forests were fitted in, split into exact chunks for threads that would idle (0: one task a fit),
    # and the refit's (0: refitted in the calling process). Last, with defaults, as ensemble.
    chunk_tasks: int = 0
    refit_tasks: int = 0

    def describe(self) -> str:
        """Give one line for a log or a summary: "75 fits answered by 15 forest fits (150 of 450 trees)"."""
        if self.fallback:
            return f"{self.fits} fits, one per candidate ({self.fallback})"
        unit = next((known.unit for known in ENSEMBLES if known.name == self.ensemble), FOREST.unit)
        line = (
            f"{self.fits} fits answered by {self.forest_fits} {self.ensemble} fits "
            f"({self.trees_built:,} of {self.trees_per_candidate:,} {unit})"
        )
        if self.chunk_tasks:
            line += f", fitted in {self.chunk_tasks} tasks of exact chunks of trees"
        return line


class ForestGridSearchCV(GridSearchCV):
    """GridSearchCV, with the candidates that differ only in an ensemble's size answered by one fit of the largest.

    The size: a forest's `n_estimators`, a histogram gradient boosting model's `max_iter`.

    Same parameters, attributes and results as `sklearn.model_selection.GridSearchCV`, plus
    `shared_trees_` (a `SharedTrees`). Runs its fits through joblib like GridSearchCV, so
    `joblib.parallel_backend("dask")` sends them to a Dask cluster; each task is one model,
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
            self.shared_trees_ = SharedTrees(n_fits, n_fits, trees, trees, reason, _ensemble_of(self.estimator, candidates).name)
            return self
        return self._fit_shared(candidates, X, y, **params)

    def forests_per_fold(self) -> int | None:
        """Give how many forests each fold will fit, or None when every candidate will be fitted on its own."""
        candidates = list(ParameterGrid(self.param_grid))
        if self._why_not_shared(candidates) is not None:
            return None
        size_key = next(key for key in candidates[0] if _is_size(key))
        return len(_groups(candidates, size_key))

    def ensemble(self) -> Ensemble:
        """Give the kind of model the grid's size parameter sizes: FOREST or GRADIENT_BOOSTING (FOREST where none does)."""
        return _ensemble_of(self.estimator, list(ParameterGrid(self.param_grid)))

    def _why_not_shared(self, candidates: list[dict[str, Any]]) -> str | None:
        """Give why the forests can't be shared (a phrase), or None when they can."""
        if not _scores_predictions_only(self.scoring):
            return "a callable scoring (not a scikit-learn scorer) may look at more of the fitted estimator than its predictions"
        size_keys = {key for candidate in candidates for key in candidate if _is_size(key)}
        sizes = " or ".join(sorted(SIZES))
        if not size_keys:
            return f"the grid does not set {sizes}"
        if len(size_keys) > 1:
            return f"the grid sets {len(size_keys)} size parameters ({', '.join(sorted(size_keys))}), not one"
        (size_key,) = size_keys
        if any(size_key not in candidate for candidate in candidates):
            return f"some of the grid's candidates leave {size_key} at its default"
        for candidate in candidates:
            found = _ensemble(clone(self.estimator).set_params(**candidate), size_key)
            if found is None:
                return (
                    f"{size_key} is not the size of a scikit-learn forest (n_estimators) or histogram gradient "
                    "boosting model (max_iter) inside a Pipeline"
                )
            model, ensemble = found
            reason = ensemble.why_not(model.get_params(deep=False))
            if reason is not None:
                return reason
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
        ensemble = _ensemble_of(base_estimator, candidates)
        if self.verbose > 0:
            print(
                f"Fitting {self.n_splits_} folds for each of {len(candidates)} candidates, totalling "
                f"{len(candidates) * self.n_splits_} fits, with {len(groups) * self.n_splits_} {ensemble.name} fits"
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
        # Where the threads outnumber the forests, each forest is fitted in exact chunks of its trees.
        works = [
            _work(base_estimator, candidates[members[0]], size_key, len(splits[split_index][0]), _num_features(X))
            for members, split_index in tasks
        ]
        chunked = _tree_chunks(works, [candidates[members[0]] for members, _ in tasks], size_key, self.error_score)
        # Keyword arguments like GridSearchCV's `_fit_and_score` tasks: a checkpoint keys them the same way.
        answers = Parallel(n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch)(
            delayed(_fit_group)(
                clone(base_estimator),
                X,
                y,
                train=splits[split_index][0],
                test=splits[split_index][1],
                members=[candidates[i] for i in members],
                size_key=size_key,
                **settings,
                **({"chunks": chunked[index]} if chunked else {}),
            )
            for index, (members, split_index) in enumerate(tasks)
        )
        by_fit: dict[tuple[int, int], dict[str, Any]] = {}
        for (members, split_index), results in zip(tasks, answers, strict=True):
            for candidate_index, result in zip(members, results, strict=True):
                by_fit[candidate_index, split_index] = result
        out = [by_fit[c, s] for c in range(len(candidates)) for s in range(self.n_splits_)]
        _warn_or_raise_about_fit_failures(out, self.error_score)
        results = self._format_results(candidates, self.n_splits_, out, defaultdict(list))
        self.multimetric_ = isinstance(out[0]["test_scores"], dict)
        refit_tasks = self._select_and_refit(results, refit_metric, base_estimator, X, y, routed.estimator.fit, size_key)
        self.scorer_ = getattr(scorers, "_scorers", scorers)
        self.cv_results_ = results
        sizes = [candidate[size_key] for candidate in candidates]
        self.shared_trees_ = SharedTrees(
            fits=len(candidates) * self.n_splits_,
            forest_fits=len(tasks),
            trees_built=sum(max(sizes[i] for i in members) for members in groups) * self.n_splits_,
            trees_per_candidate=sum(sizes) * self.n_splits_,
            fallback=None,
            ensemble=ensemble.name,
            chunk_tasks=sum(len(chunks.trees) for chunks in chunked) if chunked else 0,
            refit_tasks=refit_tasks,
        )
        log.debug("%s", self.shared_trees_.describe())
        return self

    def _select_and_refit(
        self,
        results: dict[str, Any],
        refit_metric: str,
        base_estimator: BaseEstimator,
        X: Any,  # noqa: N803
        y: Any,
        fit_params: dict,
        size_key: str,
    ) -> int:
        """Set best_index_, best_score_, best_params_ and the refitted best_estimator_ as GridSearchCV does.

        Give the tasks the refit ran in on the cluster: 0 when it ran here, as GridSearchCV's does.
        """
        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(self.refit, refit_metric, results)
            if not callable(self.refit):
                self.best_score_ = results[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]
        if not self.refit:
            return 0
        self.best_estimator_ = clone(base_estimator).set_params(**clone(self.best_params_, safe=False))
        started = time.time()
        work = _work(base_estimator, self.best_params_, size_key, _num_samples(X), _num_features(X))
        chunked = _tree_chunks([work], [self.best_params_], size_key, "raise")
        if chunked:
            # On the cluster, in exact chunks: one task joins them into the forest that comes back.
            (self.best_estimator_,) = Parallel(n_jobs=self.n_jobs)(
                [delayed(_join_refit)(self.best_estimator_, X, y, chunks=chunked[0], size_key=size_key, fit_params=fit_params)]
            )
        elif y is None:
            self.best_estimator_.fit(X, **fit_params)
        else:
            self.best_estimator_.fit(X, y, **fit_params)
        self.refit_time_ = time.time() - started
        if hasattr(self.best_estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.best_estimator_.feature_names_in_
        return len(chunked[0].trees) if chunked else 0


def _scores_predictions_only(scoring: Any) -> bool:
    """Say whether SCORING asks the fitted estimator for its predictions and nothing else.

    Scorer names, and scikit-learn's own scorer objects (`make_scorer`, `get_scorer`), call
    predict, predict_proba or score and compare; a function of the user's may look at anything.
    """
    if scoring is None or isinstance(scoring, str):
        return True
    if isinstance(scoring, list | tuple | set):
        return all(isinstance(name, str) for name in scoring)
    if isinstance(scoring, dict):
        return all(_scores_predictions_only(scorer) for scorer in scoring.values())
    return type(scoring) is _Scorer  # exactly scikit-learn's: a subclass may score otherwise


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
    *,
    train: np.ndarray,
    test: np.ndarray,
    members: list[dict[str, Any]],
    size_key: str,
    chunks: TreeChunks | list[Chunk] | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Fit the group's largest forest on one fold; give every member's `_fit_and_score` result, in order.

    SETTINGS are `_fit_and_score`'s scorer, fit_params, score_params, return_train_score and error_score.
    CHUNKS: the forest's exact chunks, fitted (on the cluster, as tasks of their own) or to fit here; they are
    joined into the forest instead of fitting it.
    """
    scorer, error_score = settings["scorer"], settings["error_score"]
    if chunks is None:
        # Fit the largest forest as GridSearchCV's task would, and score it below with the rest.
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
            **{**settings, "scorer": _unscored, "return_train_score": False},
        )
    else:
        if isinstance(chunks, TreeChunks):
            chunks = chunks.run([estimator, X, y], {"train": train, "fit_params": settings["fit_params"]})
        largest = _joined(chunks, size_key, members[0][size_key], test)
    if largest["fit_error"] is not None:
        # Exact or not at all: a smaller forest might have fitted; fit each on its own, as GridSearchCV does.
        return [
            _fit_and_score(
                clone(estimator), X, y, train=train, test=test, parameters=member, verbose=0,
                return_n_test_samples=True, return_times=True, **settings,
            )
            for member in members
        ]  # fmt: skip
    fitted = largest["estimator"]
    path = size_key.split("__")[:-1]
    sizes = [member[size_key] for member in members]
    # The training rows are copied out only when they are scored: a fold's copy is most of a task's memory.
    scored = [("test", *_safe_split(fitted, X, y, test, train), test)]
    if settings["return_train_score"]:
        scored.append(("train", *_safe_split(fitted, X, y, train), train))
    shares = [size / sum(sizes) for size in sizes]
    results: list[dict[str, Any]] = [
        {
            "fit_error": None,
            "n_test_samples": largest["n_test_samples"],
            "fit_time": largest["fit_time"] * share,
            "score_time": 0.0,
        }
        for share in shares
    ]
    for kind, X_part, y_part, indices in scored:  # noqa: N806
        params = _check_method_params(X, params=settings["score_params"] or {}, indices=indices)
        started = time.time()
        answers = _prefix_answers(fitted, path, sizes, X_part)
        # One pass over the trees serves every size: its time is shared out as the fit's is.
        predicted = time.time() - started
        for index, (size, share) in enumerate(zip(sizes, shares, strict=True)):
            started = time.time()
            model = answers[size] if answers is not None else _with_trees(fitted, path, size)
            results[index][f"{kind}_scores"] = _score(model, X_part, y_part, scorer, params, error_score)
            if kind == "test":
                results[index]["score_time"] = time.time() - started + predicted * share
    return results


@dataclass
class Chunk:
    """Trees [start, stop) of a forest, fitted: the whole fitted estimator for the first chunk, its trees for the others."""

    start: int
    stop: int
    seed: Any  # the forest's random_state, before any draw
    fitted: Any  # the estimator (start 0), a list of trees (the others), or None when the fit failed
    fit_time: float
    fit_error: str | None = None


class TreeChunks(Subtasks):
    """A forest's trees in chunks, each fitted by a call of its own (`_fit_chunk`): joined in order, they are the forest.

    For a task called as `(estimator, X, y, train=..., fit_params=...)`: its estimator, with PARAMETERS
    set, fitted on its fold's rows (all of X where the task has no `train`). PRIORITIES: each
    chunk's Dask priority, the costliest highest, all below the tasks that join them.
    """

    def __init__(
        self, parameters: dict[str, Any], size_key: str, trees: Sequence[tuple[int, int]], priorities: Sequence[int],
        error_score: Any,
    ) -> None:  # fmt: skip
        self.parameters, self.size_key, self.error_score = parameters, size_key, error_score
        self.trees, self.priorities = list(trees), list(priorities)

    def calls(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[Call]:
        estimator, X, y = args  # noqa: N806
        return [
            (
                _fit_chunk,
                (estimator, X, y),
                {
                    "train": kwargs.get("train"),
                    "parameters": self.parameters,
                    "size_key": self.size_key,
                    "trees": trees,
                    "fit_params": kwargs.get("fit_params"),
                    "error_score": self.error_score,
                },
                priority,
            )
            for trees, priority in zip(self.trees, self.priorities, strict=True)
        ]


def _work(estimator: BaseEstimator, candidate: dict[str, Any], size_key: str, rows: int, features: int) -> chunking.Work | None:
    """Give the modelled cost of fitting CANDIDATE's forest on ROWS rows, or None when it is no forest (boosting)."""
    found = _ensemble(clone(estimator).set_params(**candidate), size_key)
    if found is None or found[1] is not FOREST:
        return None
    return chunking.forest_work(found[0], int(candidate[size_key]), rows, features)


def _tree_chunks(
    works: list[chunking.Work | None], candidates: list[dict[str, Any]], size_key: str, error_score: Any
) -> list[TreeChunks] | None:
    """Give each forest of WORKS its TreeChunks, when the active joblib backend runs subtasks and some forest gains.

    None: every forest is one task, as without chunks. Once one is split, all are chunked (a forest of
    one chunk too), so that the cluster runs every chunk in the plan's order, the costliest first.
    """
    backend, _ = get_active_backend()
    threads = getattr(backend, "subtask_threads", None)
    if threads is None or any(work is None for work in works):
        return None
    counts = chunking.plan(works, threads())
    if all(count == 1 for count in counts):
        return None
    ranges = [chunking.ranges(work.trees, count) for work, count in zip(works, counts, strict=True)]
    costs = chunking.chunk_costs(works, counts)  # in the order of ranges' chunks
    # Dask runs higher priorities first; the joining tasks (priority 0) as soon as their chunks are in.
    order = sorted(range(len(costs)), key=lambda index: -costs[index])
    priority = {index: -1 - rank for rank, index in enumerate(order)}
    chunked, index = [], 0
    for candidate, trees in zip(candidates, ranges, strict=True):
        chunked.append(
            TreeChunks(candidate, size_key, trees, [priority[index + offset] for offset in range(len(trees))], error_score)
        )
        index += len(trees)
    return chunked


def _fit_chunk(
    estimator: BaseEstimator,
    X: Any,  # noqa: N803
    y: Any,
    *,
    train: np.ndarray | None,
    parameters: dict[str, Any],
    size_key: str,
    trees: tuple[int, int],
    fit_params: dict[str, Any] | None,
    error_score: Any,
) -> Chunk:
    """Fit trees [start, stop) of ESTIMATOR's forest (PARAMETERS set) on the rows TRAIN of (X, y): a Chunk.

    The forest draws one seed per tree from its random_state before it builds any; skipping the
    first START draws (as its warm_start does) makes its trees those of the whole forest.
    """
    start, stop = trees
    model = estimator.set_params(**clone(parameters, safe=False))
    forest, _ = _ensemble(model, size_key)
    seed = forest.random_state
    seeds = np.random.RandomState(seed)
    seeds.randint(SEED_BOUND, size=start)
    forest.set_params(n_estimators=stop - start, random_state=seeds)
    X_train, y_train = (X, y) if train is None else _safe_split(model, X, y, train)  # noqa: N806
    fit_params = _check_method_params(X, params=fit_params or {}, indices=train)
    started = time.time()
    try:
        with parallel_config(backend="sequential"):  # the chunk is the task: its trees stay in this process
            if y_train is None:
                model.fit(X_train, **fit_params)
            else:
                model.fit(X_train, y_train, **fit_params)
    except Exception:
        if error_score == "raise":
            raise
        return Chunk(start, stop, seed, None, time.time() - started, traceback.format_exc())
    return Chunk(start, stop, seed, model if start == 0 else forest.estimators_, time.time() - started)


def _joined_estimator(chunks: list[Chunk], size_key: str, size: int) -> BaseEstimator:
    """Give the fitted estimator of SIZE trees that CHUNKS (fitted, in order, from tree 0) make."""
    bounds = [(chunk.start, chunk.stop) for chunk in chunks]
    if [start for start, _ in bounds] != [0, *[stop for _, stop in bounds[:-1]]] or bounds[-1][1] != size:
        raise RuntimeError(f"skfleet bug: chunks {bounds} are not trees 0 to {size}")
    model = chunks[0].fitted
    forest, _ = _ensemble(model, size_key)
    forest.estimators_ = [*forest.estimators_, *(tree for chunk in chunks[1:] for tree in chunk.fitted)]
    # The parameters one fit of the whole forest has: its size, and its seed (the first chunk's draws, unadvanced).
    forest.set_params(n_estimators=size, random_state=chunks[0].seed)
    return model


def _fit_error(chunks: list[Chunk]) -> str | None:
    """Give the first chunk's fit error (a traceback), or None when every chunk fitted."""
    return next((chunk.fit_error for chunk in chunks if chunk.fit_error is not None), None)


def _joined(chunks: list[Chunk], size_key: str, size: int, test: np.ndarray) -> dict[str, Any]:
    """Give CHUNKS as `_fit_and_score` would give the forest they make: its fit error, or it and its fitting time."""
    failed = _fit_error(chunks)
    fit_time = sum(chunk.fit_time for chunk in chunks)
    if failed is not None:
        return {"fit_error": failed, "fit_time": fit_time}
    return {
        "fit_error": None,
        "n_test_samples": _num_samples(test),
        "fit_time": fit_time,
        "estimator": _joined_estimator(chunks, size_key, size),
    }


def _join_refit(
    estimator: BaseEstimator,
    X: Any,  # noqa: N803
    y: Any,
    *,
    chunks: TreeChunks | list[Chunk],
    size_key: str,
    fit_params: dict,
) -> BaseEstimator:
    """Give the refit: ESTIMATOR's forest joined from CHUNKS (fitted on the cluster, or here) on all of (X, y)."""
    if isinstance(chunks, TreeChunks):
        chunks = chunks.run([estimator, X, y], {"train": None, "fit_params": fit_params})
    failed = _fit_error(chunks)
    if failed is not None:
        raise RuntimeError(f"the refit failed:\n{failed}")
    return _joined_estimator(chunks, size_key, chunks[-1].stop)


def _unscored(estimator: BaseEstimator, X: Any, y: Any, **params: Any) -> float:  # noqa: N803
    """A scorer that scores nothing: the group's fit is scored afterwards, with its smaller sizes."""
    return 0.0


def _prefix_answers(fitted: BaseEstimator, path: list[str], sizes: list[int], X: Any) -> dict[int, BaseEstimator] | None:  # noqa: N803
    """Give, per size k, FITTED's answers for X with only its model's first k trees (or stages); None where that can't be exact.

    A forest: each tree predicts X once, in order, into a running sum; the sum after k trees
    divided by k is what the forest of k trees computes itself (a running sum from zero, then
    one in-place division), to the last bit. A boosting model: its staged answers, each read
    once. Only where the model's answer is the fitted pipeline's answer (the model ends every
    Pipeline on PATH) and, for a forest, it has one output.
    """
    node, X_forest = fitted, X  # noqa: N806
    for name in path:
        if not isinstance(node, Pipeline) or node.steps[-1][0] != name:
            return None
        with parallel_config(backend="sequential"):  # nested joblib work stays in this task's process
            X_forest = node[:-1].transform(X_forest) if len(node.steps) > 1 else X_forest  # noqa: N806
        node = node.named_steps[name]
    forest = node
    if type(forest) in BOOSTING:
        stages = _Stages(forest, X_forest, sizes)
        answer = _ClassifierStages if is_classifier(forest) else _RegressorStages
        return {size: answer(X, stages, size) for size in sizes}
    if type(forest) not in FORESTS or forest.n_outputs_ != 1:
        return None
    X_forest = forest._validate_X_predict(X_forest)  # noqa: N806
    classifier = is_classifier(forest)
    total = np.zeros((X_forest.shape[0], forest.n_classes_) if classifier else X_forest.shape[0], dtype=np.float64)
    wanted, answers = set(sizes), {}
    for count, tree in enumerate(forest.estimators_[: max(sizes)], start=1):
        total += tree.predict_proba(X_forest, check_input=False) if classifier else tree.predict(X_forest, check_input=False)
        if count in wanted:
            mean = total.copy()
            mean /= count
            answers[count] = _ClassifierAnswers(X, mean, forest.classes_) if classifier else _RegressorAnswers(X, mean)
    return answers


class _Answers(BaseEstimator):
    """A fitted model's answers for one X, computed already: what a scorer asks of an estimator, and no more."""

    def __init__(self, X: Any = None, mean: np.ndarray | None = None) -> None:  # noqa: N803
        self.X, self.mean = X, mean

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        self._check(X)
        return self.mean

    def _check(self, X: Any) -> None:  # noqa: N803
        if X is not self.X:
            raise RuntimeError("skfleet bug: precomputed answers asked about other rows")


class _RegressorAnswers(RegressorMixin, _Answers):
    """A forest regressor's answers: the mean of its trees' predictions; `score` is its R², as the forest's."""


class _ClassifierAnswers(ClassifierMixin, _Answers):
    """A forest classifier's answers: the mean of its trees' probabilities; `score` is its accuracy, as the forest's."""

    def __init__(self, X: Any = None, mean: np.ndarray | None = None, classes: np.ndarray | None = None) -> None:  # noqa: N803
        super().__init__(X, mean)
        self.classes = classes

    @property
    def classes_(self) -> np.ndarray:
        return self.classes

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Give the forest's own prediction: the class of the largest mean probability."""
        return self.classes.take(np.argmax(self.predict_proba(X), axis=1), axis=0)

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        self._check(X)
        return self.mean

    def predict_log_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        return np.log(self.predict_proba(X))


class _Stages:
    """A fitted boosting model's staged answers for one X: each method's stages computed once, when a scorer first asks."""

    def __init__(self, model: BaseEstimator, X: Any, sizes: list[int]) -> None:  # noqa: N803
        self.model, self.X, self.sizes = model, X, set(sizes)
        self.found: dict[str, dict[int, np.ndarray]] = {}

    def answer(self, method: str, size: int) -> np.ndarray:
        """Give METHOD's answer (predict, predict_proba, decision_function) of the model's first SIZE stages."""
        if method not in self.found:
            staged = getattr(self.model, f"staged_{method}")(self.X)
            self.found[method] = {stage: answer for stage, answer in enumerate(staged, start=1) if stage in self.sizes}
        return self.found[method][size]


class _StagedAnswers(BaseEstimator):
    """A boosting model's answers for one X at one stage: what a scorer asks of an estimator, and no more."""

    def __init__(self, X: Any = None, stages: _Stages | None = None, size: int = 0) -> None:  # noqa: N803
        self.X, self.stages, self.size = X, stages, size

    def _answer(self, method: str, X: Any) -> np.ndarray:  # noqa: N803
        if X is not self.X:
            raise RuntimeError("skfleet bug: precomputed answers asked about other rows")
        return self.stages.answer(method, self.size)

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        return self._answer("predict", X)


class _RegressorStages(RegressorMixin, _StagedAnswers):
    """A boosting regressor's answers at one stage; `score` is its R², as the model's."""


class _ClassifierStages(ClassifierMixin, _StagedAnswers):
    """A boosting classifier's answers at one stage; `score` is its accuracy, as the model's."""

    @property
    def classes_(self) -> np.ndarray:
        return self.stages.model.classes_

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        return self._answer("predict_proba", X)

    @available_if(lambda self: hasattr(self.stages.model, "decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:  # noqa: N803
        return self._answer("decision_function", X)


def _ensemble(estimator: BaseEstimator, size_key: str) -> tuple[BaseEstimator, Ensemble] | None:
    """Give the model SIZE_KEY sets and its Ensemble, when it is one of ENSEMBLES reached through Pipelines only."""
    *path, size = size_key.split("__")
    node = estimator
    for name in path:
        if not isinstance(node, Pipeline) or name not in node.named_steps:
            return None
        node = node.named_steps[name]
    ensemble = next((known for known in ENSEMBLES if type(node) in known.types), None)
    return (node, ensemble) if ensemble is not None and ensemble.size == size else None


def _ensemble_of(estimator: BaseEstimator, candidates: list[dict[str, Any]]) -> Ensemble:
    """Give the Ensemble the candidates' size parameter sizes (FOREST where none does)."""
    for key in candidates[0] if candidates else ():
        found = _is_size(key) and _ensemble(clone(estimator).set_params(**candidates[0]), key)
        if found:
            return found[1]
    return FOREST


def _with_trees(fitted: BaseEstimator, path: list[str], size: int) -> BaseEstimator:
    """Give a shallow copy of FITTED whose model (at PATH) keeps only its first SIZE trees (or boosting stages)."""
    if not path:
        model = copy.copy(fitted)
        if type(fitted) in BOOSTING:
            model._predictors = fitted._predictors[:size]
            model.max_iter = size  # n_iter_ counts the predictors
        else:
            model.estimators_ = fitted.estimators_[:size]
            model.n_estimators = size
        return model
    pipeline = copy.copy(fitted)
    name = path[0]
    pipeline.steps = [
        (step_name, _with_trees(step, path[1:], size) if step_name == name else step) for step_name, step in fitted.steps
    ]
    return pipeline


def _is_size(key: str) -> bool:
    """Say whether the grid key KEY sets an ensemble's size (`n_estimators`, `classifier__max_iter`)."""
    return key.split("__")[-1] in SIZES


def _trees(estimator: BaseEstimator, candidate: dict[str, Any]) -> int:
    """Give the trees (or boosting iterations) one fit of CANDIDATE builds: its size, else its model's default (0 without one)."""
    key = next((key for key in candidate if _is_size(key)), None)
    if key is not None:
        return int(candidate[key])
    configured = clone(estimator).set_params(**candidate)
    settings = configured.get_params(deep=True)
    sizes = [value for key, value in settings.items() if _is_size(key) and _ensemble(configured, key) is not None]
    return int(sizes[0]) if sizes else 0
