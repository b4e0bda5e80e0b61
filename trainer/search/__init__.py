"""Hyper-parameter search jobs: the Optuna study, its trials and the finalising run."""
