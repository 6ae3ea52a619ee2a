"""Search settings: the defaults (the original demo's), a YAML/JSON grid file, CLI overrides, checked against the pipeline."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import get_scorer_names
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import Pipeline

from skfleet.errors import InputError, first_line

# The original demo's grid (the random forest's default): 5 x 5 candidates, 3 folds = 75 fits, plus the refit.
DEFAULT_GRID: dict[str, list[Any]] = {
    "n_estimators": [2, 4, 6, 8, 10],
    "max_depth": [2, 4, 6, 8, 10],
}
CLASSIFIER_STEP = "classifier"
SEARCHES = ("grid", "halving")
# Successive halving's default factor: 1/5 of the candidates survives each round, on 5x the rows.
# The seed grid's 25 candidates go 25 -> 5 -> 1; factor 5 was the fastest of 3, 4 and 5 on 200K
# rows and picked the exhaustive search's best (docs/benchmarks.md).
HALVING_FACTOR = 5
# The seeds numpy accepts, and so scikit-learn's random_state constraint: [0, 2**32 - 1].
MAX_SEED = 2**32 - 1
# scikit-learn's own wording of a rejected parameter (sklearn.utils._param_validation), restated
# as ours; a message of another shape is quoted whole.
_REJECTED = re.compile(r"^The '(?P<param>[^']+)' parameter of (?P<owner>\w+) must be (?P<allowed>.+)\. Got .+ instead\.$")


@dataclass(frozen=True)
class SearchConfig:
    """What the grid search runs: the model kind, grid, folds, scoring, seeds and the split."""

    param_grid: dict[str, list[Any]] = field(default_factory=lambda: dict(DEFAULT_GRID))
    cv: int = 3
    scoring: str = "accuracy"
    random_state: int = 10  # the model's seed, as the original demo's forest's
    test_size: float = 0.3
    split_random_state: int = 100  # the original demo's split seed
    # The model kind (skfleet.model.KINDS): None leaves it to the caller (the CLI: the Dask config's).
    model: str | None = None

    def with_overrides(self, **overrides: Any) -> SearchConfig:
        """Give a copy with the non-None overrides applied."""
        return replace(self, **{key: value for key, value in overrides.items() if value is not None})

    def pipeline_grid(self, pipeline: Pipeline, sources: Mapping[str, str] | None = None) -> dict[str, list[Any]]:
        """Give the grid addressed to the pipeline (`classifier__n_estimators`), names and values checked against it.

        Bare names (`max_depth`) mean the classifier's parameters; `step__param` names pass through.
        SOURCES says where each name came from (`--param`, a grid file's path) for the error message.
        """
        sources = sources or {}
        valid = pipeline.get_params(deep=True)
        grid: dict[str, list[Any]] = {}
        origin: dict[str, str] = {}
        for name, values in self.param_grid.items():
            source = sources.get(name, "the grid")
            key = name if "__" in name else f"{CLASSIFIER_STEP}__{name}"
            if key not in valid:
                own = sorted(k.split("__", 1)[1] for k in valid if k.startswith(f"{CLASSIFIER_STEP}__"))
                classifier = type(pipeline.named_steps[CLASSIFIER_STEP]).__name__
                raise InputError(f"{source}: unknown parameter {name!r}; {classifier}'s parameters are {', '.join(own)}")
            grid[key] = list(values)
            origin[key] = f"{source}: {name}"
        check_candidates(pipeline, grid, origin)
        return grid


def check_candidates(pipeline: Pipeline, grid: Mapping[str, list[Any]], origin: Mapping[str, str]) -> None:
    """Refuse a grid holding a candidate scikit-learn would reject at fit time, with the parameter, value and source named.

    Every candidate is set on a clone and validated as scikit-learn validates it when fitting
    (each estimator's parameter constraints, each pipeline's steps): here, before any data is
    read or any cluster started, instead of in the first fit on a worker. About half a
    millisecond per candidate, against the seconds its cross-validated fits take.
    ORIGIN gives each grid key's "source: name" for the message.
    """
    problem = _rejection(pipeline, {})
    if problem:
        raise InputError(f"options: {problem}")
    for candidate in ParameterGrid(dict(grid)):
        problem = _rejection(pipeline, candidate)
        if problem is None:
            continue
        # Constraints are per parameter: the value rejected alone is the one to name.
        for key, value in candidate.items():
            alone = _rejection(pipeline, {key: value})
            if alone:
                raise InputError(f"{origin[key]}={value!r} is not allowed; {alone}")
        names = ", ".join(f"{origin[key]}={value!r}" for key, value in candidate.items())
        raise InputError(f"the candidate {names} is not allowed together; {problem}")


def _rejection(pipeline: Pipeline, params: Mapping[str, Any]) -> str | None:
    """Give why scikit-learn would refuse the pipeline with PARAMS set, in words, or None."""
    try:
        candidate = clone(pipeline).set_params(**params)
        for estimator in _estimators(candidate):
            # The checks scikit-learn runs at the start of fit; estimators of our own declare no constraints.
            if hasattr(estimator, "_parameter_constraints"):
                estimator._validate_params()
            for method in ("_validate_steps", "_validate_transformers"):  # Pipeline's, ColumnTransformer's
                if hasattr(estimator, method):
                    getattr(estimator, method)()
    except (TypeError, ValueError) as error:  # scikit-learn's InvalidParameterError is both
        message = first_line(error)
        match = _REJECTED.match(message)
        return f"{match['owner']}'s {match['param']} must be {match['allowed']}" if match else message
    return None


def _estimators(estimator: BaseEstimator) -> Iterator[BaseEstimator]:
    """Give the estimator and every estimator nested in it (pipeline steps, column transformers)."""
    yield estimator
    for value in estimator.get_params(deep=True).values():
        if isinstance(value, BaseEstimator):
            yield value


def load_search_config(path: Path | None, base: SearchConfig | None = None) -> SearchConfig:
    """Give the search settings from a YAML or JSON file (all keys optional), over `base`."""
    base = base or SearchConfig()
    if path is None:
        return base
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such grid file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: unreadable grid file: {error}") from None
    try:
        document = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {first}") from None
    if document is None:
        return base
    if not isinstance(document, Mapping):
        raise InputError(f"{path}: a grid file is a mapping with keys such as param_grid, cv, scoring")
    known = {"model", "param_grid", "cv", "scoring", "random_state", "test_size", "split_random_state"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise InputError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    overrides = dict(document)
    if "param_grid" in overrides:
        overrides["param_grid"] = parse_grid(overrides["param_grid"], str(path))
    config = base.with_overrides(**overrides)
    check(config, str(path))
    return config


def parse_grid(grid: Any, source: str) -> dict[str, list[Any]]:
    """Give a grid as name → list of values; a scalar becomes a one-value list."""
    if not isinstance(grid, Mapping) or not grid:
        raise InputError(f"{source}: param_grid must be a non-empty mapping of parameter to values")
    parsed: dict[str, list[Any]] = {}
    for name, values in grid.items():
        listed = list(values) if isinstance(values, Sequence) and not isinstance(values, str) else [values]
        if not listed:
            raise InputError(f"{source}: parameter {name!r} has no values")
        parsed[str(name)] = listed
    return parsed


def parse_param_option(text: str) -> tuple[str, list[Any]]:
    """Give (name, values) from a CLI `--param name=v1,v2`; values are parsed as YAML scalars."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise InputError(f"--param {text!r}: expected NAME=V1,V2,... (e.g. max_depth=4,8,None)")
    parsed = [_scalar(value.strip()) for value in values.split(",")]
    return name.strip(), parsed


def _scalar(text: str) -> Any:
    if text in ("None", "null"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def check(config: SearchConfig, source: str | None) -> None:
    """Refuse settings scikit-learn would reject later, with the setting named.

    SOURCE: the grid file the settings came from, or None for command-line options (named `--cv`).
    """

    def named(setting: str) -> str:
        return f"{source}: {setting}" if source else f"--{setting.replace('_', '-')}"

    if not isinstance(config.cv, int) or isinstance(config.cv, bool) or config.cv < 2:
        raise InputError(f"{named('cv')} must be an integer of at least 2, got {config.cv!r}")
    if config.scoring not in get_scorer_names():
        raise InputError(
            f"{named('scoring')} {config.scoring!r} is not a scikit-learn scorer; e.g. accuracy, roc_auc, f1, balanced_accuracy"
        )
    if not isinstance(config.test_size, float | int) or not 0 < config.test_size < 1:
        raise InputError(f"{named('test_size')} must be between 0 and 1, got {config.test_size!r}")
    for name in ("random_state", "split_random_state"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
            raise InputError(f"{named(name)} must be an integer from 0 to {MAX_SEED}, got {value!r}")
