"""Advice from a finished search: the best candidate's parameters that sit on an edge of the grid.

A best value at the grid's largest or smallest number says the best may lie beyond: results.json
keeps each edge (`grid_edges`), with values past it that the estimator accepts, and the summary
and the report print them.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

if TYPE_CHECKING:
    from skfleet.search import Search


@dataclass(frozen=True)
class GridEdge:
    """A parameter of the best candidate at the largest or smallest value the grid tried, with accepted values beyond."""

    param: str
    value: int | float
    side: str  # "largest" or "smallest"
    beyond: tuple[int | float, ...]  # the next values past the edge, in the grid's step, that the estimator accepts

    def describe(self) -> str:
        """Give one line: "max_depth=10 is the largest value tried: the best may lie beyond (try 12, 14, 16)"."""
        name = self.param.split("__")[-1]
        values = ", ".join(f"{value:g}" for value in self.beyond)
        return f"{name}={self.value:g} is the {self.side} value tried: the best may lie beyond (try {values})"


def grid_edges(search: Search, steps: int = 3) -> list[GridEdge]:
    """Give the best candidate's numeric parameters on an edge of the grid with values beyond it the estimator accepts.

    Up to STEPS values past the edge, in the grid's last step, are offered.
    A value the grid holds as None (max_depth=None: unbounded) lies past every number, so the
    largest number is then no edge.
    """
    grids = search.param_grid if isinstance(search.param_grid, list) else [search.param_grid]
    edges = []
    for param, best in search.best_params_.items():
        tried = [value for grid in grids for value in grid.get(param, [])]
        values = sorted({value for value in tried if _is_number(value)})
        if not _is_number(best) or len(values) < 2 or best not in (values[0], values[-1]):
            continue
        if best == values[-1]:
            if None in tried:
                continue
            side, step = "largest", values[-1] - values[-2]
        else:
            side, step = "smallest", values[0] - values[1]
        accepted = _accepted(search.estimator, param, [best + step * index for index in range(1, steps + 1)])
        if not accepted and isinstance(best, numbers.Integral) and abs(step) > 1:
            # The grid's step overshoots a bound (min_samples_leaf=5 in steps of 5): step by one.
            accepted = _accepted(
                search.estimator, param, [best + (1 if step > 0 else -1) * index for index in range(1, steps + 1)]
            )
        if accepted:
            edges.append(GridEdge(param, best, side, accepted))
    return edges


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _accepted(estimator: Any, param: str, values: list[Any]) -> tuple[Any, ...]:
    """Give those of VALUES that ESTIMATOR accepts for PARAM."""
    return tuple(value for value in values if _accepts(estimator, param, value))


def _accepts(estimator: Any, param: str, value: Any) -> bool:
    """Say whether ESTIMATOR's step that owns PARAM accepts VALUE (scikit-learn's parameter constraints)."""
    configured = clone(estimator).set_params(**{param: value})
    owner = configured.get_params()[param.rsplit("__", 1)[0]] if "__" in param else configured
    try:
        owner._validate_params()
    except (InvalidParameterError, ValueError, TypeError):
        return False
    return True
