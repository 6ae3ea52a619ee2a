"""Grid files (YAML and JSON) and CLI overrides."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dask.config
import pytest

from skfleet import model
from skfleet.cli import parser
from skfleet.config import DEFAULT_GRID, SearchConfig, load_search_config, parse_param_option
from skfleet.dask_config import trainer_settings
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
        ("scoring: acuracy\n", "scoring 'acuracy' is not a scikit-learn scorer"),
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


def fresh_interpreter(probe: str, **variables: str) -> str:
    """Give what PROBE prints in a new Python, with no DASK_... variable but VARIABLES (Dask reads them at import)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DASK_")}
    return subprocess.run(
        [sys.executable, "-c", probe], env={**environment, **variables}, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize(
    ("variables", "expected"),
    [({}, "unset True"), ({"DASK_DISTRIBUTED__CLIENT__DIRECT_TO_WORKERS": "false"}, "False False")],
    ids=["skfleet.yaml", "the user's variable wins"],
)
def test_import_skfleet_registers_its_dask_config(variables: dict[str, str], expected: str) -> None:
    # As a notebook would: no CLI, no parser, only the import.
    probe = "import dask.config; before = dask.config.get('distributed.client.direct-to-workers', 'unset'); "
    probe += "import skfleet; from distributed import Client; "  # distributed's own defaults must not undo skfleet's
    probe += "print(before, dask.config.get('distributed.client.direct-to-workers'))"
    assert fresh_interpreter(probe, **variables) == expected


def test_the_users_dask_config_file_wins(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "distributed:\n  client:\n    direct-to-workers: false\nskfleet:\n  trainer:\n    workers: 5\n"
    )
    probe = "import dask.config, skfleet; print(dask.config.get('distributed.client.direct-to-workers'), "
    probe += "dask.config.get('skfleet.trainer.workers'), dask.config.get('skfleet.trainer.workers-timeout'))"
    assert fresh_interpreter(probe, DASK_CONFIG=str(tmp_path)) == "False 5 180"


def test_trainer_settings_from_environment_win_over_the_yaml() -> None:
    probe = "import dask.config, skfleet.dask_config as c; print(dask.config.get('skfleet.trainer.workers-timeout'), "
    probe += "c.trainer_settings().workers_timeout)"
    assert fresh_interpreter(probe) == "180 180.0"
    assert fresh_interpreter(probe, DASK_SKFLEET__TRAINER__WORKERS_TIMEOUT="45") == "45 45.0"


def test_shared_trees_default_comes_from_dask_config_and_the_option_wins() -> None:
    probe = "from skfleet.cli import parser; from skfleet.dask_config import trainer_settings as t; "
    probe += "print(t().shared_trees, parser().parse_args([]).shared_trees, parser().parse_args(['--shared-trees']).shared_trees)"
    assert fresh_interpreter(probe).split() == ["True", "None", "True"]
    assert fresh_interpreter(probe, DASK_SKFLEET__TRAINER__SHARED_TREES="false").split() == ["False", "None", "True"]


def test_trainer_defaults_come_from_dask_config() -> None:
    shown = fresh_interpreter(
        "from skfleet.cli import parser; a = parser().parse_args([]); print(a.output, a.workers, a.workers_timeout)",
        DASK_SKFLEET__TRAINER__WORKERS_TIMEOUT="7",
        DASK_SKFLEET__TRAINER__OUTPUT="/results",
        DASK_SKFLEET__TRAINER__WORKERS="3",
    )
    assert shown.split() == ["/results", "3", "7.0"]


def test_help_shows_the_defaults_in_force() -> None:
    settings = {"output": "/results", "workers": 3, "workers-timeout": 180, "paused-timeout": 7.5}
    with dask.config.set({f"skfleet.trainer.{key}": value for key, value in settings.items()}):
        text = " ".join(parser().format_help().split())  # unwrapped
    for option, shown, variable in [
        ("--output", "/results", "OUTPUT"),
        ("--workers", "3", "WORKERS"),
        ("--workers-timeout", "180", "WORKERS_TIMEOUT"),
        ("--paused-timeout", "7.5", "PAUSED_TIMEOUT"),
    ]:
        assert f"(default {shown}; " in text, option
        assert f"DASK_SKFLEET__TRAINER__{variable})" in text, option
    defaults = SearchConfig()
    for shown in (f"default {defaults.cv},", f"default {defaults.scoring},", f"default {defaults.random_state},"):
        assert shown in text
    assert "(default 120" not in text


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "workers-timeout",
            "soon",
            "skfleet.trainer.workers-timeout (DASK_SKFLEET__TRAINER__WORKERS_TIMEOUT): expected a number",
        ),
        ("workers", 2.5, "skfleet.trainer.workers (DASK_SKFLEET__TRAINER__WORKERS): expected an integer or null, got 2.5"),
        ("paused-timeout", True, "expected a number of seconds, got True"),
        ("shared-trees", "maybe", "skfleet.trainer.shared-trees (DASK_SKFLEET__TRAINER__SHARED_TREES): expected true or false"),
    ],
)
def test_a_setting_of_the_wrong_type_is_a_user_error(key: str, value: object, message: str) -> None:
    with dask.config.set({f"skfleet.trainer.{key}": value}), pytest.raises(InputError, match=re.escape(message)):
        trainer_settings()
