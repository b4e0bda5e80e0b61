"""Dataset benchmarks: ingest throughput and near-duplicate detection."""
