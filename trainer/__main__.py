"""`python -m skfleet` and the `skfleet` command: train, or `doctor`, or `bench`. The one place errors become exit codes.

Each command imports only what it needs: `doctor` runs in a client that has only dask,
distributed and scikit-learn (`pip install -c docker/constraints.txt .`); training also needs
the trainer's packages (`.[trainer]`: pandas, skops, matplotlib, ...).

Exit codes: 0 success; 2 bad input or usage; 3 cluster problem; 4 version mismatch; 130 interrupted.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from skfleet.errors import InputError, TrainerError

TRAINER_EXTRA = "pip install -c docker/constraints.txt '.[trainer]'"


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
        from skfleet import doctor

        return _exit_code(lambda: doctor.run(arguments[1:]))
    if arguments[:1] == ["bench"]:
        return _exit_code(lambda: _trainer_module("bench").main(arguments[1:]))
    return _exit_code(lambda: _trainer_module("cli").train_command(arguments))


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
