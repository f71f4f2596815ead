"""One asset that returns a constant, with the executor pipelines.definitions uses."""

from dagster import Definitions, asset, in_process_executor


@asset
def trivial_asset() -> int:
    return 1


defs = Definitions(assets=[trivial_asset], executor=in_process_executor)
