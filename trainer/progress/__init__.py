"""What a running job reports: progress events, the ETA and its plan."""
