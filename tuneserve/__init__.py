"""The ``tuneserve`` console command: the one place that may import both service/ and trainer/."""
