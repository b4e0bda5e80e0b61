"""After a run: temperature calibration, the out-of-distribution score, selective answers."""
