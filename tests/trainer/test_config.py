"""Grid files (YAML and JSON) and CLI overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from skfleet import model
from skfleet.config import DEFAULT_GRID, SearchConfig, load_search_config, parse_param_option
from skfleet.errors import InputError


def test_defaults_are_the_original_demo() -> None:
    config = SearchConfig()
    assert config.param_grid == {"n_estimators": [2, 4, 6, 8, 10], "max_depth": [2, 4, 6, 8, 10]} == DEFAULT_GRID
    assert (config.cv, config.random_state, config.test_size, config.split_random_state) == (3, 10, 0.3, 100)
    assert config.pipeline_grid(model.build_pipeline()) == {
        "classifier__n_estimators": [2, 4, 6, 8, 10],
        "classifier__max_depth": [2, 4, 6, 8, 10],
    }


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_grid_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"grid{suffix}"
    if suffix == ".json":
        path.write_text('{"param_grid": {"max_depth": [3, null], "classifier__min_samples_leaf": 2}, "cv": 4}')
    else:
        path.write_text("param_grid:\n  max_depth: [3, null]\n  classifier__min_samples_leaf: 2\ncv: 4\n")
    config = load_search_config(path)
    assert config.cv == 4
    assert config.pipeline_grid(model.build_pipeline()) == {
        "classifier__max_depth": [3, None],
        "classifier__min_samples_leaf": [2],
    }


def test_param_option_parses_scalars() -> None:
    assert parse_param_option("max_depth=4,8,None") == ("max_depth", [4, 8, None])
    assert parse_param_option("max_features=sqrt,0.5") == ("max_features", ["sqrt", 0.5])
    with pytest.raises(InputError, match="expected NAME=V1,V2"):
        parse_param_option("max_depth")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cv: 1\n", "cv must be an integer of at least 2"),
        ("scoring: acuracy\n", "unknown scoring 'acuracy'"),
        ("test_size: 1.5\n", "test_size must be between 0 and 1"),
        ("- just\n- a list\n", "a grid file is a mapping"),
        ("param_grid: {max_depth: []}\n", "parameter 'max_depth' has no values"),
        ("param_grid: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_grid_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as error:
        load_search_config(path)
    assert str(path) in str(error.value)


def test_trainer_defaults_come_from_dask_config() -> None:
    # Dask reads DASK_* variables at import, so a fresh interpreter sees them as a user's would.
    import os
    import subprocess
    import sys

    env = {**os.environ, "DASK_SKFLEET__TRAINER__WORKERS_TIMEOUT": "7", "DASK_SKFLEET__TRAINER__OUTPUT": "/results"}
    env["DASK_SKFLEET__TRAINER__WORKERS"] = "3"
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from skfleet.cli import parser; a = parser().parse_args([]); print(a.output, a.workers, a.workers_timeout)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown == ["/results", "3", "7.0"]
