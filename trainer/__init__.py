"""skfleet's training job: airline delays, a RandomForest grid search on a Dask cluster."""

__version__ = "0.2.0"
