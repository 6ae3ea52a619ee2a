"""Checkpoints of finished fits: a rerun after a lost cluster does not redo them.

Every finished task's result is appended to a JSON Lines file as it arrives on the client:
one (candidate, fold) fit of GridSearchCV, or one forest of ForestGridSearchCV with the
results of every candidate it answers on its fold. Its key is a digest of everything the
task depends on: the training data, the unfitted estimator (scikit-learn's version
included), the candidates' parameters, the fold's row indices and the scorer. A later
search reuses a result only when all of those match, so a changed file, grid value, seed
or library version means the fit runs again.

The file lives beside the run folders (`OUTPUT/.checkpoints/`) and is removed once a run
that used it has been written: the run folder is then the record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import joblib
import numpy as np

FOLDER = ".checkpoints"
# _fit_and_score's arguments that report progress or wire callbacks, and how _fit_group fits its forest (whole, or
# in exact chunks of its trees): they do not change the result.
IGNORED_ARGUMENTS = frozenset({"split_progress", "candidate_progress", "verbose", "caller", "callback_ctx", "chunks"})
# The joblib tasks of a search: GridSearchCV's one fit, ForestGridSearchCV's one forest per group of candidates.
FIT_FUNCTIONS = {"_fit_and_score": "parameters", "_fit_group": "members"}

log = logging.getLogger(__name__)


class FitCheckpoint:
    """The finished fits of one search: what an earlier, interrupted run left, and what this one adds."""

    def __init__(self, output: Path, X: object, y: object, search: Any, *, resume: bool = True) -> None:  # noqa: N803
        """Open the checkpoint of SEARCH on (X, y) in OUTPUT/.checkpoints; RESUME=False starts it afresh."""
        self.reused = 0
        self.reused_seconds = 0.0
        self._lock = threading.Lock()
        self._broken = False
        # The frames are arguments of every fit: hash them once (kept alive, so their ids stay theirs).
        self._digests: dict[int, tuple[object, str]] = {id(data): (data, joblib.hash(data)) for data in (X, y)}
        # One file per data, estimator, folds and scoring: a changed grid still finds the fits it shares.
        name = joblib.hash((self._digest(X), self._digest(y), joblib.hash(search.estimator), search.cv, search.scoring))
        self.path = output / FOLDER / f"{name}.jsonl"
        if not resume:
            self.path.unlink(missing_ok=True)
        self._results = _read(self.path)
        # How many finished fits the file held when the search started.
        self.available = len(self._results)

    def key(self, function: Any, args: tuple, kwargs: Mapping[str, Any]) -> str | None:
        """Give the key of a joblib task that fits for a search, or None for any other task."""
        candidates = FIT_FUNCTIONS.get(getattr(getattr(function, "function", function), "__name__", ""))
        if candidates is None or not set(kwargs) >= {"train", "test", candidates} or len(args) != 3:
            return None
        estimator, X, y = args  # noqa: N806
        settings = {name: value for name, value in kwargs.items() if name not in IGNORED_ARGUMENTS}
        return joblib.hash((self._digest(X), self._digest(y), joblib.hash(estimator), settings))

    def get(self, key: str | None, kwargs: Mapping[str, Any]) -> dict[str, Any] | list[dict[str, Any]] | None:
        """Give the stored result of the task KEY as it returned it, or None when it must run.

        A fit's result is a dict (_fit_and_score's); a shared forest's, a list of one per candidate.
        """
        if key is None:
            return None
        with self._lock:
            stored = self._results.get(key)
            if stored is None:
                return None
            fits = stored if isinstance(stored, list) else [stored]
            self.reused += len(fits)
            self.reused_seconds += sum(fit.get("fit_time", 0.0) + fit.get("score_time", 0.0) for fit in fits)
        if isinstance(stored, list):
            return [dict(fit) for fit in stored]
        result = dict(stored)
        if kwargs.get("return_parameters"):
            result["parameters"] = kwargs["parameters"]
        return result

    def put(self, key: str | None, result: Any) -> None:
        """Append a finished task's result (a task with a failed fit is not kept).

        Runs in the client's event loop: a checkpoint that can't be written is reported once
        and given up, never raised, so the search itself goes on.
        """
        fits = result if isinstance(result, list) else [result]
        if key is None or self._broken or not fits or not all(_succeeded(fit) for fit in fits):
            return
        try:
            kept = [{name: value for name, value in fit.items() if name not in ("parameters", "estimator")} for fit in fits]
            stored = kept if isinstance(result, list) else kept[0]
            line = json.dumps({"key": key, "result": stored}, default=_numpy_scalar) + "\n"
            with self._lock:
                self._results[key] = stored
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # One write per line in append mode: concurrent trainers never interleave within a line.
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(line)
        except (OSError, TypeError, ValueError) as error:
            self._broken = True
            log.warning("not checkpointing finished fits any more (%s: %s); a rerun will redo them", self.path, error)

    def discard(self) -> None:
        """Remove the file: the run it served has been written."""
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # other searches' checkpoints are still there
            self.path.parent.rmdir()

    def _digest(self, data: object) -> str:
        cached = self._digests.get(id(data))
        if cached is None:
            cached = self._digests[id(data)] = (data, joblib.hash(data))
        return cached[1]


def _succeeded(fit: Any) -> bool:
    """Say whether FIT is the result of a fit that did not fail."""
    return isinstance(fit, dict) and fit.get("fit_error") is None


def _read(path: Path) -> dict[str, Any]:
    """Give the results in PATH by key: a dict per fit, a list per shared forest; a line cut short by a crash is skipped."""
    results: dict[str, Any] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return results
    except (OSError, UnicodeDecodeError) as error:
        log.warning("ignoring unreadable checkpoint %s: %s", path, error)
        return results
    for line in lines:
        try:
            entry = json.loads(line)
            stored = entry["result"]
            results[str(entry["key"])] = [dict(fit) for fit in stored] if isinstance(stored, list) else dict(stored)
        except (ValueError, KeyError, TypeError):
            continue
    return results


def _numpy_scalar(value: Any) -> Any:
    """json.dumps' hook for what it can't write itself: numpy scalars become Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
