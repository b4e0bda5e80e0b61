"""One training run: engine, loops, stages, optimiser and schedules, checkpoints, budget, finish."""
