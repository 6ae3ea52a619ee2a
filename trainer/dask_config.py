"""skfleet's Dask configuration: trainer/skfleet.yaml, registered with Dask when skfleet is imported, and again
when skfleet.cluster imports distributed.

As dask-kubernetes and dask-cloudprovider register theirs, so `import skfleet` in a notebook or
a script gets the trainer's Dask settings (data sent straight to the workers) as the CLI does.
They are defaults: the user's Dask config files and DASK_... environment variables win.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
import yaml

from skfleet.errors import InputError

DEFAULTS_FILE = Path(__file__).with_name("skfleet.yaml")
TRAINER_KEY = "skfleet.trainer"


@dataclass(frozen=True)
class TrainerSettings:
    """The trainer's settings in force: Dask config (files, DASK_SKFLEET__TRAINER__...) over skfleet.yaml."""

    output: Path
    workers: int | None
    workers_timeout: float
    paused_timeout: float
    scheduler_timeout: float
    shared_trees: bool
    model: str  # a model kind's name (skfleet.model.KINDS), checked where it is used


def defaults() -> dict[str, Any]:
    """Give skfleet.yaml's settings, as Dask config."""
    return yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8"))


def register_defaults() -> None:
    """Add skfleet.yaml to Dask's defaults, under the user's settings (Dask config files, DASK_... variables).

    update_defaults keeps a value the user set and replaces the rest, so the defaults registered
    last win, and distributed registers its own (direct-to-workers: null) when it is first imported.
    Before that, skfleet's distributed.* settings go in as values kept over later defaults (a
    user's still win), and skfleet.cluster, which imports distributed, calls this again: from
    then on skfleet's are the last defaults, and dask.config.refresh() re-applies them.
    """
    ours = defaults()
    if "distributed" in sys.modules:
        if dask.config.defaults[-1] != ours:  # once on top is enough
            dask.config.update_defaults(ours)
        return
    dask.config.update_defaults({key: value for key, value in ours.items() if key != "distributed"})
    dask.config.update(dask.config.config, {"distributed": ours["distributed"]}, priority="old")


def variable(key: str) -> str:
    """Give the environment variable of the trainer setting KEY: DASK_SKFLEET__TRAINER__WORKERS_TIMEOUT."""
    return "DASK_" + f"{TRAINER_KEY}.{key}".upper().replace(".", "__").replace("-", "_")


def trainer_settings() -> TrainerSettings:
    """Give the trainer's settings in force, read from Dask's config; a value of the wrong type is a user error."""
    return TrainerSettings(
        output=Path(str(_setting("output"))),
        workers=_number("workers", int, optional=True),
        workers_timeout=_number("workers-timeout", float),
        paused_timeout=_number("paused-timeout", float),
        scheduler_timeout=_number("scheduler-timeout", float),
        shared_trees=_flag("shared-trees"),
        model=str(_setting("model")),
    )


def _setting(key: str) -> Any:
    # get() per key: Dask treats "-" and "_" alike there (DASK_..._WORKERS_TIMEOUT), not in the raw dict.
    return dask.config.get(f"{TRAINER_KEY}.{key}")


def _flag(key: str) -> bool:
    value = _setting(key)
    if not isinstance(value, bool):
        raise InputError(f"Dask config {TRAINER_KEY}.{key} ({variable(key)}): expected true or false, got {value!r}")
    return value


def _number(key: str, kind: type[int] | type[float], *, optional: bool = False) -> Any:
    value = _setting(key)
    if value is None and optional:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError(value)
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError(value)
        if not math.isfinite(number):
            raise ValueError(value)
    except (TypeError, ValueError):
        expected = ("an integer" if kind is int else "a number of seconds") + (" or null" if optional else "")
        raise InputError(f"Dask config {TRAINER_KEY}.{key} ({variable(key)}): expected {expected}, got {value!r}") from None
    return number
