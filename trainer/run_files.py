"""The run folder's files beside results.json: cv_results.csv (every candidate) and model.skops (the refitted best).

skops stores the model without pickle's code execution: loading it refuses any type skfleet
never writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import skops.io

from skfleet.errors import InputError
from skfleet.model import TRUSTED_MODEL_TYPES
from skfleet.record import plain
from skfleet.results import CV_RESULTS_FILE, MODEL_FILE


def write_files(folder: Path, search: Any) -> None:
    """Write a fitted search's cv_results.csv and its best model (model.skops) into FOLDER."""
    cv_results = pd.DataFrame(search.cv_results_)
    cv_results["params"] = cv_results["params"].map(lambda params: json.dumps(plain(params), sort_keys=True))
    cv_results.to_csv(folder / CV_RESULTS_FILE, index=False)
    skops.io.dump(search.best_estimator_, folder / MODEL_FILE)


def load_model(path: Path):
    """Give the fitted pipeline from a run's model.skops; refuses types skfleet never writes.

    skops loads without running code from the file, unlike pickle or joblib.
    """
    untrusted = skops.io.get_untrusted_types(file=path)
    unexpected = sorted(set(untrusted) - set(TRUSTED_MODEL_TYPES))
    if unexpected:
        raise InputError(f"{path}: holds types skfleet does not write: {', '.join(unexpected)}")
    return skops.io.load(path, trusted=untrusted)
