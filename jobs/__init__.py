"""The jobs: the daily cycle, the A/B simulator and the demo, composed from the packages."""
