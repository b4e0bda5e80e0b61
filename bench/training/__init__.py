"""Fine-tuning benchmarks: modes, search, and whether the ETA follows the clock."""
