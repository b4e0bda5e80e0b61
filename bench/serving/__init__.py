"""Serving benchmarks: the API under load, its peers, swaps, hostile and slow clients."""
