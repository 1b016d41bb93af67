"""The search layer: the loop, searchers, trainer pools, the report and the driver."""
