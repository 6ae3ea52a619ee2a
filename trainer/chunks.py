"""Exact tree chunks: how many tasks each forest of a search becomes, so that every worker thread has work.

A forest draws its trees' seeds from its `random_state` one after the other before it builds any
tree (scikit-learn's BaseForest.fit; its warm_start skips the seeds of the trees it has). Trees
[a, b) of a forest of n are therefore the forest of b - a trees whose `random_state` is that
seed's RandomState advanced by a draws: fitted apart and joined in order, the chunks are the
forest, tree for tree (skfleet/forest_search.py fits and joins them).

Which forests to split, and into how many chunks, is `plan`'s: it models the search as the
cluster runs it (every chunk a task, the costliest first, each to the next free thread: Dask's
queue with the search's priorities) and keeps splitting the task that holds the longest chunk,
keeping the split with the shortest modelled makespan. A chunk costs its trees plus what every
task pays whatever its trees (`Work.overhead`: the fold's rows copied out, the encoders fitted),
so a split that only adds overheads is not kept. `python -m skfleet bench --scale` replays the
measured costs through the same model.
"""

from __future__ import annotations

import heapq
import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The cost model, in seconds, measured on this project's 2-core machine (docs/scaling.md): a tree
# costs its rows once (its bootstrap sample) and again at each level for each feature a split
# tries; a task, its fold's rows once (copied out, encoded, converted for the trees). Only
# ratios matter to the plan; `bench --scale` measures the real costs.
SECONDS_PER_TREE_ROW = 7e-8
SECONDS_PER_ROW_LEVEL_FEATURE = 3.4e-8
SECONDS_PER_TASK_ROW = 2.5e-7
SECONDS_PER_TASK = 0.05  # sending a task and its answer
# How far past the shortest a makespan may be for a plan with fewer tasks to win (ties, rounding).
TOLERANCE = 1.01
# A search whose costliest forest is at most this many times a thread's share of the work is not split.
BALANCED = 1.2


@dataclass(frozen=True)
class Work:
    """One forest to fit: its trees, one tree's cost and the cost of a task of it beyond its trees (seconds)."""

    trees: int
    tree_cost: float
    overhead: float

    def chunk_cost(self, chunks: int) -> float:
        """Give the cost of the longest of CHUNKS chunks (their trees as even as whole trees go)."""
        return self.overhead + math.ceil(self.trees / chunks) * self.tree_cost


def plan(works: Sequence[Work], threads: int) -> list[int]:
    """Give how many chunks each of WORKS becomes on THREADS worker threads: all 1 when that is quickest."""
    counts = [1] * len(works)
    whole = chunk_costs(works, counts)
    # Balanced already: no forest is more than BALANCED x a thread's share of the work.
    if threads <= 1 or not works or max(whole) <= BALANCED * sum(whole) / threads:
        return counts
    best, best_counts = makespan(whole, threads), list(counts)
    # Far enough: every thread holds a few chunks, or every chunk is one tree.
    for _ in range(4 * threads + len(works)):
        splittable = [index for index, work in enumerate(works) if counts[index] < work.trees]
        if not splittable:
            break
        longest = max(splittable, key=lambda index: works[index].chunk_cost(counts[index]))
        counts[longest] += 1
        modelled = makespan(chunk_costs(works, counts), threads)
        if modelled * TOLERANCE < best:
            best, best_counts = modelled, list(counts)
    return best_counts


def ranges(trees: int, chunks: int) -> list[tuple[int, int]]:
    """Give CHUNKS consecutive (start, stop) tree ranges covering TREES trees, the first ones a tree longer."""
    size, longer = divmod(trees, chunks)
    bounds = [0]
    for index in range(chunks):
        bounds.append(bounds[-1] + size + (index < longer))
    return list(itertools.pairwise(bounds))


def chunk_costs(works: Sequence[Work], counts: Sequence[int]) -> list[float]:
    """Give the cost of every chunk WORKS make when split COUNTS ways."""
    return [
        work.overhead + (stop - start) * work.tree_cost
        for work, count in zip(works, counts, strict=True)
        for start, stop in ranges(work.trees, count)
    ]


def makespan(costs: Sequence[float], threads: int) -> float:
    """Give when the last of tasks of COSTS ends on THREADS threads, the costliest first, each to the next free thread."""
    free = [0.0] * max(1, threads)
    for cost in sorted(costs, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + cost)
    return max(free)


def efficiency(costs: Sequence[float], threads: int) -> float:
    """Give the share of THREADS threads' time the tasks of COSTS keep busy: work / (threads x makespan)."""
    span = makespan(costs, threads)
    return sum(costs) / (threads * span) if span else 1.0


def forest_work(forest: Any, trees: int, rows: int, features: int) -> Work:
    """Give the modelled Work of fitting TREES trees of FOREST (its parameters set) on ROWS rows of FEATURES columns."""
    settings = forest.get_params(deep=False)
    sampled = rows
    if settings.get("bootstrap") and settings.get("max_samples") is not None:
        limit = settings["max_samples"]
        sampled = min(rows, limit if isinstance(limit, numbers.Integral) else max(1, round(rows * limit)))
    # A tree's levels: its max_depth, or as deep as halving its rows goes (unbalanced trees go deeper).
    levels = 1.5 * math.log2(max(sampled, 2))
    if settings.get("max_depth") is not None:
        levels = min(levels, settings["max_depth"])
    tried = _tried_features(settings.get("max_features"), features)
    tree_cost = sampled * (SECONDS_PER_TREE_ROW + max(levels, 1) * tried * SECONDS_PER_ROW_LEVEL_FEATURE)
    return Work(trees, tree_cost, SECONDS_PER_TASK + rows * SECONDS_PER_TASK_ROW)


def _tried_features(max_features: Any, features: int) -> float:
    """Give how many features a split tries under MAX_FEATURES (scikit-learn's meanings)."""
    if max_features == "sqrt":
        return max(1.0, math.sqrt(features))
    if max_features == "log2":
        return max(1.0, math.log2(max(features, 1)))
    if isinstance(max_features, numbers.Integral):
        return float(min(max_features, features))
    if isinstance(max_features, numbers.Real):
        return max(1.0, max_features * features)
    return float(features)  # None: all of them
