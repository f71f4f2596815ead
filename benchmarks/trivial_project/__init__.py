"""A one-asset Dagster project, the baseline for the cost of a `dagster asset materialize` run."""
