"""skfleet's training job: airline delays, a RandomForest grid search on a Dask cluster."""

from skfleet.dask_config import register_defaults

__version__ = "0.2.0"

# Like a Dask package (dask-kubernetes, dask-cloudprovider): importing skfleet registers its Dask
# settings (trainer/skfleet.yaml), so a notebook's `import skfleet` sends data as the CLI does.
register_defaults()
