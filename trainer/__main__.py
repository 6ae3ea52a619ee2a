"""`python -m skfleet [train|doctor|bench]`, the `skfleet` command: the one place errors become exit codes.

Without a command, `python -m skfleet OPTIONS` trains. Each command imports only what it
needs: `doctor` runs in a client that has only dask, distributed and scikit-learn
(`pip install -c docker/constraints.txt .`); training also needs the trainer's packages
(`.[trainer]`: pandas, skops, matplotlib, ...).

Exit codes: 0 success; 2 bad input or usage; 3 cluster (or, for `track`, tracking server) problem;
4 version mismatch; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from skfleet.errors import InputError, TrainerError

TRAINER_EXTRA = "pip install -c docker/constraints.txt '.[trainer]'"
# Each command's options are its own module's parser: `doctor` must parse without the trainer's packages.
COMMANDS = {
    "train": "train the airline-delay grid search (a random forest, or gradient boosting) on the Dask cluster (the default)",
    "doctor": "check this client against a cluster: versions side by side, resources, TLS",
    "bench": "time the search's execution paths side by side, on the same cores",
    "track": "upload a finished run folder to MLflow (once: a second upload completes, never duplicates)",
}


def parser() -> argparse.ArgumentParser:
    """Give the commands' parser: what `python -m skfleet --help` shows."""
    cli = argparse.ArgumentParser(
        prog="python -m skfleet",
        usage="python -m skfleet [COMMAND] [OPTIONS]",
        description="Distributed scikit-learn training on a Dask cluster: skfleet's airline-delay trainer.",
        epilog="Without a command, python -m skfleet OPTIONS trains. A command's options: python -m skfleet COMMAND --help. "
        "Exit codes: 0 success, 2 bad input, 3 cluster problem, 4 version mismatch, 130 interrupted.",
    )
    cli.add_argument("--version", action="store_true", help="print the trainer's version and exit")
    commands = cli.add_subparsers(title="commands", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return cli


def train(argv: Sequence[str] | None = None) -> int:
    """The `skfleet-train` command: `python -m skfleet train`."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


def main(argv: Sequence[str] | None = None) -> int:
    """Give the process exit code; user errors print one line, never a stack trace.

    `python -m skfleet doctor ...` checks a cluster instead of training (skfleet.doctor);
    `python -m skfleet bench ...` runs the side-by-side benchmark (skfleet.bench);
    `python -m skfleet track RUN_FOLDER` uploads a run folder to MLflow (skfleet.tracking);
    `python -m skfleet [train] ...` trains (skfleet.cli).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] in (["-h"], ["--help"]):
        parser().print_help()
        return 0
    command = arguments[0] if arguments[:1] and arguments[0] in COMMANDS else "train"
    if arguments[:1] == [command]:
        arguments = arguments[1:]
    if command != "track":  # track uploads a run folder: no cluster, no distributed
        quiet_distributed()
    if command == "doctor":
        from skfleet import doctor

        return _exit_code(lambda: doctor.run(arguments))
    if command == "bench":
        return _exit_code(lambda: _trainer_module("bench").main(arguments))
    if command == "track":
        return _exit_code(lambda: _trainer_module("tracking").main(arguments))
    return _exit_code(lambda: _trainer_module("cli").train_command(arguments))


def quiet_distributed() -> None:
    """Keep distributed's logs to what the trainer does not say itself, once distributed has set its own levels."""
    # Its import sets its loggers' levels (Dask config distributed.logging): import it first, or they undo these.
    import distributed  # noqa: F401

    # distributed's own INFO lines (cluster start, worker joins) drown the trainer's.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    # A lost scheduler is reported by the trainer itself, in one line with exit code 3;
    # the client's reconnect traceback (logged at ERROR as it gives up) would bury it.
    logging.getLogger("distributed.client").setLevel(logging.CRITICAL)


def _trainer_module(name: str) -> ModuleType:
    """Import skfleet.NAME, which needs the trainer's packages; a client install without them is told how to add them."""
    try:
        return importlib.import_module(f"skfleet.{name}")
    except ModuleNotFoundError as error:
        if error.name is None or error.name.startswith("skfleet"):
            raise
        raise InputError(f"the trainer needs {error.name}, which this client install lacks: {TRAINER_EXTRA}") from None


def _exit_code(command: Callable[[], int]) -> int:
    try:
        return command()
    except TrainerError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; no run folder was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
