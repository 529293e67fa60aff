"""`RoutingExperiment`: its API model, its pure parts (the sequential statistics, the selection of
the split and the verdict) and its controller."""
