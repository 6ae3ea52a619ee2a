"""skfleet's training job: airline delays, a random forest (or gradient boosting) grid search on a Dask cluster.

Like a Dask package (dask-kubernetes, dask-cloudprovider), importing skfleet registers its Dask
settings (trainer/skfleet.yaml) and its joblib backend, "skfleet" (skfleet/backend.py), so a
notebook's `import skfleet` sends data as the CLI does. The import stays light: distributed
loads when the backend or `connect` is first used, so reading a run folder (skfleet.results)
loads no cluster code.
"""

from typing import Any

import joblib

from skfleet import versions
from skfleet.dask_config import register_defaults

__version__ = "0.2.0"

BACKEND = "skfleet"


def _skfleet_backend(**backend_params: Any) -> Any:
    """Give joblib the "skfleet" backend (joblib calls this factory when the backend is used)."""
    from skfleet.backend import SkfleetBackend

    return SkfleetBackend(**backend_params)


def __getattr__(name: str) -> Any:
    # `skfleet.connect`, loaded with distributed on first use (PEP 562).
    if name == "connect":
        from skfleet.backend import connect

        return connect
    raise AttributeError(f"module 'skfleet' has no attribute {name!r}")


register_defaults()
joblib.register_parallel_backend(BACKEND, _skfleet_backend)
# No version table from distributed for a Python patch level, or for pandas on a client install without it.
versions.quiet_harmless_table()

__all__ = ["connect"]
