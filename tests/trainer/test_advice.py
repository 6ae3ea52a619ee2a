"""skfleet.advice: where the best candidate sits in the grid, and what to try beyond its edges."""

from __future__ import annotations

from typing import Any

import pytest
from sklearn.model_selection import GridSearchCV

from skfleet import advice, model, search
from skfleet.config import SearchConfig


def searched(grid: dict[str, list[Any]], best: dict[str, Any]) -> GridSearchCV:
    """Give the trainer's search over GRID as if it had picked BEST."""
    found = search.grid_search(model.build_pipeline(), grid, SearchConfig(), verbose=False)
    found.best_params_ = best
    return found


def test_the_seed_grids_best_depth_on_its_largest_value_is_an_edge_to_widen_upwards() -> None:
    grid = {"classifier__n_estimators": [2, 4, 6, 8, 10], "classifier__max_depth": [2, 4, 6, 8, 10]}
    (edge, more_trees) = sorted(
        advice.grid_edges(searched(grid, {"classifier__n_estimators": 10, "classifier__max_depth": 10})), key=str
    )
    assert (edge.param, edge.value, edge.side, edge.beyond) == ("classifier__max_depth", 10, "largest", (12, 14, 16))
    assert edge.describe() == "max_depth=10 is the largest value tried: the best may lie beyond (try 12, 14, 16)"
    assert more_trees.param == "classifier__n_estimators" and more_trees.beyond == (12, 14, 16)


@pytest.mark.parametrize(
    ("grid", "best", "expected"),
    [
        # Inside the grid: no edge.
        ({"classifier__max_depth": [2, 4, 6]}, {"classifier__max_depth": 4}, []),
        # The smallest value, with room below it: in the grid's step, or by one where that step overshoots.
        ({"classifier__min_samples_leaf": [10, 20, 30]}, {"classifier__min_samples_leaf": 10}, [("smallest", (9, 8, 7))]),
        ({"classifier__min_samples_split": [8, 16]}, {"classifier__min_samples_split": 8}, [("smallest", (7, 6, 5))]),
        ({"classifier__min_samples_leaf": [30, 40]}, {"classifier__min_samples_leaf": 30}, [("smallest", (20, 10))]),
        # The smallest value the forest accepts: nothing below to try.
        ({"classifier__min_samples_leaf": [1, 2, 4]}, {"classifier__min_samples_leaf": 1}, []),
        # max_depth=None (unbounded) lies beyond every number: 10 is no edge.
        ({"classifier__max_depth": [5, 10, None]}, {"classifier__max_depth": 10}, []),
        # Floats keep the grid's step; values past 1.0 are refused by the forest.
        ({"classifier__max_features": [0.2, 0.5, 1.0]}, {"classifier__max_features": 1.0}, []),
        ({"classifier__max_features": [0.3, 0.5]}, {"classifier__max_features": 0.3}, [("smallest", (0.1,))]),
        # A single value, a string or a bool: not a range to widen.
        ({"classifier__max_depth": [4]}, {"classifier__max_depth": 4}, []),
        ({"classifier__criterion": ["gini", "entropy"]}, {"classifier__criterion": "gini"}, []),
        ({"classifier__bootstrap": [False, True]}, {"classifier__bootstrap": True}, []),
    ],
)
def test_edges_only_where_the_estimator_accepts_values_beyond(grid, best, expected) -> None:
    edges = advice.grid_edges(searched(grid, best))
    assert [(edge.side, tuple(round(value, 9) for value in edge.beyond)) for edge in edges] == expected
