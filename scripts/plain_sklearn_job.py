"""The trainer's default job as a user writes it with scikit-learn alone: the reference of scripts/bench-job.sh.

The same data, split, features and pipeline as `python -m skfleet` (skfleet's own loaders and
pipeline, so only the search differs), then scikit-learn's GridSearchCV on every local core
with joblib's loky backend, the refit, the test-set numbers and the files: results, CV table
and model.

    python scripts/plain_sklearn_job.py OUTPUT_FOLDER
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skfleet import data, model
from skfleet.config import SearchConfig


def main(output: Path) -> int:
    """Run the job; write OUTPUT/results.json, cv_results.csv and model.joblib; give the exit code."""
    started = time.perf_counter()
    config = SearchConfig()
    loaded = data.load(None, data_format="auto", target="delayed", synthetic_rows=None, synthetic_seed=0)
    train, test = data.split(loaded.frame, test_size=config.test_size, seed=config.split_random_state)
    X_train, y_train = model.feature_matrix(train)  # noqa: N806
    X_test, y_test = model.feature_matrix(test)  # noqa: N806
    pipeline = Pipeline(model.build_pipeline(config.random_state).steps)  # scikit-learn's own Pipeline
    search = GridSearchCV(pipeline, config.pipeline_grid(pipeline), cv=config.cv, scoring=config.scoring, n_jobs=-1)
    with joblib.parallel_config(backend="loky"):
        search.fit(X_train, y_train)
    probabilities = search.predict_proba(X_test)[:, list(search.classes_).index(1)]
    predicted = search.classes_.take(np.argmax(search.predict_proba(X_test), axis=1))
    output.mkdir(parents=True, exist_ok=True)
    results = {
        "best_params": search.best_params_,
        "best_cv_score": float(search.best_score_),
        "test_accuracy": float(accuracy_score(y_test, predicted)),
        "test_roc_auc": float(roc_auc_score(y_test, probabilities)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    pd.DataFrame(search.cv_results_).to_csv(output / "cv_results.csv", index=False)
    joblib.dump(search.best_estimator_, output / "model.joblib")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "plain-job")))
