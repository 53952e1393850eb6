"""Jobs that compose the packages: the daily loop, the simulator, the demo and the ranker job."""
