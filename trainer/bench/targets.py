"""What docs/benchmarks.md promises ("Against the targets", tested equal), and whether a run kept it."""

from __future__ import annotations

import statistics
from typing import Any

from dask.utils import format_bytes
from sklearn.model_selection import ParameterGrid

from skfleet.bench.paths import EXHAUSTIVE, SHARED, Measurement
from skfleet.config import SearchConfig

# The stack's default search in at most this fraction of GridSearchCV + loky's wall.
SHARED_TARGET = 0.5
# One fit per candidate on Dask: serial's wall / (cores x its wall), at least this.
EFFICIENCY_TARGET = 0.90
# Bytes moved between processes on Dask: at most this many times the dataset, per worker.
BYTES_MOVED_TARGET = 1.5
# Successive halving: at least this many times less wall time than the exhaustive search,
HALVING_SPEEDUP_TARGET = 3
# and its pick at most this far below the exhaustive best, in the exhaustive search's own CV.
HALVING_SCORE_GAP_TARGET = 0.005


def verdicts(runs: dict[str, list[Measurement]], cores: int, data_bytes: int) -> list[str]:
    """Give the issue's targets, each with its measured value and whether it is met."""
    wall = {path: statistics.median(m.wall_s for m in measurements) for path, measurements in runs.items()}
    lines = []
    compared = [path for path in EXHAUSTIVE if path in runs]
    if len(compared) > 1:
        reference = runs[compared[0]][-1]
        same = all(m.split_scores == reference.split_scores for path in compared for m in runs[path])
        lines.append(f"cv_results_ split scores identical across {', '.join(compared)}: {'yes' if same else 'NO'}")
    if compared and "demo" in runs:
        reference, demo = runs[compared[0]][-1].split_scores, runs["demo"][-1].split_scores
        differing = sum(
            a != b for fold_a, fold_b in zip(reference, demo, strict=True) for a, b in zip(fold_a, fold_b, strict=True)
        )
        lines.append(f"demo: {differing} of {sum(map(len, reference))} split scores differ from {compared[0]}'s")
    for path in [path for path in SHARED if path in wall and "loky" in wall]:
        ratio = wall[path] / wall["loky"]
        met = "met" if ratio <= SHARED_TARGET else "MISSED"
        lines.append(f"{path} wall / loky (GridSearchCV) wall = {ratio:.3f} (target <= {SHARED_TARGET}: {met})")
    for path in [path for path in SHARED if path in runs and runs[path][-1].shared]:
        last = runs[path][-1]
        where = ""
        if last.tasks is not None:
            where = f", in {last.tasks - last.refit_tasks} Dask tasks"
            where += f"; the refit in {last.refit_tasks} more (its exact chunks and their join)" if last.refit_tasks else ""
        lines.append(f"{path}: {last.shared}{where}")
    if {"dask-unshared", "loky"} <= set(wall):
        ratio = wall["dask-unshared"] / wall["loky"]
        lines.append(f"dask-unshared wall / loky wall = {ratio:.3f} (the cluster path alone, one fit per candidate)")
    if {"dask-unshared", "serial"} <= set(wall):
        efficiency = wall["serial"] / (cores * wall["dask-unshared"])
        lines.append(
            f"dask-unshared parallel efficiency = {efficiency:.2f} "
            f"(target >= {EFFICIENCY_TARGET:.2f}: {'met' if efficiency >= EFFICIENCY_TARGET else 'MISSED'})"
        )
        for path in [path for path in ("loky", "dask-unshared") if path in runs]:
            lines.append(f"  {path}: {efficiency_factors(runs, path, cores)}")
    if "dask" in runs and runs["dask"][-1].bytes_moved is not None:
        moved, budget = runs["dask"][-1].bytes_moved, BYTES_MOVED_TARGET * data_bytes * cores
        lines.append(
            f"dask bytes moved = {format_bytes(moved)} vs {BYTES_MOVED_TARGET:g} x dataset x workers = {format_bytes(budget)} "
            f"(target: {'met' if moved <= budget else 'MISSED'}; results add a little)"
        )
    if {"halving", "dask"} <= set(wall):
        speedup = wall["dask"] / wall["halving"]
        halving_best = runs["halving"][-1]
        exhaustive_best = runs["dask"][-1]
        # The halving winner's score on the full data, from the exhaustive search's own table.
        full = exhaustive_score(exhaustive_best, halving_best.best_params)
        gap = exhaustive_best.best_score - full
        lines.append(
            f"halving: {speedup:.2f}x less wall time than exhaustive "
            f"(target >= {HALVING_SPEEDUP_TARGET:g}: {'met' if speedup >= HALVING_SPEEDUP_TARGET else 'MISSED'}); "
            f"its pick {halving_best.best_params} scores {full:.4f} in the exhaustive CV, {gap:.4f} below the best "
            f"(target <= {HALVING_SCORE_GAP_TARGET:g}: {'met' if gap <= HALVING_SCORE_GAP_TARGET else 'MISSED'})"
        )
    return lines


def efficiency_factors(runs: dict[str, list[Measurement]], path: str, cores: int) -> str:
    """Give PATH's efficiency against serial as the product of its three factors, in words."""
    serial_wall, serial_fit = (statistics.median(getattr(m, key) for m in runs["serial"]) for key in ("wall_s", "fit_s"))
    wall, fit = (statistics.median(getattr(m, key) for m in runs[path]) for key in ("wall_s", "fit_s"))
    overhead, slowdown, busy = serial_wall / serial_fit, fit / serial_fit, fit / (cores * wall)
    return (
        f"efficiency {serial_wall / (cores * wall):.2f} = serial wall / fit s {overhead:.2f} "
        f"x 1 / fit slowdown {slowdown:.2f} x workers busy {busy:.2f}"
    )


def exhaustive_score(exhaustive_run: Measurement, params: dict[str, Any]) -> float:
    """Give the exhaustive search's mean CV score of the candidate PARAMS (candidates in ParameterGrid order)."""
    for index, candidate in enumerate(ParameterGrid(SearchConfig().param_grid)):
        if candidate == params:
            return exhaustive_run.mean_test_scores[index]
    raise ValueError(f"{params} is not a candidate of the grid")
