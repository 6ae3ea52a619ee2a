"""The refitted best model on the held-out test set: its answers, and the numbers beside the majority baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, roc_auc_score

if TYPE_CHECKING:
    from skfleet.search import SearchOutcome


@dataclass(frozen=True)
class Evaluation:
    """Test-set numbers, with the majority-class baseline beside them."""

    test_accuracy: float
    test_roc_auc: float
    baseline_accuracy: float
    positive_rate: float


@dataclass(frozen=True)
class Predictions:
    """The refitted best model's answers on the test set: what the numbers and the report's figures are made of."""

    truth: np.ndarray
    predicted: np.ndarray
    positive_probability: np.ndarray
    # The training set's most frequent class: the majority baseline's constant answer.
    majority_class: int


def predict(outcome: SearchOutcome, X_test: pd.DataFrame, y_test: pd.Series, y_train: pd.Series) -> Predictions:  # noqa: N803
    """Give the refitted best model's classes and positive-class probabilities on the test set."""
    model = outcome.search.best_estimator_
    probabilities = model.predict_proba(X_test)
    # The forest's own predict is this argmax: one pass over the trees instead of two.
    predicted = np.asarray(model.classes_).take(np.argmax(probabilities, axis=1))
    return Predictions(
        truth=y_test.to_numpy(),
        predicted=predicted,
        positive_probability=probabilities[:, list(model.classes_).index(1)],
        majority_class=int(y_train.mode().iloc[0]),
    )


def evaluate(predictions: Predictions) -> Evaluation:
    """Give accuracy and ROC AUC of the refitted best model, and the baseline, on the test set."""
    truth = predictions.truth
    roc_auc = roc_auc_score(truth, predictions.positive_probability) if len(np.unique(truth)) > 1 else float("nan")
    return Evaluation(
        test_accuracy=float(accuracy_score(truth, predictions.predicted)),
        test_roc_auc=float(roc_auc),
        baseline_accuracy=float(np.mean(truth == predictions.majority_class)),
        positive_rate=float(np.mean(truth == 1)),
    )
