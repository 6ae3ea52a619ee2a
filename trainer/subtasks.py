"""Work a joblib task needs done first: each call a task of its own on the cluster, its results the task's argument.

joblib tasks are independent; a forest split into chunks (skfleet/forest_search.py) is not: the
task that scores the forest needs every chunk fitted first. Such a task takes a `Subtasks` as
an argument. skfleet's Dask backend (skfleet/backend.py, `subtask_threads`) submits each of its
calls as a Dask task, with the task's own data (already on the workers) as their arguments, and
gives the task the list of their futures instead: Dask runs the calls side by side and sends their
results straight to the worker of the task that needs them. Any other backend hands the task the
Subtasks itself, and the task runs the calls in its process, one after the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# One call: the function, its positional and keyword arguments, and its Dask priority (higher runs first).
Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], int]


class Subtasks:
    """The calls a joblib task needs the results of, made from the task's own arguments."""

    def calls(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[Call]:
        """Give the calls, for a task called with ARGS and KWARGS (on the cluster: Dask futures of its data)."""
        raise NotImplementedError

    def run(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        """Give the calls' results, each call run here in turn: for a backend that leaves the calls to the task."""
        return [function(*call_args, **call_kwargs) for function, call_args, call_kwargs, _ in self.calls(args, kwargs)]
