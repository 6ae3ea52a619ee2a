"""Run a Python script (a scikit-learn gallery example) as a user would: locally, or on a cluster with skfleet's backend.

    python run_example.py SCRIPT                       # local: joblib's default backend (loky)
    python run_example.py SCRIPT --scheduler ADDRESS   # every joblib call under parallel_backend("skfleet")

Prints the script's own output, then "--- results ---" and, for every fitted search the script
left in its globals, its best parameters and split test scores to the last digit: what a
local run and a cluster run must agree on. Timing lines the script prints are the caller's to
drop. The number of cluster tasks goes to stderr as "tasks: N".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import runpy
import sys
from typing import Any

import joblib
import numpy as np
from distributed import get_task_stream

import skfleet


def results(namespace: dict[str, Any]) -> list[str]:
    """Give each fitted search's best parameters and split test scores, and each array of scores, by name."""
    lines = []
    for name, value in sorted(namespace.items()):
        if hasattr(value, "cv_results_"):
            lines.append(f"{name}.best_params_ = {getattr(value, 'best_params_', None)}")
            for key, column in sorted(value.cv_results_.items()):
                if re.fullmatch(r"split\d+_test_\w+|mean_test_\w+|rank_test_\w+", key):
                    lines.append(f"{name}.{key} = {np.asarray(column).tolist()}")
        elif "score" in name and isinstance(value, np.ndarray):
            lines.append(f"{name} = {value.tolist()}")
    return lines


def main() -> int:
    cli = argparse.ArgumentParser()
    cli.add_argument("script")
    cli.add_argument("--scheduler")
    args = cli.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")  # the examples' figures, drawn and discarded
    script = os.path.abspath(args.script)
    os.chdir(os.path.dirname(script))  # where an example would write its files
    with contextlib.ExitStack() as stack:
        stream = None
        if args.scheduler:
            client = stack.enter_context(skfleet.connect(args.scheduler, timeout=30))
            stream = stack.enter_context(get_task_stream(client))
            stack.enter_context(joblib.parallel_backend("skfleet"))
        namespace = runpy.run_path(script, run_name="__main__")
    print("--- results ---")
    print("\n".join(results(namespace)))
    if stream is not None:
        print(f"tasks: {len(stream.data)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
