"""skfleet's training job: airline delays, a RandomForest grid search on a Dask cluster."""

from skfleet import backend
from skfleet.backend import connect
from skfleet.dask_config import register_defaults

__version__ = "0.2.0"

# Like a Dask package (dask-kubernetes, dask-cloudprovider): importing skfleet registers its Dask
# settings (trainer/skfleet.yaml), so a notebook's `import skfleet` sends data as the CLI does.
register_defaults()
# joblib.parallel_backend("skfleet") for your own code (skfleet/backend.py), and no version table
# from distributed for a Python patch level, or for pandas on a client install without it.
backend.register()
backend.quiet_harmless_version_table()

__all__ = ["connect"]
