"""The benchmark's output: the side-by-side table, the plot, the measurements as JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from dask.utils import format_bytes

from skfleet import text
from skfleet.bench.paths import Measurement


def table(runs: dict[str, list[Measurement]], cores: int, data_bytes: int) -> str:
    """Give the side-by-side table: medians, speed-up and efficiency against serial."""
    serial = statistics.median(m.wall_s for m in runs["serial"]) if "serial" in runs else None
    header = [
        "path", "wall s", "speed-up", "efficiency", "fit s", "refit s", "tasks", "bytes moved", "peak worker RSS",
        "best CV", "best params",
    ]  # fmt: skip
    rows = [header]
    for path, measurements in runs.items():
        wall = statistics.median(m.wall_s for m in measurements)
        last = measurements[-1]
        rows.append(
            [
                path,
                f"{wall:.1f}"
                + (
                    f" ({min(m.wall_s for m in measurements):.1f}-{max(m.wall_s for m in measurements):.1f})"
                    if len(measurements) > 1
                    else ""
                ),
                f"{serial / wall:.2f}x" if serial else "-",
                f"{serial / (cores * wall):.2f}" if serial and path not in ("serial", "halving") else "-",
                f"{statistics.median(m.fit_s for m in measurements):.1f}",
                f"{statistics.median(m.refit_s for m in measurements):.1f}",
                "-" if last.tasks is None else str(last.tasks),
                "-" if last.bytes_moved is None else format_bytes(last.bytes_moved),
                "-" if last.peak_worker_rss is None else format_bytes(last.peak_worker_rss),
                f"{last.best_score:.4f}",
                ", ".join(f"{key}={value}" for key, value in sorted(last.best_params.items())),
            ]
        )
    return text.table(rows) + f"\n(dataset in memory: {format_bytes(data_bytes)}; {cores} cores)"


def plot(results: dict[int, dict[str, list[Measurement]]], path: Path) -> None:
    """Draw wall time per path (largest row count) and, with several row counts, time against rows."""
    from skfleet.figures import figure_class  # matplotlib, with no writable home needed

    Figure = figure_class()  # noqa: N806 (a class)
    sizes = sorted(results)
    figure = Figure(figsize=(11 if len(sizes) > 1 else 6, 4), layout="constrained")
    axes = figure.subplots(1, 2 if len(sizes) > 1 else 1, squeeze=False)[0]
    largest = results[sizes[-1]]
    names = list(largest)
    walls = [statistics.median(m.wall_s for m in largest[name]) for name in names]
    axes[0].barh(names[::-1], walls[::-1], color="#4c72b0")
    for index, wall in enumerate(walls[::-1]):
        axes[0].text(wall, index, f" {wall:.0f} s", va="center")
    axes[0].set_xlabel("wall seconds (median)")
    axes[0].set_title(f"grid search, {sizes[-1]:,} rows")
    if len(sizes) > 1:
        for name in names:
            axes[1].plot(
                sizes, [statistics.median(m.wall_s for m in results[size][name]) for size in sizes], marker="o", label=name
            )
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("training rows")
        axes[1].set_ylabel("wall seconds")
        axes[1].set_title("time against rows")
        axes[1].legend()
    figure.savefig(path, dpi=110)


def write_json(results: dict[int, dict[str, list[Measurement]]], path: Path) -> None:
    """Write every measurement, by row count and path."""
    document = {str(rows): {name: [asdict(m) for m in ms] for name, ms in runs.items()} for rows, runs in results.items()}
    path.write_text(json.dumps(document, indent=1, default=_plain))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)
