"""The Ray executor: a driver process per cluster, workers that render on cluster nodes."""
