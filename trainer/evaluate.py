"""The refitted best model on the held-out test set: its answers, and the numbers beside the majority baseline.

The majority baseline (always the training set's most frequent class) is scored here, once, in
accuracy and with the search's own scorer; results.json keeps both and the report shows them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, get_scorer, roc_auc_score

if TYPE_CHECKING:
    from skfleet.search import SearchOutcome


@dataclass(frozen=True)
class Evaluation:
    """Test-set numbers, with the majority-class baseline beside them."""

    test_accuracy: float
    test_roc_auc: float
    baseline_accuracy: float
    positive_rate: float
    # The baseline with the search's scorer, on the CV scores' scale; None where that scorer can't score a
    # constant answer (ROC AUC on a single-class test set, say).
    baseline_score: float | None


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


def evaluate(predictions: Predictions, scoring: str) -> Evaluation:
    """Give accuracy and ROC AUC of the refitted best model, and the majority baseline's, on the test set.

    SCORING is the search's scorer: the baseline is scored with it too.
    """
    truth = predictions.truth
    roc_auc = roc_auc_score(truth, predictions.positive_probability) if len(np.unique(truth)) > 1 else float("nan")
    return Evaluation(
        test_accuracy=float(accuracy_score(truth, predictions.predicted)),
        test_roc_auc=float(roc_auc),
        baseline_accuracy=float(np.mean(truth == predictions.majority_class)),
        positive_rate=float(np.mean(truth == 1)),
        baseline_score=majority_baseline_score(scoring, predictions),
    )


def majority_baseline_score(scoring: str, predictions: Predictions) -> float | None:
    """Give the score the majority baseline gets on the test set with SCORING, or None where it has none."""
    truth = predictions.truth
    no_features = np.zeros((len(truth), 1))
    try:
        with warnings.catch_warnings():
            # A constant answer makes precision-like scorers warn about zero divisions: 0 is the answer.
            warnings.simplefilter("ignore")
            majority = DummyClassifier(strategy="constant", constant=predictions.majority_class).fit(no_features, truth)
            score = float(get_scorer(scoring)(majority, no_features, truth))
    except ValueError:
        return None
    return score if np.isfinite(score) else None
